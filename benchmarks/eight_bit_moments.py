"""8-bit Adam moments on this machine, side by side: bitsandbytes' blockwise kernel (what ows uses for
``outside_optimizer: adamw8bit``) against torchao's ``AdamW8bit``, on SmolLM2's embedding shape.

    pip install torchao        # not an ows dependency: only this comparison needs it
    python benchmarks/eight_bit_moments.py [--steps 8]

Both run in one process, interleaved step by step on the same gradients, so machine noise hits both;
the first torchao step (torch.compile) is reported apart. Prints seconds per step, state bytes per
element and the largest weight difference between the two after the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ows.optim.lowbit import adam_step_8bit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=49152)
    parser.add_argument("--cols", type=int, default=576)
    args = parser.parse_args(argv)
    try:
        from torchao.optim import AdamW8bit
    except ImportError:
        print("torchao is not installed: pip install torchao", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    shape = (args.rows, args.cols)
    ours = torch.randn(shape)
    theirs = torch.nn.Parameter(ours.clone())
    optimizer = AdamW8bit([theirs], lr=1e-3, weight_decay=0.0)
    group = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    state: dict = {}
    times: dict[str, list[float]] = {"bitsandbytes": [], "torchao": []}
    for _ in range(args.steps):
        grad = torch.randn(shape)
        theirs.grad = grad.clone()
        start = time.perf_counter()
        optimizer.step()
        times["torchao"].append(time.perf_counter() - start)
        start = time.perf_counter()
        adam_step_8bit(ours, grad, state, group)
        times["bitsandbytes"].append(time.perf_counter() - start)
    ours_bytes = sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    print(f"shape {shape}, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"bitsandbytes: median {statistics.median(times['bitsandbytes'][1:]):.3f} s/step, "
          f"{ours_bytes / ours.numel():.3f} state bytes per element")
    print(f"torchao:      median {statistics.median(times['torchao'][1:]):.3f} s/step "
          f"(first step, with its compile: {times['torchao'][0]:.1f} s)")
    print(f"largest weight difference after {args.steps} steps: {float((ours - theirs.detach()).abs().max()):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
