"""Aggregation over seeds (mean, std, 95 % interval, ratios to full FT and LoRA) and the markdown table."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .settings import LABELS, LEARNING_RATES, METRICS
from .stats import mean_ci


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std of the finite values (std 0 for one value, ``(None, None)`` for none)."""
    kept = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not kept:
        return None, None
    return statistics.fmean(kept), (statistics.stdev(kept) if len(kept) > 1 else 0.0)


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: mean, std, 95 % half-width (``ci``, None for one seed) of every metric over seeds, n, and
    the ratios of the means to full FT and LoRA."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    summary: dict[str, dict[str, Any]] = {}
    for method in methods:
        rows = [r for r in runs if r["method"] == method]
        entry: dict[str, Any] = {"n": len(rows)}
        for key, _, _ in METRICS:
            values = [r.get(key) for r in rows]
            mean, std = mean_std(values)
            interval = mean_ci(values)
            entry[key] = {"mean": mean, "std": std, "ci": interval.half if interval else None}
        summary[method] = entry
    for entry in summary.values():
        for key, _, _ in METRICS:
            for ref in ("full", "lora"):
                ref_mean = summary.get(ref, {}).get(key, {}).get("mean")
                entry[key][f"x_{ref}"] = ratio(entry[key]["mean"], ref_mean)
    return summary


def cell(stat: dict[str, Any], fmt: str, n: int) -> str:
    """``mean (± 95 % half-width when n > 1) (ratio× full, ratio× LoRA)``, or ``n/a``."""
    if stat["mean"] is None:
        return "n/a"
    text = fmt.format(stat["mean"])
    if n > 1 and stat.get("ci") is not None:
        text += " ± " + fmt.format(stat["ci"]).rstrip("%") + ("%" if fmt.endswith("%}") else "")
    ratios = [f"{stat[k]:.2f}× {name}" for k, name in (("x_full", "full"), ("x_lora", "LoRA")) if stat.get(k) is not None]
    return text + (" (" + ", ".join(ratios) + ")" if ratios else "")


def markdown_table(summary: dict[str, dict[str, Any]], base: dict[str, Any], header: list[str],
                   rates: dict[str, float] | None = None, failures: list[dict[str, Any]] | None = None) -> str:
    """The comparison table: header lines, the base model's row, one row per method, failed runs, the legend.

    ``rates``: the learning rate of each row (default: the tuned ones of ``bench/settings.py``);
    ``failures``: ``{"method", "seed", "error"}`` of the runs that failed."""
    rates = {**LEARNING_RATES, **(rates or {})}
    lines = list(header) + [""]
    lines.append("| method | " + " | ".join(h for _, h, _ in METRICS) + " |")
    lines.append("|---" * (len(METRICS) + 1) + "|")
    if base:
        cells = []
        for key, _, fmt in METRICS:
            cells.append(fmt.format(base[key]) if base.get(key) is not None else "–")
        lines.append("| base model (no training) | " + " | ".join(cells) + " |")
    for method, entry in summary.items():
        label = LABELS.get(method, method) + f" · lr {rates.get(method, float('nan')):g}"
        lines.append(f"| {label} | " + " | ".join(cell(entry[k], f, entry["n"]) for k, _, f in METRICS) + " |")
    for failed in failures or []:
        lines.append(f"| {LABELS.get(failed['method'], failed['method'])} (seed {failed['seed']}) | failed: "
                     f"`{failed['error'].replace('|', '/')}` |" + " |" * (len(METRICS) - 1))
    lines.append("")
    present = [name for key, name in (("full", "full FT's"), ("lora", "LoRA's")) if key in summary]
    ratios = f", then the ratio of the mean to {' and to '.join(present)} from this same invocation" if present else ""
    lines.append(f"Cells: mean (± the 95 % confidence half-width over seeds, Student's t, when n > 1){ratios}. "
                 + ("With 2 seeds t has 1 degree of freedom: two nearly equal differences can read as significant. "
                    if any(entry["n"] == 2 for entry in summary.values()) else "") +
                 "Lower is better for every column except exact match.")
    return "\n".join(lines)


PAIRED_METRICS = ("heldout_answer_loss", "forgetting_ppl")
"""The metrics every table pairs against its references: quality on the task, and forgetting."""


def paired_lines(runs: list[dict[str, Any]], reference: str, metric: str = "heldout_answer_loss") -> list[str]:
    """Each row's difference from ``reference`` on the seeds both ran (mean ± 95 %), and whether it is significant."""
    from .stats import paired

    rows = [r for r in dict.fromkeys(run["method"] for run in runs) if r != reference]
    diffs = {row: paired(runs, row, reference, metric) for row in rows}
    if not any(d is not None and d.n > 1 for d in diffs.values()):
        return []
    name = LABELS.get(reference, reference)
    lines = ["", f"Paired differences of {metric} against {name}, seed by seed (negative: lower than {name}):", "",
             f"| method | difference | seeds | significant at 5 % |", "|---|---|---|---|"]
    for row, diff in diffs.items():
        if diff is not None and diff.n > 1:
            verdict = "yes" if diff.significant else "no"
            lines.append(f"| {LABELS.get(row, row)} | {diff.mean:+.3f} ± {diff.half:.3f} | {diff.n} | {verdict} |")
    return lines
