#!/usr/bin/env python
"""Learning-rate sweep per method on a validation split (never the test items), with compare_methods' runner.

Every method x learning rate (x GaLore scale for galore / ows) trains in its own fresh ``ows train``
subprocess at the quick settings (30 steps x batch 8, seed 0) and is scored by the held-out answer
loss on validation items generated from a third seed (default 200000; training uses seeds 1.., the
test items of ``compare_methods.py`` 100000..100299). Exact match and forgetting perplexity are
skipped. Writes ``table.md`` and ``results.json`` to ``--output-dir`` (default
``benchmarks/results/<date>-lr-sweep``) and prints the winning learning rate per method.

    python benchmarks/tune_lr.py                                # 6 methods x 3 learning rates
    python benchmarks/tune_lr.py --methods lisa --factors 1     # one run: time it before the sweep
    python benchmarks/tune_lr.py --widen 2                      # and up to 2 rates past a winning grid edge

The grid is centred on each method's rate in ``bench/settings.py`` unless ``--around`` names it, so a
finished sweep can be re-rendered or continued (``--resume``) after those rates moved: ``--resume``
refuses an output folder whose sweep was centred elsewhere and says which ``--around`` continues it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `bench` package next to this script

from bench.options import build_parser, finish_args
from bench.runner import finished_run, run_child, shared_profile, start_invocation
from bench.settings import LEARNING_RATES, QUICK
from bench.sweep import (check_validation_seed, configs, parse_rates, summarize, sweep_table, widen_rate,
                         winners)

VALIDATION_SEED = 200000


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"tune_lr.py: error: {name}={text!r} is not a comma-separated list of numbers: "
                         f"write e.g. {name} 0.333,1,3") from None
    if not values or any(v <= 0 for v in values):
        raise SystemExit(f"tune_lr.py: error: {name}={text!r} needs positive numbers: write e.g. {name} 0.333,1,3")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options: those of compare_methods.py (quick preset) plus the grid; validation items by default."""
    p = build_parser(__doc__.split("\n")[0], quick_flag=False)
    p.set_defaults(heldout_seed=VALIDATION_SEED, heldout_generate=0, forgetting_samples=0, forgetting_seq_len=256)
    p.add_argument("--factors", default="1,3,0.333",
                   help="learning rates tried = each method's current lr x these factors (2 significant digits), "
                   "run in this order")
    p.add_argument("--around", default="", help="METHOD=LR,... : centre a method's grid on LR instead of its "
                   "rate in bench/settings.py (to continue or re-render a sweep after the rates moved)")
    p.add_argument("--widen", type=int, default=0, help="after the grid, up to this many more rates per method, "
                   "each one grid step past the edge its best rate sits on")
    p.add_argument("--galore-scales", default="1", help="GaLore scales (alpha) tried for galore and ows")
    p.add_argument("--output-dir", default=None, help="default benchmarks/results/<date>-lr-sweep")
    p.add_argument("--resume", action="store_true", help="reuse the runs (and profile) already finished in --output-dir")
    args = p.parse_args(argv)
    args.factors = _floats(args.factors, "--factors")
    args.galore_scales = _floats(args.galore_scales, "--galore-scales")
    if args.widen < 0:
        p.error(f"--widen {args.widen} is negative: give 0 (no rates past the grid) or more")
    args = finish_args(p, args, QUICK, folder_suffix="-lr-sweep")
    try:
        check_validation_seed(args.heldout_seed, args.num_heldout)
        args.around = {m: LEARNING_RATES[m] for m in args.methods} | parse_rates(args.around, args.methods)
    except ValueError as err:
        p.error(str(err))
    return args


def check_same_grid(args: argparse.Namespace, out: Path) -> None:
    """With ``--resume``, refuse (one line) an output folder whose sweep was centred on other rates."""
    stored_file = out / "results.json"
    if not (args.resume and stored_file.is_file()):
        return
    stored = json.loads(stored_file.read_text())
    centred = stored["settings"].get("around") or {m: stored["learning_rates_before"][m]
                                                   for m in stored["settings"]["methods"]}  # folders from before --around
    moved = {m: lr for m, lr in centred.items() if m in args.around and args.around[m] != lr}
    if moved:
        now = ", ".join(f"{m} {args.around[m]:g}" for m in moved)
        raise SystemExit(f"tune_lr.py: error: --resume: the sweep in {out} was centred on "
                         f"{', '.join(f'{m} {lr:g}' for m, lr in moved.items())} (this invocation: {now}): add "
                         f"--around {','.join(f'{m}={lr:g}' for m, lr in moved.items())} to continue it, "
                         f"or pick another --output-dir")


def _run_name(method: str, lr: float, scale: float | None, seed: int) -> str:
    return f"{method}-lr{lr:g}" + (f"-a{scale:g}" if scale is not None else "") + f"-s{seed}"


def sweep_plan(args: argparse.Namespace) -> list[tuple[str, float, float | None, int]]:
    """``(method, lr, scale, seed)`` of every run, factor by factor in the order given (so that a sweep cut
    short still has the first factors for every method)."""
    plan = []
    for factor in args.factors:
        for method in args.methods:
            for lr, scale in configs(method, [factor], args.galore_scales, args.around[method]):
                plan += [(method, lr, scale, seed) for seed in args.seeds]
    return list(dict.fromkeys(plan))


def past_edges(args: argparse.Namespace, runs: list[dict[str, Any]]) -> list[tuple[str, float, float | None, int]]:
    """``--widen``: for every method whose best rate so far is the smallest or largest it tried, the next
    rate one grid step further (with the best run's GaLore scale), for every seed."""
    summary = summarize(runs)
    plan = []
    for method, best in winners(summary).items():
        nxt = widen_rate([e["lr"] for e in summary[method]], best["lr"]) if best["edge"] else None
        plan += [(method, nxt, best["galore_scale"], seed) for seed in args.seeds] if nxt else []
    return plan


def _flags(scale: float | None) -> list[str]:
    return ["--galore_scale", str(scale)] if scale is not None else []


def _train(args: argparse.Namespace, out: Path, profile: Path | None, plan: list[tuple[str, float, float | None, int]],
           runs: list[dict[str, Any]], report: Any) -> None:
    """Train (or, with ``--resume``, reuse) every run of ``plan``, appending to ``runs``; finished runs'
    settings are all checked before anything trains."""
    finished = [finished_run(args, out, _run_name(m, lr, a, s), m, s, profile, lr, _flags(a)) for m, lr, a, s in plan]
    for (method, lr, scale, seed), bench in zip(plan, finished):
        if bench is None:
            bench = run_child(args, method, seed, out, profile, measure_before=False, lr=lr,
                              name=_run_name(method, lr, scale, seed), extra=_flags(scale))
        bench.update(lr=lr, galore_scale=scale)
        runs.append(bench)
        print(f"{method} lr {lr:g}" + (f" α {scale:g}" if scale is not None else "") +
              f" seed {seed}: validation loss {bench['heldout_answer_loss']:.3f}, "
              f"{bench['sec_per_step']:.2f} s/step, wall {bench.get('wall_seconds', float('nan')):.0f} s", flush=True)
        report(runs)


def run_sweep(args: argparse.Namespace, out: Path, report: Any) -> list[dict[str, Any]]:
    """Train the grid, then up to ``--widen`` rounds past winning edges; calls ``report(runs)`` after each run."""
    check_same_grid(args, out)
    profile = shared_profile(args, out)
    runs: list[dict[str, Any]] = []
    _train(args, out, profile, sweep_plan(args), runs, report)
    for _ in range(args.widen):
        more = past_edges(args, runs)
        if not more:
            break
        _train(args, out, profile, more, runs, report)
    return runs


def write_outputs(args: argparse.Namespace, out: Path, runs: list[dict[str, Any]], command: str, date: str,
                  wall: float) -> tuple[str, dict[str, dict[str, Any]]]:
    """Write ``table.md`` and ``results.json`` for the runs so far; returns the table and the winners."""
    summary = summarize(runs)
    planned = len(sweep_plan(args))
    count = (f"{len(runs)} of {planned} runs" if len(runs) <= planned else
             f"{len(runs)} runs ({planned} in the grid, {len(runs) - planned} past its edges)")
    settings = (f"model {args.model}; data {args.dataset} (train seed {args.dataset_seed}, "
                f"{args.steps * args.batch_size} items); validation {args.num_heldout} items from seed "
                f"{args.heldout_seed}; {args.steps} steps x batch {args.batch_size}, seq {args.max_seq_length}, "
                f"cosine, warmup {args.warmup_steps}; seeds {','.join(map(str, args.seeds))}; lr factors "
                f"{','.join(f'{f:g}' for f in args.factors)} around {args.around}; GaLore scales "
                f"{','.join(f'{s:g}' for s in args.galore_scales)}; γ={args.gamma}, K={args.interval}, "
                f"GaLore r={args.rank}, T={args.update_proj_gap}; LoRA r={args.lora_r}; {os.cpu_count()} CPU cores; "
                f"{count}; wall time {wall / 60:.1f} min")
    table = sweep_table(summary, [f"Command: `{command}`", f"Date: {date}", f"Settings: {settings}"])
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    chosen = winners(summary)
    result = {"command": command, "date": date, "wall_seconds": round(wall, 1), "settings": vars(args),
              "learning_rates_before": LEARNING_RATES, "summary": summary, "winners": chosen,
              "runs": [{k: v for k, v in r.items() if k != "loss_curve"} for r in runs]}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return table, chosen


def main(argv: list[str] | None = None) -> int:
    """Run the sweep, write ``table.md`` and ``results.json`` (after every run), print the table and the winners."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.output_dir)
    command, date, started = start_invocation("benchmarks/tune_lr.py", argv, out)

    def report(runs: list[dict[str, Any]]) -> tuple[str, dict[str, dict[str, Any]]]:
        return write_outputs(args, out, runs, command, date, time.perf_counter() - started)

    table, chosen = report(run_sweep(args, out, report))
    print(table)
    for method, e in chosen.items():
        scale = f", GaLore scale {e['galore_scale']:g}" if e["galore_scale"] is not None else ""
        edge = " (at the edge of the grid: add --resume --widen 1 to try one rate past it)" if e["edge"] else ""
        print(f"winner {method}: lr {e['lr']:g}{scale}, validation loss {e['val_loss']:.3f}{edge}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
