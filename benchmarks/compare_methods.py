#!/usr/bin/env python
"""Side-by-side benchmark of ows's fine-tuning methods on a real model, in one invocation.

Every method x seed runs ``ows train`` (the product itself, through ``ows.cli.main``) in its own fresh
subprocess with the same data, data order (per seed), steps, batch, sequence length and LR schedule;
only the method and its learning rate differ. A thin wrapper in the child adds measurements without
changing training:

- forgetting perplexity on a fixed slice of gensim's English news text (token-weighted);
- peak process memory (RSS high-water mark of the child, ``ows.memory.peak_rss_bytes``);
- peak tracked tensor memory: parameters + gradients + optimizer state, sampled just before every
  optimizer step (when the gradients exist) and after it;
- seconds per optimizer step (median of per-step wall times) and the share of training time spent in
  GaLore's SVDs (time inside ``GaLoreAdamW``'s projector computation);
- the training-loss curve.

The child skips writing the fine-tuned weights (nothing big is kept) and the base model's held-out
metrics are computed once, in the first child. Outputs go to ``--output-dir`` (default
``benchmarks/results/<date>``): ``table.md``, ``results.json``, ``loss_curves.png``, ``memory.png`` and
one small folder per run.

    python benchmarks/compare_methods.py --quick          # 1 seed, 30 steps: <= 15 min on 2 CPU cores
    python benchmarks/compare_methods.py                  # 3 seeds, 200 steps (hours on CPU)

A run that fails (a peer that needs CUDA, say) is recorded with its error in the table and
``results.json``; the others go on, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `bench` package next to this script

from bench.child import child_main
from bench.options import build_parser, finish_args
from bench.plots import make_plots
from bench.runner import RunFailed, finished_run, run_child, shared_profile, start_invocation
from bench.settings import FULL, LABELS, LEARNING_RATES, METHODS, METRICS, QUICK
from bench.summary import PAIRED_METRICS, aggregate, markdown_table, paired_lines

__all__ = ["LABELS", "LEARNING_RATES", "METHODS", "METRICS", "aggregate", "main", "markdown_table", "parse_args"]


def _number(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def run_line(bench: dict[str, Any]) -> str:
    """One finished run in a line: loss, exact match, forgetting, RSS, s/step, wall time ("n/a" where not measured)."""
    return (f"loss {_number(bench.get('heldout_answer_loss'), '.3f')}, EM {_number(bench.get('heldout_exact_match'), '.1%')}, "
            f"ppl {_number(bench.get('forgetting_ppl'), '.2f')}, RSS {_number(bench.get('peak_rss_gib'), '.2f')} GiB, "
            f"{_number(bench.get('sec_per_step'), '.2f')} s/step, wall {_number(bench.get('wall_seconds'), '.0f')} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options of the comparison (``--help`` lists them); presets fill what is not given."""
    p = build_parser(__doc__.split("\n")[0])
    p.add_argument("--output-dir", default=None, help="default benchmarks/results/<date>")
    p.add_argument("--resume", action="store_true", help="reuse the runs (and profile) already finished in --output-dir")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: the table of the runs already finished in --output-dir (missing ones are listed)")
    p.add_argument("--reference", default=None,
                   help="comma-separated rows to pair every other row against (default: lisa, else ows, else "
                        "the first row with more than one seed)")
    p.add_argument("--keep-weights", action="store_true",
                   help="keep each run's fine-tuned model folder (runs/NAME/), e.g. for benchmarks/forgetting_dial.py")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args = finish_args(p, args, QUICK if args.quick else FULL)
    stray = [r for r in (args.reference or "").split(",") if r.strip() and r.strip() not in args.methods]
    if stray:
        p.error(f"--reference {stray[0]!r} is not one of --methods: pick from {','.join(args.methods)}")
    return args


def collect_runs(args: argparse.Namespace, out: Path, profile: Path | None,
                 report: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """Every method x seed: reused when finished (``--resume``), else run; ``--report-only`` lists it as missing.

    ``report`` gets the runs so far after each one (the runs still to come listed as missing), so that a
    long plan has its table on disk all along."""
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    missing: list[str] = []
    base: dict[str, Any] = {}
    plan = [(method, seed, f"{method}-s{seed}") for seed in args.seeds for method in args.methods]
    # every finished run's settings are checked before anything trains
    finished = {name: finished_run(args, out, name, method, seed, profile) for method, seed, name in plan}
    for index, (method, seed, name) in enumerate(plan):
        done = finished[name]
        if report is not None and index and done is None and not args.report_only:
            later = [later_name for _, _, later_name in plan[index:]]
            report({"runs": runs, "failures": failures, "missing": missing + later, "base": base})
        if done is not None:
            bench = done | {"method": method}
        elif args.report_only:
            missing.append(name)
            continue
        else:
            try:
                bench = run_child(args, method, seed, out, profile, measure_before=not runs, name=name)
            except RunFailed as err:  # recorded in the table; the other runs go on
                failures.append({"method": method, "seed": seed, "error": err.reason})
                print(f"{method} seed {seed}: FAILED: {err}", flush=True)
                continue
        if bench.get("before"):
            base = bench["before"]
        runs.append(bench)
        print(f"{method} seed {seed}: " + run_line(bench), flush=True)
    return {"runs": runs, "failures": failures, "missing": missing, "base": base}


def settings_line(args: argparse.Namespace, runs: list[dict[str, Any]], wall: float) -> str:
    """The settings shared by every row, the machine, and the time: the runs' sum and this invocation's."""
    run_minutes = sum(r.get("wall_seconds") or 0.0 for r in runs) / 60
    timed = sum(1 for r in runs if r.get("wall_seconds"))
    return (f"model {args.model}; data {args.dataset} (train seed {args.dataset_seed}, "
            f"{args.steps * args.batch_size} items); held-out {args.num_heldout} items from seed "
            f"{args.heldout_seed} (exact match on {args.heldout_generate}); {args.steps} steps x batch "
            f"{args.batch_size}, seq {args.max_seq_length}, cosine, warmup {args.warmup_steps}; seeds "
            f"{','.join(map(str, args.seeds))}; γ={args.gamma}, K={args.interval}, GaLore r={args.rank}, "
            f"T={args.update_proj_gap}; LoRA r={args.lora_r}; forgetting ppl on {args.forgetting_samples}x"
            f"{args.forgetting_seq_len} tokens of gensim news text; {os.cpu_count()} CPU cores; "
            f"runs' wall time {run_minutes:.0f} min in total ({timed} of {len(runs)} runs timed, one at a time, "
            f"each on all cores); this invocation {wall / 60:.1f} min")


def references(args: argparse.Namespace, runs: list[dict[str, Any]]) -> list[str]:
    """The rows the paired differences are taken against: ``--reference``, else lisa / ows / the first with seeds."""
    if args.reference:
        return [r.strip() for r in args.reference.split(",") if r.strip()]
    seeds_of = {m: {r["seed"] for r in runs if r["method"] == m} for m in args.methods}
    return [next((m for m in ("lisa", "ows", *args.methods) if len(seeds_of.get(m, ())) > 1), args.methods[0])]


def main(argv: list[str] | None = None) -> int:
    """Run every method x seed, print and write the table, JSON and plots. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    args.resume = args.resume or args.report_only
    out = Path(args.output_dir)
    command, date, started = start_invocation("benchmarks/compare_methods.py", argv, out)
    profile = None if args.report_only else shared_profile(args, out)

    def report(found: dict[str, Any]) -> str:
        return write_outputs(args, out, found, command, date, time.perf_counter() - started)

    found = collect_runs(args, out, profile, report)
    print(report(found))
    return 1 if found["failures"] else 0


def write_outputs(args: argparse.Namespace, out: Path, found: dict[str, Any], command: str, date: str,
                  wall: float) -> str:
    """Write ``table.md``, ``results.json`` and the plots of the runs in ``found``; returns the table."""
    runs, failures, missing = found["runs"], found["failures"], found["missing"]
    summary = aggregate(runs)
    header = [f"Command: `{command}`", f"Date: {date}", f"Settings: {settings_line(args, runs, wall)}"]
    if missing:
        header.append(f"Not run yet ({len(missing)}): {', '.join(missing)}")
    rates = {m: args.lr or LEARNING_RATES[m] for m in args.methods}
    table = markdown_table(summary, found["base"], header, rates, failures)
    for reference in references(args, runs):
        for metric in PAIRED_METRICS:
            table += "\n" + "\n".join(paired_lines(runs, reference, metric))
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    plots = make_plots(runs, summary, out)
    result = {"command": command, "date": date, "wall_seconds": round(wall, 1),
              "settings": vars(args) | {"child": None}, "learning_rates": rates, "base": found["base"],
              "summary": summary, "runs": runs, "failures": failures, "missing": missing, "plots": plots}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return table


if __name__ == "__main__":
    sys.exit(main())
