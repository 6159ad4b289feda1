"""benchmarks/compare_methods.py: end to end on the tiny model (2 methods, 2 steps, 1 seed) and ratio arithmetic."""

from __future__ import annotations

import json
import math

import pytest
from _scripts import load_script


def _load():
    return load_script("compare_methods.py")


def _run(method, seed, **values):
    base = {k: None for k, _, _ in _load().METRICS}
    return {"method": method, "seed": seed, **base, **values}


def test_aggregate_means_stds_and_ratios():
    cm = _load()
    runs = [_run("full", 0, heldout_answer_loss=1.0, peak_rss_gib=4.0), _run("full", 1, heldout_answer_loss=1.2, peak_rss_gib=4.0),
            _run("lora", 0, heldout_answer_loss=0.8, peak_rss_gib=2.0), _run("lora", 1, heldout_answer_loss=1.0, peak_rss_gib=2.0),
            _run("ows", 0, heldout_answer_loss=0.55, peak_rss_gib=1.0), _run("ows", 1, heldout_answer_loss=0.55, peak_rss_gib=1.0)]
    summary = cm.aggregate(runs)
    assert list(summary) == ["full", "lora", "ows"]
    loss = summary["ows"]["heldout_answer_loss"]
    assert loss["mean"] == pytest.approx(0.55) and loss["std"] == pytest.approx(0.0)
    assert loss["x_full"] == pytest.approx(0.55 / 1.1) and loss["x_lora"] == pytest.approx(0.55 / 0.9)
    assert summary["full"]["heldout_answer_loss"]["std"] == pytest.approx(math.sqrt(0.02))
    assert summary["ows"]["peak_rss_gib"]["x_full"] == pytest.approx(0.25)
    assert summary["lora"]["peak_rss_gib"]["x_lora"] == pytest.approx(1.0)
    assert summary["ows"]["svd_share"] == {"mean": None, "std": None, "ci": None, "x_full": None, "x_lora": None}
    # 95 % half-width with 2 seeds: t(0.975, 1) = 12.706 times s / sqrt(2)
    assert summary["full"]["heldout_answer_loss"]["ci"] == pytest.approx(12.7062 * math.sqrt(0.02) / math.sqrt(2), rel=1e-4)
    table = cm.markdown_table(summary, {}, ["Command: `x`"])
    row = next(line for line in table.splitlines() if line.startswith("| OWS"))
    assert "0.550 ± 0.000 (0.50× full, 0.61× LoRA)" in row
    assert "1.00 ± 0.00 (0.25× full, 0.50× LoRA)" in row
    assert "1.100 ± 1.271" in next(line for line in table.splitlines() if line.startswith("| full"))
    assert "95 % confidence" in table


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    cm = _load()
    from bench.runner import RunFailed

    def fake_child(args, method, seed, out, profile, measure_before, **kw):
        if method == "lora":
            raise RunFailed("lora seed 0 failed", "ows train: failed: AssertionError: Torch not compiled with CUDA")
        return _run(method, seed, heldout_answer_loss=1.0, steps=2)

    monkeypatch.setattr(cm, "run_child", fake_child)
    monkeypatch.setattr(cm, "make_plots", lambda *a: {})
    out = tmp_path / "bench"
    assert cm.main(["--methods", "full,lora,lisa", "--seeds", "0", "--steps", "2", "--output-dir", str(out)]) == 1
    result = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in result["runs"]] == ["full", "lisa"]
    assert result["failures"] == [{"method": "lora", "seed": 0,
                                   "error": "ows train: failed: AssertionError: Torch not compiled with CUDA"}]
    assert "| LoRA (seed 0) | failed: `ows train: failed: AssertionError: Torch not compiled with CUDA` |" in \
        (out / "table.md").read_text()


def test_failure_reason_is_the_ows_error_line(tmp_path):
    _load()
    from bench.runner import failure_reason

    log = tmp_path / "run.log"
    log.write_text("loading\nows train: failed: ValueError: bad\nTraceback (most recent call last):\n  x\n")
    assert failure_reason(log) == "ows train: failed: ValueError: bad"
    log.write_text("Killed\n")
    assert failure_reason(log) == "Killed"


@pytest.mark.slow  # about 30 s; tests/benchmarks/test_frontier.py runs the harness end to end too (slow)
def test_end_to_end_on_tiny_model(tiny_model_dir, tmp_path):
    cm = _load()
    out = tmp_path / "bench"
    argv = ["--model", str(tiny_model_dir), "--methods", "full,ows,badam", "--seeds", "0", "--steps", "2",
            "--batch-size", "2", "--num-heldout", "6", "--heldout-generate", "2", "--forgetting-samples", "2",
            "--forgetting-seq-len", "32", "--calibration-samples", "2", "--calibration-seq-len", "32",
            "--rank", "4", "--interval", "1", "--output-dir", str(out)]
    assert cm.main(argv) == 0
    table = (out / "table.md").read_text()
    assert table.startswith("Command: `python benchmarks/compare_methods.py --model")
    assert "| base model (no training) |" in table and "| OWS (weighted + GaLore)" in table
    result = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in result["runs"]] == [("full", 0), ("ows", 0), ("badam", 0)]
    for run in result["runs"]:
        assert run["steps"] == 2 and run["heldout_answer_loss"] > 0 and run["forgetting_ppl"] > 1
        assert run["peak_rss_gib"] > 0 and run["peak_tracked_gib"] > 0 and run["sec_per_step"] > 0
        assert len(run["loss_curve"]) == 2
    ows, full = result["summary"]["ows"], result["summary"]["full"]
    assert ows["peak_tracked_gib"]["x_full"] == pytest.approx(ows["peak_tracked_gib"]["mean"] / full["peak_tracked_gib"]["mean"])
    assert ows["svd_share"]["mean"] > 0 and full["svd_share"]["mean"] == 0
    assert result["base"]["heldout_answer_loss"] > 0
    badam = result["runs"][2]  # a peer from its own package: BAdam's block optimizer, its fp32 copies tracked
    assert badam["peak_optimizer_state_gib"] > 0 and badam["optimizer_state_hidden"] is False
    assert "| BAdam (badam package)" in table
    assert (out / "loss_curves.png").is_file() and (out / "memory.png").is_file()
    assert not list(out.rglob("*.safetensors"))  # no weights kept

    def no_new_runs(*a, **k):
        raise AssertionError("--resume trained a run that was already finished")

    cm.run_child = no_new_runs
    (out / "table.md").unlink()
    assert cm.main([*argv, "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["heldout_answer_loss"] for r in again["runs"]] == [r["heldout_answer_loss"] for r in result["runs"]]
    assert all(r["wall_seconds"] > 0 for r in again["runs"])  # kept on disk, so the time total survives --resume
    assert "(3 of 3 runs timed" in (out / "table.md").read_text()
    assert "| OWS (weighted + GaLore)" in (out / "table.md").read_text()


def test_a_variant_runs_its_product_method_with_its_extra_flags(tmp_path):
    cm = _load()
    from bench.runner import train_argv

    args = cm.parse_args(["--quick", "--methods", "ows,ows-lean", "--output-dir", str(tmp_path)])
    plain = train_argv(args, "ows", 0, tmp_path / "a", None)
    lean = train_argv(args, "ows-lean", 0, tmp_path / "b", None)
    assert plain[plain.index("--method") + 1] == lean[lean.index("--method") + 1] == "ows"
    assert "--train_embeddings" not in plain
    assert lean[lean.index("--train_embeddings") + 1] == "false"


def test_paired_differences_say_which_are_significant():
    from bench.summary import paired_lines

    loss = {"lisa": [1.80, 1.70, 1.90], "ows": [1.70, 1.61, 1.79], "galore": [1.85, 1.62, 1.93]}
    runs = [{"method": m, "seed": s, "heldout_answer_loss": v[s]} for m, v in loss.items() for s in range(3)]
    lines = paired_lines(runs, "lisa")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    ows_row = next(v for k, v in rows.items() if k.startswith("OWS"))
    galore_row = next(v for k, v in rows.items() if k.startswith("GaLore"))
    assert "-0.100 ±" in ows_row and ows_row.endswith("| 3 | yes |")  # the same gap on every seed
    assert galore_row.endswith("| 3 | no |")  # +0.05, -0.08, +0.03: the interval holds 0
    assert paired_lines(runs[:1] + runs[3:4], "lisa") == []  # one shared seed: no interval


def _finished(out, method, seed, loss):
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run = _run(method, seed, heldout_answer_loss=loss, forgetting_ppl=30 + 10 * loss, wall_seconds=60.0, steps=2)
    (runs / f"{method}-s{seed}.bench.json").write_text(json.dumps(run))


def test_report_only_tables_the_finished_runs_and_lists_the_missing(tmp_path, monkeypatch):
    cm = _load()

    def no_runs(*a, **k):
        raise AssertionError("--report-only started a run")

    monkeypatch.setattr(cm, "run_child", no_runs)
    monkeypatch.setattr(cm, "make_plots", lambda *a: {})
    out = tmp_path / "bench"
    for seed, (lisa, ows) in enumerate([(1.0, 0.9), (1.2, 1.0), (1.1, 1.0)]):
        _finished(out, "lisa", seed, lisa)
        _finished(out, "ows", seed, ows)
    _finished(out, "full", 0, 2.0)
    argv = ["--methods", "full,lisa,ows", "--seeds", "0,1,2", "--steps", "2", "--output-dir", str(out), "--report-only"]
    assert cm.main([*argv, "--reference", "ows"]) == 0
    table = (out / "table.md").read_text()
    assert "Not run yet (2): full-s1, full-s2" in table
    assert "the ratio of the mean to full FT's from" in table and "LoRA's" not in table  # only rows that ran
    assert "runs' wall time 7 min in total (7 of 7 runs timed" in table
    assert "against OWS (weighted + GaLore)" in table and "| LISA (uniform, plain AdamW) | +0.133 ±" in table
    assert "Paired differences of forgetting_ppl against OWS" in table  # forgetting is paired too
    assert json.loads((out / "results.json").read_text())["missing"] == ["full-s1", "full-s2"]
    with pytest.raises(SystemExit):
        cm.parse_args([*argv, "--reference", "galore"])


def test_resume_checks_settings_first_and_tables_the_runs_so_far(tmp_path, monkeypatch):
    cm = _load()
    from bench.runner import settings_mismatch, train_argv

    monkeypatch.setattr(cm, "run_child", lambda *a, **k: pytest.fail("a run started before the settings were checked"))
    monkeypatch.setattr(cm, "make_plots", lambda *a: {})
    out = tmp_path / "bench"
    argv = ["--methods", "lisa,full", "--seeds", "0", "--steps", "2", "--output-dir", str(out), "--resume"]
    _finished(out, "lisa", 0, 1.0)
    stored = json.loads((out / "runs" / "lisa-s0.bench.json").read_text())
    stored["train_argv"] = train_argv(cm.parse_args(argv), "lisa", 0, tmp_path / "elsewhere", None)
    (out / "runs" / "lisa-s0.bench.json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match=r"run lisa-s0 .* trained with --num_train_examples 32 \(this invocation: 48\), "
                                         r"--max_steps 2 \(this invocation: 3\): "
                                         r".*delete .*lisa-s0.bench.json"):
        cm.main([*argv[:5], "3", *argv[6:]])
    # the same settings from another folder (paths differ) are reused; full-s0 is the one left to run
    def fail_full(*a, **k):
        midway = (out / "table.md").read_text()  # written before each new run: the table so far
        assert "Not run yet (1): full-s0" in midway and "| LISA (uniform, plain AdamW)" in midway
        raise cm.RunFailed("x", "not here")

    monkeypatch.setattr(cm, "run_child", fail_full)
    assert cm.main(argv) == 1
    result = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in result["runs"]] == ["lisa"] and result["failures"][0]["method"] == "full"
    assert settings_mismatch(["--seed", "0"], ["--seed", "0", "--rank", "4"]) == \
        "--rank (not given) (this invocation: 4)"


def test_depth_mapping_of_the_llama2_7b_ratios_is_the_committed_row():
    _load()
    from bench.settings import BENCHMARKS_DIR, LLAMA2_7B_ON_30, resample_by_depth

    assert resample_by_depth([1.0, 3.0], 5) == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert resample_by_depth([0.0, 4.0, 8.0], 3) == [0.0, 4.0, 8.0] and resample_by_depth([2.0, 5.0], 1) == [2.0]
    source = json.loads((BENCHMARKS_DIR / "bench" / "llama2_7b_owl_ratios.json").read_text())
    assert source["num_layers"] == len(source["ratios"]) == 32
    assert resample_by_depth(source["ratios"], 30) == pytest.approx(list(LLAMA2_7B_ON_30), rel=1e-5)


@pytest.mark.parametrize("row", ["abl-owl-layer", "abl-uniform-module", "abl-gradient-layer", "abl-gradient-module",
                                 "abl-llama7b-skew"])
def test_the_sampling_rows_are_valid_ows_train_runs_on_smollm2(row, tmp_path):
    cm = _load()
    from bench.runner import train_argv

    from ows.cli.train import parse
    from ows.memory.estimate import layer_matrix_sizes

    args = cm.parse_args(["--steps", "150", "--batch-size", "16", "--methods", row, "--output-dir", str(tmp_path)])
    argv = train_argv(args, row, 0, tmp_path / "run", tmp_path / "profile.json")
    script, config, _ = parse(argv)
    assert script.method == "ows" and config.num_active_layers == 2 and config.sample_interval == 10
    assert config.outside_optimizer == "galore"  # the product's defaults, not the recorded main table's adamw
    smollm2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
               "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
    sizes = layer_matrix_sizes(smollm2) if config.sampling_granularity == "module" else None
    config.check_for(30, [0.01] * 30, sizes)
    assert (config.sampling_strategy, config.sampling_granularity) == {
        "abl-owl-layer": ("owl", "layer"), "abl-uniform-module": ("uniform", "module"),
        "abl-gradient-layer": ("gradient", "layer"), "abl-gradient-module": ("gradient", "module"),
        "abl-llama7b-skew": ("weights", "layer")}[row]
