"""Per-rank memory of OWS on 2 CPU processes (gloo): DDP full fine-tuning vs DDP + OWS vs FSDP2 + OWS.

    .venv/bin/python benchmarks/distributed_memory.py            # ~1 min on 2 CPU cores
    .venv/bin/python benchmarks/distributed_memory.py --steps 6 --layers 8 --hidden 512

Each setup runs in its own ``torchrun --nproc_per_node 2`` launch on a random Llama (fp32) with a
plain PyTorch loop. Per rank it measures, from the tensors themselves after the last backward (the
peak of training state): the local bytes of parameters, gradients and optimizer state (DTensors count
their local shard), and the process peak RSS. Rank 0's numbers are printed (both ranks are alike).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SETUPS = ("ddp-full", "ddp-ows", "fsdp2-ows")


def _local_bytes(tensors) -> int:
    from ows.optim.sharded import is_dtensor

    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            t = t._local_tensor if is_dtensor(t) else t
            total += t.numel() * t.element_size()
    return total


def worker(setup: str, options: argparse.Namespace, out: Path) -> None:
    """One rank of one setup: train ``options.steps`` steps and write this rank's measurements."""
    import transformers

    import ows
    from ows import distributed
    from ows.memory.measure import peak_rss_bytes

    torch.distributed.init_process_group("gloo")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=options.vocab, hidden_size=options.hidden,
                                      intermediate_size=options.hidden * 8 // 3, num_hidden_layers=options.layers,
                                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512)
    model = transformers.AutoModelForCausalLM.from_config(config).float()
    layers = ows.find_decoder_layers(model)
    ows_config = ows.OWSConfig(num_active_layers=options.gamma, sample_interval=2, sampling_strategy="uniform",
                               rank=options.rank, update_proj_gap=50)
    controller = None
    if setup == "ddp-full":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    elif setup == "ddp-ows":
        optimizer, controller = ows.create_ows(model, ows_config, lr=1e-4)
        distributed.setup_ddp(model, layers)
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    else:
        distributed.shard_model(model, layers)
        optimizer, controller = ows.create_ows(model, ows_config, lr=1e-4)
        wrapped = model
    g = torch.Generator().manual_seed(distributed.rank())
    peak = {"params": 0, "grads": 0, "optimizer": 0}
    for step in range(options.steps):
        if controller is not None:
            controller.begin_step(step)
        ids = torch.randint(0, options.vocab, (options.batch, options.seq), generator=g)
        wrapped(input_ids=ids, labels=ids).loss.backward()
        grads = _local_bytes(p.grad for p in model.parameters())
        optimizer.step()
        state = _local_bytes(v for s in optimizer.state.values() for v in s.values())
        optimizer.zero_grad(set_to_none=True)
        params = _local_bytes(model.parameters())
        peak = {"params": max(peak["params"], params), "grads": max(peak["grads"], grads),
                "optimizer": max(peak["optimizer"], state)}
    result = {**peak, "rss": peak_rss_bytes()}
    (out / f"{setup}-rank{distributed.rank()}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(setup: str, argv: list[str], out: Path) -> dict:
    """Run ``setup`` on 2 processes; rank 0's measurements."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", __file__, "--worker", setup, "--out", str(out), *argv]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{setup} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / f"{setup}-rank0.json").read_text())


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--gamma", type=int, default=2, help="active layers")
    parser.add_argument("--rank", type=int, default=64, help="GaLore rank")
    parser.add_argument("--batch", type=int, default=2, help="per rank")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--worker", choices=SETUPS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    options = parse(argv)
    if options.worker:
        worker(options.worker, options, Path(options.out))
        return
    mib = 2**20
    print(f"command: .venv/bin/python benchmarks/distributed_memory.py {' '.join(argv)}".rstrip())
    print(f"Llama {options.layers} layers x hidden {options.hidden}, vocab {options.vocab}, fp32; 2 processes (gloo, CPU); "
          f"gamma={options.gamma}, GaLore rank {options.rank}; batch {options.batch} x {options.seq} tokens per rank")
    print("| setup | parameters (MiB) | gradients (MiB) | optimizer state (MiB) | sum (MiB) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for setup in SETUPS:
            r = launch(setup, argv, Path(tmp))
            total = r["params"] + r["grads"] + r["optimizer"]
            print(f"| {setup} | {r['params'] / mib:.1f} | {r['grads'] / mib:.1f} | {r['optimizer'] / mib:.1f} | "
                  f"{total / mib:.1f} | {r['rss'] / mib:.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
