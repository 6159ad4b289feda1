"""Start 2-process gloo runs on CPU with torchrun on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node nproc ARGS`` with gloo-friendly settings."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def run_worker(spec: dict, tmp: Path, nproc: int = 2) -> list[dict]:
    """Run ``worker.py`` with ``spec`` on ``nproc`` ranks; the per-rank results, rank 0 first."""
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    spec_file = tmp / f"spec-{out.name}.json"
    spec_file.write_text(json.dumps(spec))
    done = torchrun([str(WORKER), str(spec_file)], nproc)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [torch.load(out / f"result-rank{r}.pt", weights_only=False) for r in range(nproc)]
