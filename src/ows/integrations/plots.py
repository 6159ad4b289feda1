"""PNG charts: the outlier profile of a model and training-loss curves.

matplotlib is optional (the ``demo`` extra): without it the functions log a warning and return None.
Figures are drawn on an Agg canvas directly, so the user's pyplot backend is never changed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ..outliers import OutlierProfile
from ..sampling import sampling_probabilities

logger = logging.getLogger(__name__)

MISSING = "matplotlib is not installed, no chart written (pip install matplotlib)"


def _new_figure(width: float, height: float, rows: int = 1) -> tuple[Any, Any] | None:
    """(figure, axes) on an Agg canvas, or None when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning(MISSING)
        return None
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=rows > 1, squeeze=False)[:, 0]
    return fig, axes


def _save(fig: Any, path: str | Path) -> Path:
    import io

    from ..jsonio import write_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_file(buffer.getvalue(), path)  # atomic, never through a link
    logger.debug("wrote %s", path)
    return path


def _layer_ticks(ax: Any, count: int) -> None:
    step = max(1, count // 16)
    ax.set_xticks(list(range(0, count, step)))
    ax.set_xlim(-0.7, count - 0.3)


def plot_profile(
    profile: OutlierProfile, path: str | Path, strategy: str = "owl", temperature: float = 1.0
) -> Path | None:
    """Bar charts over layer index: outlier ratio (%) and sampling probability (``strategy`` vs uniform)."""
    probs = sampling_probabilities(profile.ratios, strategy, temperature=temperature)
    made = _new_figure(max(6.0, 0.22 * profile.num_layers + 3.0), 6.0, rows=2)
    if made is None:
        return None
    fig, (top, bottom) = made
    layers = list(range(profile.num_layers))
    percent = [100.0 * r for r in profile.ratios]
    top.bar(layers, percent, color="#c0504d", width=0.8)
    mean = sum(percent) / len(percent)
    top.axhline(mean, color="#555555", linestyle=":", linewidth=1, label=f"mean {mean:.2f} %")
    top.set_ylabel("outlier ratio (%)")
    top.legend(loc="upper left", frameon=False, fontsize=8)
    label = f"{strategy} (τ={temperature:g})" if strategy.startswith("owl") and temperature != 1.0 else strategy
    bars = bottom.bar(layers, probs, color="#4f81bd", width=0.8, label=label)
    line = bottom.axhline(1.0 / len(layers), color="#555555", linestyle="--", linewidth=1, label="uniform (LISA)")
    bottom.set_ylabel("sampling probability")
    bottom.set_xlabel("decoder layer")
    bottom.legend(handles=[bars, line], loc="upper left", frameon=False, fontsize=8)
    _layer_ticks(bottom, len(layers))
    for ax in (top, bottom):
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    name = profile.model_name or "model"
    fig.suptitle(f"{name}: outlier profile (M={profile.threshold:g}, {profile.num_tokens:,} tokens)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_loss_curve(
    steps: Sequence[int],
    losses: Sequence[float],
    path: str | Path,
    title: str = "training loss",
    eval_points: Sequence[tuple[int, float]] | None = None,
) -> Path | None:
    """Line chart of ``losses`` against ``steps``, with optional evaluation points as markers."""
    if len(steps) != len(losses):
        raise ValueError(f"plot_loss_curve got {len(steps)} steps and {len(losses)} losses: give one loss per step")
    made = _new_figure(7.0, 4.0)
    if made is None:
        return None
    fig, (ax,) = made
    ax.plot(list(steps), list(losses), color="#4f81bd", linewidth=1.4, label="train")
    if eval_points:
        xs, ys = zip(*eval_points)
        ax.plot(list(xs), list(ys), color="#c0504d", marker="o", linewidth=1, label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if eval_points:
        ax.legend(frameon=False)
    fig.tight_layout()
    return _save(fig, path)
