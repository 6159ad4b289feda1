#!/usr/bin/env python
"""The equal-memory front: held-out loss (and forgetting) against memory for ows's settings and every peer.

Each row trains with ``compare_methods.py``'s runner (one ``ows train`` child per row x seed, the same data,
steps, schedule and evaluation; main-table settings by default: 150 steps x batch 16). Two memory axes:

- **measured** peak tracked bytes on SmolLM2 (parameters + gradients + optimizer state, from the runs);
- **estimated** GiB for Llama-3.1-8B's shapes at the same options (bf16, batch 16 x 512, gradient
  checkpointing, chunked loss: ``bench.front.PLAN_SIZES``), from the project's estimator; peers that the
  estimator does not model (BAdam, APOLLO, LOMO, galore-torch, DoRA) have none.

Outputs in ``--output-dir`` (default ``benchmarks/results/<date>-front``): what compare_methods writes
(``table.md``, ``results.json``, plots) plus ``front.md`` (at each budget — QLoRA's, LoRA's and GaLore's
memory on each axis — the best ows row and the best peer that fit, with paired differences) and
``front.png`` (both axes, the front marked). ``--reuse DIR`` copies finished runs with identical
``ows train`` flags from another results folder (the main table's), so they are not trained again.

    python benchmarks/frontier.py --seeds 0 --resume                    # every row, one seed
    python benchmarks/frontier.py --seeds 0,1,2 --methods ows-lean-g5,lora --resume   # near the front: 3 seeds
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `bench` package next to this script

from bench.front import BUDGET_METHODS, FRONT, PLAN_MODEL, PLAN_SIZES
from bench.options import build_parser, finish_args
from bench.runner import settings_mismatch, shared_profile, start_invocation, train_argv
from bench.settings import FULL, LABELS
from bench.stats import paired
from bench.summary import aggregate

DEFAULT_REUSE = Path(__file__).resolve().parent / "results" / "2026-12-02-main"
ESTIMATED_FLAGS = {"--num_active_layers": int, "--rank": int, "--lora_r": int, "--fused_step": "bool",
                   "--train_embeddings": "bool", "--train_lm_head": "bool", "--outside_optimizer": str,
                   "--svd_method": str, "--frozen_quantization": str, "--sampling_granularity": str,
                   "--project_head_grad": "bool"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """compare_methods' options (main-table preset) plus ``--resume``, ``--reuse`` and ``--output-dir``."""
    p = build_parser(__doc__.split("\n")[0])
    p.set_defaults(methods=",".join(FRONT))
    p.add_argument("--output-dir", default=None, help="default benchmarks/results/<date>-front")
    p.add_argument("--resume", action="store_true", help="reuse the runs already finished in --output-dir")
    p.add_argument("--report-only", action="store_true", help="run nothing: the front of the finished runs")
    p.add_argument("--reuse", default=str(DEFAULT_REUSE), help="copy finished runs with the same flags from here")
    args = p.parse_args(argv)
    return finish_args(p, args, main_table_preset(), folder_suffix="-front")


def main_table_preset() -> dict[str, Any]:
    """``FULL`` with the main table's steps and batch size (read from its results), so its runs can be reused."""
    settings = json.loads((DEFAULT_REUSE / "results.json").read_text())["settings"]
    return dict(FULL, steps=settings["steps"], batch_size=settings["batch_size"])


def estimate_8b(argv: list[str]) -> float | None:
    """Llama-3.1-8B's estimated GiB at ``PLAN_SIZES`` with a run's method and OWS options (None for a peer)."""
    from ows.memory.estimate import estimate_memory
    from ows.methods import method_names
    from ows.model_facts import PRESETS

    pairs = dict(zip(argv[::2], argv[1::2]))
    method = pairs.get("--method", "ows")
    if method.startswith("peer-") or method not in method_names():
        return None
    options = {}
    for flag, kind in ESTIMATED_FLAGS.items():
        if flag in pairs:
            value = pairs[flag]
            options[flag[2:]] = value.lower() == "true" if kind == "bool" else kind(value)
    return estimate_memory(PRESETS[PLAN_MODEL], method, **{**PLAN_SIZES, **options}).total / 2**30


def reuse_runs(args: argparse.Namespace, out: Path, profile: Path | None) -> list[str]:
    """Copy the finished runs of ``--reuse`` whose ``ows train`` flags equal this invocation's; returns their names."""
    source = Path(args.reuse) / "runs"
    copied = []
    for seed in args.seeds:
        for row in args.methods:
            name = f"{row}-s{seed}"
            done, theirs = out / "runs" / f"{name}.bench.json", source / f"{name}.bench.json"
            if done.is_file() or not theirs.is_file():
                continue
            stored = json.loads(theirs.read_text()).get("train_argv")
            if stored and settings_mismatch(stored, train_argv(args, row, seed, out / "runs" / name, profile)) is None:
                done.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(theirs, done)
                copied.append(name)
    return copied


def pareto(points: dict[str, tuple[float, float]]) -> set[str]:
    """The rows no other row beats on both memory and loss (``{row: (memory, loss)}``)."""
    return {row for row, (mem, loss) in points.items()
            if not any(m <= mem and l < loss and other != row for other, (m, l) in points.items())}


def is_ows_row(row: str) -> bool:
    """Whether a front row is one of ows's own configurations (the others are peers)."""
    return row.startswith("ows")


def front_table(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], axes: dict[str, dict[str, float]]) -> str:
    """At each budget (QLoRA's, LoRA's, GaLore's memory on each axis): the best ows row and peer row that fit."""
    loss = {row: entry["heldout_answer_loss"]["mean"] for row, entry in summary.items()}
    ppl = {row: entry["forgetting_ppl"]["mean"] for row, entry in summary.items()}
    lines = ["| memory axis | budget | best ows row | loss | forgetting | best peer row | loss | forgetting | "
             "paired ows − peer |", "|---|---|---|---:|---:|---|---:|---:|---|"]
    for axis, memory in axes.items():
        for budget_row in BUDGET_METHODS:
            if budget_row not in memory:
                continue
            budget = memory[budget_row]
            fits = [row for row, gib in memory.items() if gib <= budget * 1.0001 and loss.get(row) is not None]
            ours = [row for row in fits if is_ows_row(row)]
            theirs = [row for row in fits if not is_ows_row(row)]
            best = [min(group, key=lambda r: loss[r]) if group else None for group in (ours, theirs)]
            cells = [f"{LABELS.get(r, r)} | {loss[r]:.3f} | {ppl[r]:.2f}" if r else "– | – | –" for r in best]
            diff = paired(runs, best[0], best[1], "heldout_answer_loss") if all(best) else None
            verdict = "–" if diff is None else diff.text("{:+.3f}") + (f" (n={diff.n}" + (", significant)" if
                                                                                           diff.significant else ")"))
            lines.append(f"| {axis} | {budget_row}'s {budget:.2f} GiB | {cells[0]} | {cells[1]} | {verdict} |")
    return "\n".join(lines)


def _name_front(ax: Any, front: dict[str, tuple[float, float]]) -> None:
    """Name the front's rows below their points, a name one line further down for each named row whose point
    lies within a twelfth of the front's span on both axes (crowded rows would print over each other)."""
    if not front:
        return
    mems, values = [m for m, _ in front.values()], [v for _, v in front.values()]
    near_mem, near_value = (max(mems) - min(mems)) / 12, (max(values) - min(values)) / 12
    named: list[tuple[float, float, int]] = []
    for row, (mem, value) in sorted(front.items(), key=lambda item: item[1]):
        level = max((lv + 1 for m, v, lv in named if abs(m - mem) <= near_mem and abs(v - value) <= near_value),
                    default=0)
        ax.annotate(row, (mem, value), fontsize=8, xytext=(4, -10 - 9 * level), textcoords="offset points")
        named.append((mem, value, level))


def front_plot(summary: dict[str, dict[str, Any]], axes: dict[str, dict[str, float]], out: Path) -> str | None:
    """``front.png``: held-out loss against each memory axis, the front connected and named, ows rows in red,
    peers in blue (the other rows unnamed: they crowd within a few hundredths; ``front.md`` and the table name
    them)."""
    from bench.plots import finish, pyplot

    plt = pyplot()
    if plt is None:
        return None
    fig, panels = plt.subplots(1, len(axes), figsize=(7 * len(axes), 5))
    panels = list(panels) if len(axes) > 1 else [panels]
    for ax, (axis, memory) in zip(panels, axes.items()):
        points = {row: (gib, summary[row]["heldout_answer_loss"]["mean"]) for row, gib in memory.items()
                  if summary[row]["heldout_answer_loss"]["mean"] is not None}
        front = pareto(points)
        best = sorted(points[row] for row in front)
        ax.plot([m for m, _ in best], [l for _, l in best], "k--", lw=1, label="front")
        for ours, label in ((True, "ows rows"), (False, "peers")):
            mine = [points[row] for row in points if is_ows_row(row) == ours]
            ax.scatter([m for m, _ in mine], [l for _, l in mine], color="tab:red" if ours else "tab:blue", s=25,
                       label=label)
        _name_front(ax, {row: points[row] for row in front})
        ax.set_xlabel(axis)
    finish(plt, fig, panels, None, "held-out answer loss (mean over seeds)", out / "front.png")
    return "front.png"


def main(argv: list[str] | None = None) -> int:
    """Train (or reuse) every row x seed, then write compare_methods' outputs, ``front.md`` and ``front.png``."""
    import compare_methods as cm

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.lr is not None:  # a front compares each row at its own tuned rate, never one rate for all
        raise SystemExit(f"frontier.py: error: --learning_rate {args.lr} is not used by the front: every row trains at "
                         "its tuned rate (LEARNING_RATES in benchmarks/bench/settings.py); change the rate there")
    args.resume = args.resume or args.report_only
    args.reference, args.child = None, None
    out = Path(args.output_dir)
    command, date, started = start_invocation("benchmarks/frontier.py", argv, out)
    profile = None if args.report_only else shared_profile(args, out)
    copied = [] if args.report_only else reuse_runs(args, out, profile)
    if copied:
        print(f"# reused from {args.reuse}: {', '.join(copied)}", flush=True)
    found = cm.collect_runs(args, out, profile, lambda f: cm.write_outputs(args, out, f, command, date,
                                                                           time.perf_counter() - started))
    print(cm.write_outputs(args, out, found, command, date, time.perf_counter() - started))
    summary = aggregate(found["runs"])
    measured = {row: entry["peak_tracked_gib"]["mean"] for row, entry in summary.items()
                if entry["peak_tracked_gib"]["mean"] is not None}
    argvs = {r["method"]: r.get("train_argv") for r in found["runs"] if r.get("train_argv")}
    estimated = {row: gib for row, argv_ in argvs.items() if (gib := estimate_8b(argv_)) is not None}
    axes = {"measured peak tracked GiB, SmolLM2-135M (fp32, batch 16 x 128)": measured,
            f"estimated GiB, {PLAN_MODEL} (bf16, batch 16 x 512, checkpointing)": estimated}
    table = front_table(found["runs"], summary, axes)
    (out / "front.md").write_text(f"Command: `{command}`\nDate: {date}\n\n{table}\n", encoding="utf-8")
    front_plot(summary, axes, out)
    print(table)
    return 1 if found["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
