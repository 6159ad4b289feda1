"""benchmarks/tune_lr.py: the grid, the validation-seed check, the winner per method and the table."""

from __future__ import annotations

import json
import sys

import pytest
from _scripts import load_script


def _load():
    return load_script("tune_lr.py")


@pytest.fixture
def sweep():
    _load()  # puts the bench package on sys.path
    return sys.modules["bench.sweep"]


def test_grid_is_the_current_lr_times_the_factors(sweep):
    lr = sweep.LEARNING_RATES["full"]
    assert sweep.lr_grid("full", [0.333, 1, 3]) == [sweep.round_sig(lr * 0.333), lr, sweep.round_sig(lr * 3)]
    assert sweep.round_sig(1e-4 / 3) == pytest.approx(3.3e-5)
    assert sweep.configs("galore", [1], [0.5, 1]) == [(sweep.LEARNING_RATES["galore"], 0.5), (sweep.LEARNING_RATES["galore"], 1)]
    assert sweep.configs("lisa", [1], [0.5, 1]) == [(sweep.LEARNING_RATES["lisa"], None)]


def test_validation_items_must_not_touch_the_test_items(sweep):
    sweep.check_validation_seed(200000, 300)
    sweep.check_validation_seed(99700, 300)  # ends right before the test items
    with pytest.raises(ValueError, match="overlaps the test items"):
        sweep.check_validation_seed(99800, 300)
    tl = _load()
    with pytest.raises(SystemExit):
        tl.parse_args(["--heldout-seed", "100000"])
    assert tl.parse_args(["--output-dir", "x"]).heldout_seed == 200000


def test_plan_runs_factor_by_factor():
    tl = _load()
    args = tl.parse_args(["--methods", "full,ows", "--factors", "1,3", "--output-dir", "x"])
    plan = tl.sweep_plan(args)
    lrs = tl.LEARNING_RATES
    assert [(m, lr) for m, lr, _, _ in plan] == [("full", lrs["full"]), ("ows", lrs["ows"]),
                                                ("full", pytest.approx(3 * lrs["full"])), ("ows", pytest.approx(3 * lrs["ows"]))]
    assert args.heldout_generate == 0 and args.forgetting_samples == 0 and args.steps == 30


def _run(method, lr, loss, scale=None):
    return {"method": method, "lr": lr, "galore_scale": scale, "heldout_answer_loss": loss, "sec_per_step": 1.0}


def test_winner_per_method_edges_and_table(sweep):
    runs = [_run("full", 1e-4, 1.5), _run("full", 3e-4, 1.4), _run("full", 3.3e-5, 1.7),
            _run("ows", 1e-4, 1.6, 1.0), _run("ows", 3e-4, 1.3, 1.0), _run("ows", 9e-4, 1.45, 1.0)]
    summary = sweep.summarize(runs)
    chosen = sweep.winners(summary)
    assert chosen["full"]["lr"] == 3e-4 and chosen["full"]["edge"]  # the largest lr tried won
    assert chosen["ows"]["lr"] == 3e-4 and not chosen["ows"]["edge"]
    worst = next(e for e in summary["full"] if e["lr"] == 3.3e-5)
    assert worst["x_best"] == pytest.approx(1.7 / 1.4) and not worst["best"]
    table = sweep.sweep_table(summary, ["Command: `x`"])
    assert "| full FT (AdamW) | 0.0003 | – | 1.400 **best** (grid edge) | 1.000× | 1.00 |" in table
    assert "| OWS (weighted + GaLore) | 0.0003 | 1 | 1.300 | 0.93× |" in table  # winners: ratio to full's best


def test_outputs_name_only_the_swept_methods_rates(tmp_path):
    tl = _load()
    args = tl.parse_args(["--methods", "badam,lisa", "--factors", "1,3,0.333", "--output-dir", str(tmp_path)])
    runs = [_run("badam", 1e-4, 1.9), _run("badam", 3e-4, 1.8), _run("lisa", 3e-4, 1.7), _run("lisa", 9e-4, 1.75),
            _run("lisa", 1e-4, 1.8)]
    table, chosen = tl.write_outputs(args, tmp_path, runs, "python benchmarks/tune_lr.py", "today", 60.0)
    assert f"around {{'badam': {tl.LEARNING_RATES['badam']}, 'lisa': {tl.LEARNING_RATES['lisa']}}};" in table
    assert "'full'" not in table and "5 of 6 runs" in table  # a sweep still going
    assert chosen["badam"]["lr"] == 3e-4 and chosen["badam"]["edge"] and not chosen["lisa"]["edge"]
    assert json.loads((tmp_path / "results.json").read_text())["winners"]["lisa"]["lr"] == 3e-4


def test_the_next_rate_past_a_winning_edge(sweep):
    grid = [1e-4, 3e-4, 3.3e-5]
    assert sweep.widen_rate(grid, 3e-4) == pytest.approx(9e-4)
    assert sweep.widen_rate(grid, 3.3e-5) == pytest.approx(1.1e-5)
    assert sweep.widen_rate(grid, 1e-4) is None  # the best is inside the grid
    assert sweep.widen_rate([1e-4], 1e-4) is None
    assert sweep.widen_rate([1e-4, 1.01e-4], 1.01e-4) is None  # the next step rounds back onto the grid


def test_widen_follows_the_best_rate_until_it_is_inside(tmp_path, monkeypatch):
    tl = _load()
    base = tl.LEARNING_RATES["lisa"]
    trained = []

    def fake_run_child(args, method, seed, out, profile, measure_before, *, lr, name, extra):
        trained.append(lr)
        import math
        return {"method": method, "heldout_answer_loss": (math.log10(lr / (27 * base))) ** 2, "sec_per_step": 1.0}

    monkeypatch.setattr(tl, "run_child", fake_run_child)
    args = tl.parse_args(["--methods", "lisa", "--factors", "1,3", "--widen", "5", "--output-dir", str(tmp_path)])
    runs = tl.run_sweep(args, tmp_path, report=lambda runs: None)
    assert trained == pytest.approx([base, 3 * base, 9 * base, 27 * base, 81 * base], rel=0.02)  # 81x lost (2 digits)
    assert tl.winners(tl.summarize(runs))["lisa"]["lr"] == pytest.approx(27 * base)
    table, _ = tl.write_outputs(args, tmp_path, runs, "python benchmarks/tune_lr.py", "today", 1.0)
    assert "5 runs (2 in the grid, 3 past its edges)" in table
    trained.clear()
    args = tl.parse_args(["--methods", "lisa", "--factors", "1,3", "--widen", "1", "--output-dir", str(tmp_path)])
    tl.run_sweep(args, tmp_path, report=lambda runs: None)
    assert trained == pytest.approx([base, 3 * base, 9 * base])  # one rate past the edge, then it stops


def test_around_centres_the_grid_and_resume_refuses_another_centre(tmp_path):
    tl = _load()
    args = tl.parse_args(["--methods", "badam,lisa", "--factors", "1,3", "--around", "badam=1e-4",
                          "--output-dir", str(tmp_path)])
    assert args.around == {"badam": 1e-4, "lisa": tl.LEARNING_RATES["lisa"]}
    assert [lr for m, lr, _, _ in tl.sweep_plan(args) if m == "badam"] == pytest.approx([1e-4, 3e-4])
    tl.write_outputs(args, tmp_path, [_run("badam", 1e-4, 1.9)], "python benchmarks/tune_lr.py", "today", 1.0)
    resumed = tl.parse_args(["--methods", "badam", "--around", "badam=1e-4", "--resume", "--output-dir", str(tmp_path)])
    tl.check_same_grid(resumed, tmp_path)  # same centre: continues
    moved = tl.parse_args(["--methods", "badam", "--around", "badam=3e-4", "--resume", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"centred on badam 0.0001 \(this invocation: badam 0.0003\): add "
                                         r"--around badam=0.0001"):
        tl.check_same_grid(moved, tmp_path)
    for bad in ("badam", "full=1e-4", "badam=-1", "badam=fast"):
        with pytest.raises(SystemExit):
            tl.parse_args(["--methods", "badam", "--around", bad, "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        tl.parse_args(["--widen", "-1", "--output-dir", str(tmp_path)])
