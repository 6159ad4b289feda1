#!/usr/bin/env python
"""Peak memory and tokens/s per method on a Llama-2-7B-shaped model with random weights (GPU, or tiny on CPU).

Each registered method (full AdamW, LoRA r16, GaLore on every layer, LISA, OWS full-rank, OWS) runs in
its own fresh process (``bench/gpu_child.py``) that builds the model from its config directly on the device (bf16, random
weights, nothing downloaded), sets the method up with ``ows.methods.build_method`` and trains a few
steps on random token ids with gradient checkpointing: the paper's settings (γ=5, r=128, sequence
512). Figures: peak CUDA memory allocated and reserved (on CPU: the process's peak RSS), peak
tracked tensors (parameters + gradients + optimizer state), tokens/s over the measured steps, the
first step's time and the time inside GaLore's SVDs; every figure also as a ratio to full AdamW's and
to LoRA's. Writes ``table.md``, ``results.json`` and ``children.log`` to ``--out``.

    python benchmarks/gpu_memory.py --out benchmarks/results/gpu/        # H200: about 3-5 minutes
    python benchmarks/gpu_memory.py --device cpu --scale tiny            # no GPU: 8 layers, hidden 256
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the `bench` package next to this script

from bench.gpu_child import SCALES  # noqa: E402
from bench.settings import LABELS, PRODUCT_METHODS  # noqa: E402
from bench.summary import ratio  # noqa: E402
from ows.choices import DTYPES, OUTSIDE_OPTIMIZERS, SVD_METHODS  # noqa: E402
from ows.methods import get_method  # noqa: E402

# A base loaded quantized (qlora) cannot be built from a config with random weights: estimator and CPU check only.
METHODS = tuple(m for m in PRODUCT_METHODS if get_method(m).base_quantization is None)
# GaLore on every layer last: its first step runs one SVD per matrix
RUN_ORDER = tuple(sorted(METHODS, key=lambda m: get_method(m).galore and get_method(m).layers == "all"))
# key, header, format, whether a ratio is shown
COLUMNS = [("peak_gib", "peak memory GiB", "{:.2f}", True), ("reserved_gib", "peak reserved GiB", "{:.2f}", True),
           ("tracked_gib", "peak tracked GiB", "{:.2f}", True), ("tokens_per_s", "tokens/s", "{:.0f}", True),
           ("first_step_s", "first step s", "{:.1f}", False), ("svd_s", "SVD s", "{:.1f}", False)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; a bad value stops with a one-line error naming the option, the value and the fix."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--scale", default="7b", choices=sorted(SCALES), help="7b: Llama-2-7B shape; tiny: 8 layers, hidden 256")
    p.add_argument("--config", default=None, help="a config.json to build instead of --scale (random weights)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--warmup", type=int, default=3, help="steps before the measured ones (GaLore's SVDs fall here)")
    p.add_argument("--steps", type=int, default=5, help="measured steps (tokens/s)")
    p.add_argument("--gamma", type=int, default=5, help="active layers for lisa / ows")
    p.add_argument("--interval", type=int, default=50, help="K, steps between layer draws")
    p.add_argument("--rank", type=int, default=128, help="GaLore rank for galore / ows")
    p.add_argument("--update-proj-gap", type=int, default=200, help="T, steps between SVDs")
    p.add_argument("--svd-method", default="exact", choices=SVD_METHODS, help="GaLore projector SVD")
    p.add_argument("--fused-step", action="store_true", help="OWSConfig.fused_step for the methods that serve it")
    p.add_argument("--master-weights", action="store_true", help="OWSConfig.master_weights (fp32 masters)")
    p.add_argument("--outside-optimizer", default="adamw", choices=OUTSIDE_OPTIMIZERS,
                   help="OWSConfig.outside_optimizer (embeddings and head)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--budget", type=float, default=300, help="seconds for all methods; a method gets its share "
                   "of what is left, and one past its share is stopped and reported with its peak so far")
    p.add_argument("--out", default=None, help="default benchmarks/results/<date>-memory-<device>")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = next((m for m in args.methods if m not in METHODS), None)
    if bad:
        p.error(f"--methods has {bad!r}: use a subset of {','.join(METHODS)}")
    if args.device not in ("cuda", "cpu") and not args.device.startswith("cuda:"):
        p.error(f"--device {args.device!r} is unknown: use cuda or cpu")
    for name in ("batch_size", "seq_len", "steps", "gamma", "rank", "lora_r", "interval", "update_proj_gap"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid: use a value >= 1")
    if args.config is not None and not Path(args.config).is_file():
        p.error(f"--config {args.config!r} is not a file: give a config.json path or drop --config")
    args.out = args.out or str(HERE / "results" / f"{_dt.date.today().isoformat()}-memory-{args.device.split(':')[0]}")
    return args


def model_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config dict of the model to build: ``--config``'s JSON or the ``--scale`` preset."""
    values = json.loads(Path(args.config).read_text()) if args.config else dict(SCALES[args.scale])
    layers = values.get("num_hidden_layers")
    if isinstance(layers, int) and args.gamma > layers:
        raise SystemExit(f"gpu_memory.py: error: --gamma {args.gamma} is larger than the model's {layers} layers: "
                         f"use --gamma <= {layers}")
    return values


def run_method(args: argparse.Namespace, method: str, values: dict[str, Any], work: Path, log: Any,
               timeout: float) -> dict[str, Any]:
    """One method in a fresh process; returns its progress record (status ok, timeout or failed)."""
    progress = work / f"{method}.json"
    spec = {"method": method, "device": args.device, "dtype": args.dtype, "model_config": values,
            "gradient_checkpointing": not args.no_gradient_checkpointing, "batch_size": args.batch_size,
            "seq_len": args.seq_len, "warmup": args.warmup, "steps": args.steps, "gamma": args.gamma,
            "interval": args.interval, "rank": args.rank, "update_proj_gap": args.update_proj_gap,
            "svd_method": args.svd_method, "lora_r": args.lora_r, "lr": args.lr, "progress": str(progress),
            "options": {"fused_step": args.fused_step, "master_weights": args.master_weights,
                        "outside_optimizer": args.outside_optimizer}}
    spec_path = work / f"{method}.spec.json"
    spec_path.write_text(json.dumps(spec))
    paths = [str(HERE.parent / "src"), os.environ.get("PYTHONPATH")]  # this checkout's ows, installed or not
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    log.write(f"\n===== {method} =====\n")
    log.flush()
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / "bench" / "gpu_child.py"), str(spec_path)], stdout=log,
                              stderr=subprocess.STDOUT, env=env, timeout=timeout)
        status = None if proc.returncode == 0 else f"failed (exit {proc.returncode}, see children.log)"
    except subprocess.TimeoutExpired:
        status = f"stopped at its {timeout:.0f} s share of --budget"
    record = json.loads(progress.read_text()) if progress.is_file() else {"method": method}
    if status is not None:
        record["status"] = status
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    return record


def figures(record: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Table figures of one record (GiB, tokens/s over the measured steps, seconds)."""
    gib = 2.0 ** 30
    cuda = "cuda_max_allocated_bytes" in record
    peak = record.get("cuda_max_allocated_bytes" if cuda else "peak_rss_bytes")
    times = record.get("step_seconds", [])[args.warmup:]
    return {
        "peak_gib": peak / gib if peak else None,
        "reserved_gib": record["cuda_max_reserved_bytes"] / gib if cuda else None,
        "tracked_gib": record["peak_tracked_bytes"] / gib if record.get("peak_tracked_bytes") else None,
        "tokens_per_s": args.batch_size * args.seq_len * len(times) / sum(times) if times else None,
        "first_step_s": record["step_seconds"][0] if record.get("step_seconds") else None,
        "svd_s": record.get("svd_seconds"),
    }


def add_ratios(rows: dict[str, dict[str, Any]]) -> None:
    """Add ``KEY_x_full`` and ``KEY_x_lora`` to every row for the columns that show ratios."""
    for row in rows.values():
        for key, _, _, show in COLUMNS:
            if show:
                for ref in ("full", "lora"):
                    row[f"{key}_x_{ref}"] = ratio(row.get(key), rows.get(ref, {}).get(key))


def markdown(rows: dict[str, dict[str, Any]], header: list[str], cuda: bool) -> str:
    """Header lines, one row per method with ratios, and the legend."""
    head = ["peak CUDA allocated GiB" if cuda else "peak RSS GiB"] + [h for k, h, _, _ in COLUMNS[1:]]
    lines = list(header) + ["", "| method | " + " | ".join(head) + " | status |", "|---" * (len(head) + 2) + "|"]
    for method, row in rows.items():
        cells = []
        for key, _, fmt, show in COLUMNS:
            value = row.get(key)
            text = "n/a" if value is None else fmt.format(value)
            ratios = [f"{row[f'{key}_x_{r}']:.2f}× {n}" for r, n in (("full", "full"), ("lora", "LoRA"))
                      if show and value is not None and row.get(f"{key}_x_{r}") is not None]
            cells.append(text + (f" ({', '.join(ratios)})" if ratios else ""))
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + f" | {row['status']} |")
    what = ("torch.cuda.max_memory_allocated / max_memory_reserved over the whole process (model build included)"
            if cuda else "the process's peak RSS (includes ~0.5 GiB of Python/torch; no reserved column on CPU)")
    lines += ["", f"Peak memory: {what}. Peak tracked: parameters + gradients + optimizer state, sampled after each "
              "backward pass and each optimizer step. tokens/s: batch × sequence × measured steps / their time. "
              "Ratios: to full AdamW's and to LoRA's figure from this same invocation; lower is better except tokens/s."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every method, print and write the table and JSON. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    values = model_values(args)
    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_memory.py: error: --device cuda but no CUDA device is visible: "
                             "run on a GPU machine or use --device cpu --scale tiny")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/gpu_memory.py", *argv])
    date = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    print(f"# {command}\n# {date}; output in {out}", flush=True)
    started = time.perf_counter()
    records: dict[str, dict[str, Any]] = {}
    order = [m for m in RUN_ORDER if m in args.methods]
    with tempfile.TemporaryDirectory() as tmp, open(out / "children.log", "w") as log:
        for i, method in enumerate(order):
            if method == "lora" and not _has_peft():
                records[method] = {"method": method, "status": "skipped: peft is not installed"}
                continue
            left = args.budget - (time.perf_counter() - started)
            timeout = max(60.0, left / (len(order) - i))
            records[method] = run_method(args, method, values, Path(tmp), log, timeout)
            print(f"{method}: {records[method]['status']}, {records[method]['wall_seconds']:.0f} s", flush=True)
    rows = {m: figures(records[m], args) | {"status": records[m]["status"]} for m in METHODS if m in records}
    add_ratios(rows)
    wall = time.perf_counter() - started
    device = _device_name(args.device)
    layers = values.get("num_hidden_layers")
    settings = (f"{args.config or ('Llama-2-7B shape' if args.scale == '7b' else 'tiny Llama')} ({layers} layers, "
                f"hidden {values.get('hidden_size')}, vocab {values.get('vocab_size')}), random weights, {args.dtype}; "
                f"batch {args.batch_size} × seq {args.seq_len}; gradient checkpointing "
                f"{'off' if args.no_gradient_checkpointing else 'on'}; {args.warmup} warm-up + {args.steps} measured steps; "
                f"γ={args.gamma}, K={args.interval}, GaLore r={args.rank}, T={args.update_proj_gap}, "
                f"{args.svd_method} SVD; fused step {'on' if args.fused_step else 'off'}, fp32 masters "
                f"{'on' if args.master_weights else 'off'}, outside the layers {args.outside_optimizer} (where a method "
                f"serves them); LoRA r={args.lora_r}; "
                f"{device}; wall time {wall / 60:.1f} min")
    table = markdown(rows, [f"Command: `{command}`", f"Date: {date}", f"Settings: {settings}"], cuda)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    result = {"command": command, "date": date, "wall_seconds": round(wall, 1), "device": device,
              "settings": vars(args), "model_config": values, "rows": rows, "records": records}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    print(table)
    return 0


def _has_peft() -> bool:
    import importlib.util

    return importlib.util.find_spec("peft") is not None


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} cores)"


if __name__ == "__main__":
    sys.exit(main())
