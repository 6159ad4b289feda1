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
