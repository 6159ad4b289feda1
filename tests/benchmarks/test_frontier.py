"""benchmarks/frontier.py: the front, the 8B axis, reused runs, and the harness end to end at tiny settings (slow)."""

from __future__ import annotations

import json

import pytest
from _scripts import load_script


def _load():
    return load_script("frontier.py")


def test_the_front_keeps_the_rows_no_other_row_beats_on_memory_and_loss():
    fr = _load()
    points = {"a": (1.0, 2.0), "b": (2.0, 1.5), "c": (2.5, 1.8), "d": (3.0, 1.0), "e": (1.0, 2.5)}
    assert fr.pareto(points) == {"a", "b", "d"}


def test_crowded_front_rows_are_named_on_separate_lines_and_lone_ones_beside_their_point():
    fr = _load()

    class Axes:
        def __init__(self):
            self.names = {}

        def annotate(self, text, xy, xytext, **_):
            self.names[text] = xytext[1]

    ax = Axes()
    fr._name_front(ax, {"a": (1.0, 1.53), "b": (1.1, 1.531), "c": (1.15, 1.532), "far": (13.0, 1.50),
                        "high": (1.0, 1.68)})
    assert len({ax.names[row] for row in ("a", "b", "c")}) == 3
    assert ax.names["far"] == ax.names["high"] == max(ax.names.values())
    empty = Axes()
    fr._name_front(empty, {})  # an axis without a finished row draws no names
    assert empty.names == {}


def test_the_8b_axis_follows_each_rows_options_and_leaves_peers_out():
    fr = _load()
    lean = ["--method", "ows", "--num_active_layers", "5", "--train_embeddings", "false", "--train_lm_head", "false",
            "--fused_step", "true"]
    paper = ["--method", "ows", "--num_active_layers", "5", "--outside_optimizer", "adamw", "--sampling_granularity",
             "layer"]
    assert fr.estimate_8b(lean) < fr.estimate_8b(paper)
    defaults = ["--method", "ows", "--num_active_layers", "5"]
    assert fr.estimate_8b(defaults) < fr.estimate_8b([*defaults, "--project_head_grad", "false"])
    assert fr.estimate_8b(["--method", "lora", "--lora_r", "4"]) < fr.estimate_8b(["--method", "lora", "--lora_r", "64"])
    assert fr.estimate_8b(["--method", "peer-badam"]) is None


def test_one_learning_rate_for_every_row_is_refused_before_anything_is_written(tmp_path):
    fr = _load()
    with pytest.raises(SystemExit, match="--learning_rate 0.001 is not used by the front.*LEARNING_RATES"):
        fr.main(["--quick", "--methods", "lora", "--learning_rate", "1e-3", "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_planners_rows_fit_their_budgets_and_the_bigger_budget_buys_no_less():
    import sys

    _load()  # puts benchmarks/ on the path
    from bench.front import FRONT_ROWS, PLAN_ROW, plan_budget

    fr = _load()
    picks = {m: ["--method", "ows", *FRONT_ROWS[PLAN_ROW[m]][1]] for m in ("qlora", "lora", "galore")}
    for method, argv in picks.items():
        assert fr.estimate_8b(argv) * 2**30 <= plan_budget(method)
    gamma = {m: int(dict(zip(a[::2], a[1::2]))["--num_active_layers"]) for m, a in picks.items()}
    assert gamma["qlora"] <= gamma["lora"] <= gamma["galore"]
    assert dict(zip(picks["qlora"][::2], picks["qlora"][1::2]))["--frozen_quantization"] == "nf4"
    assert "bench" in sys.modules


def test_finished_runs_with_the_same_flags_are_reused_and_others_are_not(tmp_path):
    fr = _load()
    from bench.runner import train_argv

    args = fr.parse_args(["--methods", "lora,full", "--seeds", "0", "--output-dir", str(tmp_path / "out"),
                          "--reuse", str(tmp_path / "main")])
    (tmp_path / "main" / "runs").mkdir(parents=True)
    same = train_argv(args, "lora", 0, tmp_path / "main" / "runs" / "lora-s0", None)
    other = train_argv(args, "full", 0, tmp_path / "main" / "runs" / "full-s0", None, lr=1.0)
    for name, argv in (("lora-s0", same), ("full-s0", other)):
        (tmp_path / "main" / "runs" / f"{name}.bench.json").write_text(json.dumps({"train_argv": argv}))
    assert fr.reuse_runs(args, tmp_path / "out", None) == ["lora-s0"]


def test_the_planners_rows_are_what_ows_memory_picks_from_the_products_defaults():
    _load()
    from bench.front import FRONT_ROWS, PLAN_MODEL, PLAN_ROW, PLANNED_FIELDS, flag, plan_budget

    from ows.cli.memory import compute, parse
    from ows.model_facts import PRESETS

    for budget_method in ("qlora", "lora", "galore"):
        row = FRONT_ROWS[PLAN_ROW[budget_method]][1]
        flags, plans = dict(zip(row[::2], row[1::2])), {}
        compute(parse([PLAN_MODEL, "--dtype", "bfloat16", "--per_device_train_batch_size", "16", "--max_seq_length",
                       "512", "--gradient_checkpointing", "true", "--loss_chunk_size", "1024", "--max_memory",
                       f"{plan_budget(budget_method)}B", "--memory_headroom", "0"]), PRESETS[PLAN_MODEL], ["ows"], plans)
        chosen = plans["ows"].settings
        assert {n: flag(chosen[n]) for n in PLANNED_FIELDS} == {n: flags[f"--{n}"] for n in PLANNED_FIELDS}


def test_a_pick_the_planner_made_at_a_smaller_budget_is_one_row_not_two():
    _load()
    import bench.peers  # noqa: F401  the peers' methods registered must not add budgets

    from bench.front import FRONT_ROWS, PLAN_ROW

    assert set(PLAN_ROW) == {"qlora", "lora", "galore"} and set(PLAN_ROW.values()) <= set(FRONT_ROWS)
    planned = [row for row in FRONT_ROWS if row.startswith("ows-plan-")]
    assert len({FRONT_ROWS[row][1] for row in planned}) == len(planned)  # no two rows train the same settings


@pytest.mark.slow
def test_end_to_end_on_tiny_model(tiny_model_dir, tmp_path):
    fr = _load()
    out = tmp_path / "front"
    argv = ["--model", str(tiny_model_dir), "--methods", "lora,galore,ows-g2", "--seeds", "0", "--steps", "2",
            "--batch-size", "2", "--num-heldout", "6", "--heldout-generate", "2", "--forgetting-samples", "2",
            "--forgetting-seq-len", "32", "--calibration-samples", "2", "--calibration-seq-len", "32", "--rank", "4",
            "--interval", "1", "--output-dir", str(out), "--reuse", str(tmp_path / "none")]
    assert fr.main(argv) == 0
    front = (out / "front.md").read_text()
    assert "| best ows row |" in front and "lora's" in front and "galore's" in front
    assert "OWS (GaLore outside, whole layers by owl), γ=2" in front
    assert (out / "front.png").is_file() and (out / "table.md").is_file()
    result = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in result["runs"]} == {"lora", "galore", "ows-g2"}
