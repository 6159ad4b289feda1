"""Loss curves and memory bars of a comparison run (matplotlib, optional)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def finish(plt: Any, fig: Any, axes: Any, xlabel: str | None, ylabel: str, path: Path) -> None:
    """Label (``xlabel`` None: as set), grid and legend each of ``axes`` (one or a list), save ``fig`` to ``path``."""
    for ax in axes if isinstance(axes, (list, tuple)) else [axes]:
        if xlabel is not None:
            ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_plots(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """Write ``loss_curves.png`` and ``memory.png`` (memory and seconds-per-step bars) into ``out``.

    Returns the file names (none without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in summary:
        curves = [r["loss_curve"] for r in runs if r["method"] == method and r.get("loss_curve")]
        if not curves:
            continue
        steps = sorted({s for c in curves for s, _ in c})
        by_step = {s: [loss for c in curves for t, loss in c if t == s] for s in steps}
        ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], label=method)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)
    written.append("loss_curves.png")

    names = list(summary)
    fig, (ax, ax_time) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.4
    xs = range(len(names))
    rss = [summary[m]["peak_rss_gib"]["mean"] or 0 for m in names]
    tracked = [summary[m]["peak_tracked_gib"]["mean"] or 0 for m in names]
    ax.bar([x - width / 2 for x in xs], rss, width, label="peak process RSS")
    ax.bar([x + width / 2 for x in xs], tracked, width, label="peak params+grads+optimizer state")
    ax.set_ylabel("GiB")
    ax.legend()
    seconds = [summary[m]["sec_per_step"]["mean"] or 0 for m in names]
    ax_time.bar(list(xs), seconds, 0.6, color="tab:green")
    ax_time.set_ylabel("seconds per optimizer step (median; noisy here)")
    for axis in (ax, ax_time):
        axis.set_xticks(list(xs))
        axis.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
    written.append("memory.png")
    return written
