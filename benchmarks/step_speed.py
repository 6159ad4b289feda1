#!/usr/bin/env python
"""Seconds per step of ows's defaults against its earlier defaults and LoRA, interleaved in one process.

Each row is a copy of the model built by the product (``ows.methods.build_method``, the chunked loss on, as
``ows train`` runs it) and they train side by side on the same batches, step by step in turns (the order
rotates every step), so that whatever else the machine does slows all of them alike. Every row draws anew
every ``--interval`` steps (new GaLore projectors included), so the steps measured cover several draws.
Reports the median seconds per step of each row and its ratio to the first row; writes ``results.json``.

    python benchmarks/step_speed.py                   # SmolLM2-135M, batch 16 x 128, 30 steps each, ~8 min
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# name -> (method, OWSConfig fields beyond the run's, label)
ROWS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ows": ("ows", {}, "ows defaults (single weights drawn uniformly, GaLore outside the layers)"),
    "ows-before": ("ows", dict(sampling_granularity="layer", sampling_strategy="uniform", outside_optimizer="adamw",
                               svd_method="exact"),
                   "ows defaults until 2026-12-06 (whole layers, AdamW outside the layers; drawn uniformly here)"),
    "lora": ("lora", {}, "LoRA r16 (peft)"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    p.add_argument("--steps", type=int, default=30, help="measured steps of each row (after 2 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--gamma", type=int, default=5)
    p.add_argument("--interval", type=int, default=10, help="K: steps between draws")
    p.add_argument("--output-dir", default=None, help="default benchmarks/results/<date>-step-speed")
    args = p.parse_args(argv)
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    if unknown:
        p.error(f"--rows {unknown[0]!r} is unknown: use some of {','.join(ROWS)}")
    return args


def _row(args: argparse.Namespace, name: str) -> tuple[Any, Any, Any]:
    import torch

    import ows
    from ows.integrations.chunked_loss import enable_chunked_loss
    from ows.loading import load_model, resolve_model_path
    from ows.methods import build_method

    method, fields, _ = ROWS[name]
    model = load_model(resolve_model_path(args.model), "float32")
    enable_chunked_loss(model, 1024)
    config = ows.OWSConfig(num_active_layers=args.gamma, sample_interval=args.interval, seed=0, **fields)
    setup = build_method(method, model, config, lr=3e-4, lora={"r": 16, "alpha": 32})
    optimizer = setup.optimizer or torch.optim.AdamW([p for p in setup.model.parameters() if p.requires_grad], lr=3e-4)
    setup.model.train()
    return setup.model, optimizer, setup.controller


def timed_step(model: Any, optimizer: Any, controller: Any, step: int, batch: dict[str, Any]) -> float:
    """Seconds of one training step (the controller's draw, forward, backward, the optimizer's step)."""
    started = time.perf_counter()
    if controller is not None:
        controller.begin_step(step)
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def output_folder(given: str | None, name: str) -> Path:
    """``given``, or ``benchmarks/results/<date>-<name>``; made."""
    import datetime

    out = Path(given or Path(__file__).resolve().parent / "results" / f"{datetime.date.today().isoformat()}-{name}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def random_batch(rng: random.Random, vocab: int, batch_size: int, seq_len: int) -> dict[str, Any]:
    """A batch of random tokens (labels = inputs)."""
    import torch

    ids = torch.tensor([[rng.randrange(vocab) for _ in range(seq_len)] for _ in range(batch_size)])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    out = output_folder(args.output_dir, "step-speed")
    torch.manual_seed(0)
    names = args.rows.split(",")
    rows = {name: _row(args, name) for name in names}
    vocab = rows[names[0]][0].config.vocab_size
    rng = random.Random(0)
    times: dict[str, list[float]] = {name: [] for name in names}
    for step in range(args.steps + 2):
        batch = random_batch(rng, vocab, args.batch_size, args.seq_len)
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:  # every row goes first as often as the others
            seconds = timed_step(*rows[name], step, batch)
            if step >= 2:
                times[name].append(seconds)
        print(f"step {step}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names if times[n]), flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    command = "python benchmarks/step_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"command": command, "settings": vars(args), "labels": {n: ROWS[n][2] for n in names},
              "median_seconds": median, "ratio_to_first": {n: median[n] / median[names[0]] for n in names},
              "seconds": times}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    for name in names:
        print(f"{name}: median {median[name]:.3f} s/step, {median[name] / median[names[0]]:.3f}x {names[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
