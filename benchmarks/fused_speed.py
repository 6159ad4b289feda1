#!/usr/bin/env python
"""Seconds per step of the fused step against the unfused one, interleaved in one process on a real model.

Two copies of the model (same weights, same OWS config, same batches) train side by side: one with
``fused_step`` off, one with it on, step by step in turns (A B A B ...), so that whatever else the machine
does slows both alike. Reports the median seconds per step of each and their ratio, and (clipping
off) the largest weight difference between the two copies: the fused step must give the same
weights. Writes ``results.json`` to ``--output-dir``.

    python benchmarks/fused_speed.py                       # SmolLM2-135M, 24 steps each, batch 8 x 128
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_speed next to this script
from step_speed import output_folder, random_batch, timed_step  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=24, help="measured steps of each copy (after 2 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--gamma", type=int, default=2)
    p.add_argument("--interval", type=int, default=10)
    p.add_argument("--rank", type=int, default=128)
    p.add_argument("--output-dir", default=None, help="default benchmarks/results/<date>-fused-speed")
    return p.parse_args(argv)


def _copy(args: argparse.Namespace, fused: bool):
    import ows
    from ows.loading import load_model, resolve_model_path

    model = load_model(resolve_model_path(args.model), "float32")
    config = ows.OWSConfig(num_active_layers=args.gamma, sample_interval=args.interval, rank=args.rank,
                           update_proj_gap=100, sampling_strategy="uniform", seed=0, fused_step=fused)
    optimizer, controller = ows.create_ows(model, config, lr=3e-4)
    return model, optimizer, controller


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    out = output_folder(args.output_dir, "fused-speed")
    torch.manual_seed(0)
    copies = {"unfused": _copy(args, False), "fused": _copy(args, True)}
    vocab = copies["unfused"][0].config.vocab_size
    rng = random.Random(0)
    times: dict[str, list[float]] = {name: [] for name in copies}
    for step in range(args.steps + 2):
        batch = random_batch(rng, vocab, args.batch_size, args.seq_len)
        order = list(copies) if step % 2 == 0 else list(reversed(copies))  # neither always goes first
        for name in order:
            seconds = timed_step(*copies[name], step, batch)
            if step >= 2:
                times[name].append(seconds)
        print(f"step {step}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in copies if times[n]), flush=True)
    diff = max((a - b).abs().max().item() for a, b in zip(copies["unfused"][0].parameters(),
                                                          copies["fused"][0].parameters()))
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {"command": "python benchmarks/fused_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": vars(args), "median_seconds": median, "ratio_fused_to_unfused": median["fused"] /
              median["unfused"], "max_weight_difference": diff, "seconds": times}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"median s/step: unfused {median['unfused']:.3f}, fused {median['fused']:.3f}, ratio "
          f"{result['ratio_fused_to_unfused']:.3f}; largest weight difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
