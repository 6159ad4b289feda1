"""benchmarks/bench/plots.py: what the loss curves and the memory/time bars draw."""

from __future__ import annotations

import pytest
from _scripts import load_script

pytest.importorskip("matplotlib")


def _summary(**per_method):
    return {m: {k: {"mean": v} for k, v in metrics.items()} for m, metrics in per_method.items()}


def test_plots_draw_seed_means_memory_and_seconds(tmp_path, monkeypatch):
    load_script("compare_methods.py")  # puts the bench package on sys.path
    import matplotlib.pyplot as plt
    from bench.plots import make_plots

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep each figure for inspection instead of closing it
    runs = [{"method": "ows", "loss_curve": [[1, 2.0], [2, 1.0]]}, {"method": "ows", "loss_curve": [[1, 4.0], [2, 3.0]]},
            {"method": "lisa", "loss_curve": [[1, 5.0], [2, 4.0]]}]
    summary = _summary(ows={"peak_rss_gib": 3.0, "peak_tracked_gib": 0.9, "sec_per_step": 2.5},
                       lisa={"peak_rss_gib": 2.0, "peak_tracked_gib": None, "sec_per_step": 1.5})
    assert make_plots(runs, summary, tmp_path) == ["loss_curves.png", "memory.png"]
    assert (tmp_path / "loss_curves.png").stat().st_size > 0 and (tmp_path / "memory.png").stat().st_size > 0

    curves = {line.get_label(): list(line.get_ydata()) for line in figures[0].axes[0].get_lines()}
    assert curves == {"ows": [3.0, 2.0], "lisa": [5.0, 4.0]}  # the mean over seeds, step by step
    memory, seconds = figures[1].axes
    heights = [bar.get_height() for bar in memory.patches]
    assert heights == [3.0, 2.0, 0.9, 0]  # RSS bars, then tracked bars (a missing value draws as 0)
    assert [bar.get_height() for bar in seconds.patches] == [2.5, 1.5]
    assert [t.get_text() for t in seconds.get_xticklabels()] == ["ows", "lisa"]
