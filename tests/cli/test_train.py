import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from ows.cli import main  # noqa: E402
from ows.cli.train import parse  # noqa: E402
from ows.cli.arguments import DEMO  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ROWS = {
    "alpaca": [{"instruction": f"Add {a} and {b}.", "input": "", "output": str(a + b)} for a in range(6) for b in range(4)],
    "prompt_completion": [{"prompt": f"What is {a} + {b}?", "completion": f" {a + b}"} for a in range(6) for b in range(4)],
    "messages": [{"messages": [{"role": "user", "content": f"{a} + {b}?"}, {"role": "assistant", "content": str(a + b)}]}
                 for a in range(6) for b in range(4)],
    "text": [{"text": f"The sum of {a} and {b} is {a + b}."} for a in range(6) for b in range(4)],
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fast(tiny_model_dir, out, *extra):
    """Flags for a few-second run on the tiny model (the demo's data, schedule and learning rate)."""
    return [
        "--model", str(tiny_model_dir), "--output_dir", str(out), "--max_steps", "4",
        "--dataset", "reasoning-gym:chain_sum", "--num_train_examples", "1280", "--learning_rate", "3e-4",
        "--lr_scheduler_type", "cosine", "--warmup_steps", "5",
        "--per_device_train_batch_size", "4", "--num_active_layers", "2", "--sample_interval", "2",
        "--rank", "4", "--calibration_samples", "2", "--calibration_seq_len", "32", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--max_seq_length", "256", "--heldout_generate", "4",
        *extra,
    ]


def test_demo_yaml_is_the_builtin_default():
    assert parse([]) == parse([str(ROOT / "configs" / "demo.yaml")])
    script, config, training = parse([])
    assert script.model == DEMO["model"] and config.num_active_layers == DEMO["num_active_layers"]
    assert training["max_steps"] == DEMO["max_steps"] and config.seed == training["seed"] == 0


def test_yaml_with_flag_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: m\ndataset: d.jsonl\noutput_dir: o\nlearning_rate: 1\nnum_active_layers: 3\nbf16: false\n")
    script, config, training = parse([str(cfg), "--num_active_layers", "4", "--target_modules", "q_proj,v_proj"])
    assert config.num_active_layers == 4 and config.target_modules == ["q_proj", "v_proj"]
    assert training["learning_rate"] == 1.0 and isinstance(training["learning_rate"], float)
    assert training["bf16"] is False and script.dataset == "d.jsonl"


def test_help_lists_every_field(capsys):
    assert main(["train", "--help"]) == 0  # as every command: help, then exit code 0
    text = capsys.readouterr().out
    for flag in ("--num_active_layers", "--learning_rate", "--dataset_format", "--gradient_accumulation_steps"):
        assert flag in text
    assert "ows train configs/demo.yaml" in text


@pytest.mark.parametrize("fmt, suffix", [("alpaca", "jsonl"), ("prompt_completion", "csv"), ("messages", "jsonl"),
                                         ("text", "parquet"), ("alpaca", "disk")])
def test_every_format_trains_and_saves_a_loadable_model(tiny_model_dir, tmp_path, fmt, suffix):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    data = tmp_path / f"data.{suffix}"
    if suffix == "jsonl":
        write_jsonl(data, ROWS[fmt])
    elif suffix == "csv":
        Dataset.from_list(ROWS[fmt]).to_csv(str(data))
    elif suffix == "disk":
        Dataset.from_list(ROWS[fmt]).save_to_disk(str(data))
    else:
        Dataset.from_list(ROWS[fmt]).to_parquet(str(data))
    out = tmp_path / "out"
    code = main(["train", *fast(tiny_model_dir, out, "--dataset", str(data), "--eval_split_ratio", "0.2")])
    assert code == 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "ows_config.json",
                 "schedule.json", "results.json", "ows_run.json"):
        assert (out / name).is_file(), name
    assert not (out / "profile.json").exists()  # the default draws uniformly: no outlier profile is measured
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 4 and "eval_loss" in results["eval"]
    if fmt in ("alpaca", "prompt_completion"):
        assert results["before"]["heldout_answer_loss"] > 0
    schedule = json.loads((out / "schedule.json").read_text())
    assert [s for s, _ in schedule["schedule"]] == [0, 2]
    AutoModelForCausalLM.from_pretrained(out)


@pytest.mark.parametrize("method", ["ows", "ows-fullrank", "lisa", "galore", "full", "lora"])
def test_every_method_from_the_same_command(tiny_model_dir, tmp_path, method):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS["prompt_completion"])
    out = tmp_path / "out"
    assert main(["train", *fast(tiny_model_dir, out, "--dataset", str(data), "--method", method)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == method
    assert (out / "schedule.json").exists() == (method in ("ows", "ows-fullrank", "lisa"))
    saved = json.loads((out / "ows_config.json").read_text())
    assert saved["method"] == method
    if method == "lisa":
        assert saved["sampling_strategy"] == "uniform" and saved["use_galore"] is False


def test_reasoning_gym_data_with_heldout_metrics_and_reuse_of_profile(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "rg"
    args = fast(tiny_model_dir, out, "--dataset", "reasoning-gym:chain_sum", "--num_train_examples", "32",
                "--num_heldout_examples", "8", "--sampling_strategy", "owl")
    assert main(["train", *args]) == 0
    printed = capsys.readouterr().out
    assert "heldout_answer_loss" in printed and "heldout_exact_match" in printed
    summary = [line for line in printed.splitlines() if line.startswith("outlier profile of 4 layers: mean ratio")]
    assert len(summary) == 1 and "ratio(%)" not in printed  # one line; the per-layer table only at DEBUG
    results = json.loads((out / "results.json").read_text())
    assert set(results["before"]) >= {"heldout_answer_loss", "heldout_exact_match"}
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    again = tmp_path / "rg2"
    code = main(["train", *fast(tiny_model_dir, again, "--dataset", "reasoning-gym:chain_sum", "--num_train_examples",
                                "32", "--num_heldout_examples", "8", "--sampling_strategy", "owl",
                                "--profile", str(out / "profile.json"))])
    assert code == 0
    assert json.loads((again / "profile.json").read_text()) == json.loads((out / "profile.json").read_text())


def test_resume_from_checkpoint(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS["alpaca"])
    out = tmp_path / "out"
    args = fast(tiny_model_dir, out, "--dataset", str(data), "--save_strategy", "steps", "--save_steps", "2")
    assert main(["train", *args]) == 0
    assert (out / "checkpoint-2").is_dir()
    assert main(["train", *args, "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 4


def test_tensorboard_logging_offline(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    data = write_jsonl(tmp_path / "d.jsonl", ROWS["text"])
    out = tmp_path / "out"
    args = fast(tiny_model_dir, out, "--dataset", str(data), "--report_to", "tensorboard")
    monkeypatch.chdir(tmp_path)  # wherever this transformers version puts its log folder, it is under here
    assert main(["train", *args]) == 0
    assert list(tmp_path.rglob("events.out.tfevents.*"))


def test_packing(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS["text"])
    out = tmp_path / "out"
    assert main(["train", *fast(tiny_model_dir, out, "--dataset", str(data), "--packing", "true",
                                "--max_seq_length", "32")]) == 0


def bad_cases(tiny_model_dir, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", ROWS["alpaca"])
    missing_col = write_jsonl(tmp_path / "missing.jsonl", [{"instruction": "x"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    other = tmp_path / "other_profile.json"
    other.write_text(json.dumps({"ratios": [0.1] * 7, "threshold": 5.0}))
    unknown_key = tmp_path / "unknown.yaml"
    unknown_key.write_text(f"model: {tiny_model_dir}\ngamma: 5\n")
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text(f"model: {tiny_model_dir}\nnum_active_layers: five\n")
    return {
        "missing model": (["--model", str(tmp_path / "nope")], "model="),
        "unknown format": (["--dataset", str(good), "--dataset_format", "sharegpt"], "dataset_format"),
        "missing columns": (["--dataset", str(missing_col), "--dataset_format", "alpaca"], "output"),
        "empty dataset": (["--dataset", str(empty)], "no rows"),
        "missing dataset": (["--dataset", str(tmp_path / "nope.jsonl")], "nope.jsonl"),
        "gamma too large": (["--dataset", str(good), "--num_active_layers", "9"], "num_active_layers=9"),
        "profile of another model": (["--dataset", str(good), "--sampling_strategy", "owl", "--profile", str(other)],
                                     "has 7 layers"),
        "unknown yaml key": ([str(unknown_key), "--dataset", str(good)], "gamma"),
        "wrong yaml type": ([str(wrong_type), "--dataset", str(good)], "num_active_layers"),
        "bad flag value": (["--dataset", str(good), "--max_steps", "many"], "--max_steps"),
        "unknown method": (["--dataset", str(good), "--method", "dora"], "method='dora'"),
        "negative loss chunk": (["--dataset", str(good), "--loss_chunk_size", "-5"], "loss_chunk_size=-5"),
    }


BAD_CASES = ["missing model", "unknown format", "missing columns", "empty dataset", "missing dataset",
             "gamma too large", "profile of another model", "unknown yaml key", "wrong yaml type", "bad flag value",
             "unknown method", "negative loss chunk"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_model_dir, tmp_path, capsys, case):
    extra, expected = bad_cases(tiny_model_dir, tmp_path)[case]
    out = tmp_path / "never"
    config = [a for a in extra if a.endswith(".yaml")]
    flags = [a for a in extra if not a.endswith(".yaml")]
    base = fast(tiny_model_dir, out)
    if any(a == "--model" for a in flags):
        i = base.index("--model")
        base = base[:i] + base[i + 2:]
    code = main(["train", *config, *base, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert expected in err[-1] and err[-1].startswith("ows train: error:")
    assert not out.exists()


def test_output_dir_holding_a_different_run(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS["alpaca"])
    out = tmp_path / "out"
    assert main(["train", *fast(tiny_model_dir, out, "--dataset", str(data))]) == 0
    before = sorted(p.name for p in out.iterdir())
    code = main(["train", *fast(tiny_model_dir, out, "--dataset", str(data), "--learning_rate", "0.1")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "holds a different run (learning_rate 0.0003 there, 0.1 now)" in err
    assert "use a new --output_dir, or pass --overwrite_output_dir true" in err
    assert sorted(p.name for p in out.iterdir()) == before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert main(["train", *fast(tiny_model_dir, stranger, "--dataset", str(data))]) == 2


def test_flags_without_a_config_file_start_from_the_fields_defaults_not_the_demo(tmp_path):
    script, config, training = parse(["--model", "m", "--dataset", "d.jsonl", "--output_dir", str(tmp_path)])
    assert "max_steps" not in training and "save_strategy" not in training and "lr_scheduler_type" not in training
    assert script.max_seq_length == 512 and config.sample_interval == 50 and config.num_active_layers == 5
    script, config, training = parse([])  # neither model nor dataset: the demo
    assert training["max_steps"] == 60 and script.max_seq_length == 128 and config.sample_interval == 10


PAPER = dict(method="ows", sampling_strategy="owl", sampling_temperature=1.0, num_active_layers=5, sample_interval=50,
             outlier_threshold=5.0, use_galore=True, rank=128, update_proj_gap=100, galore_scale=1.0, proj_type="std",
             train_embeddings=True, train_lm_head=True, train_final_norm=True, outside_optimizer="adamw",
             sampling_granularity="layer",
             fused_step=False, frozen_quantization="none", max_seq_length=512, learning_rate=3e-4,
             per_device_train_batch_size=16, num_train_epochs=1, gradient_checkpointing=True)


def test_the_papers_recipe_is_one_config_file_away_whatever_the_defaults():
    script, config, training = parse([str(ROOT / "configs" / "paper.yaml"), "--model", "m", "--dataset", "d.jsonl",
                                      "--output_dir", "o"])
    values = {**vars(script), **config.to_dict(), **training}
    assert {k: values[k] for k in PAPER} == PAPER
    text = (ROOT / "configs" / "paper.yaml").read_text()
    assert all(f"\n{key}:" in text for key in PAPER if key != "method")  # spelled out, not left to the defaults


def readme_results_keys():
    """The keys README's Results line says results.json holds."""
    import re

    line = next(p for p in (ROOT / "README.md").read_text().split("\n- ") if "`results.json` keys:" in p)
    return re.findall(r"`([a-z_]+)`", line.split("keys:", 1)[1])


def test_results_json_holds_the_loss_curve_and_every_key_the_readme_lists(tiny_model_dir, tmp_path):
    import torch

    data = write_jsonl(tmp_path / "d.jsonl", ROWS["prompt_completion"])
    out = tmp_path / "out"
    assert main(["train", *fast(tiny_model_dir, out, "--dataset", str(data), "--eval_split_ratio", "0.2")]) == 0
    results = json.loads((out / "results.json").read_text())
    keys = readme_results_keys()
    assert {"loss_curve", "train_loss", "swap_seconds", "svd_seconds"} <= set(keys)
    missing = [k for k in keys if k not in results and not (k.startswith("peak_rss") and torch.cuda.is_available())]
    assert not missing, missing
    assert [step for step, _ in results["loss_curve"]] == [1, 2, 3, 4]  # --save_strategy no: the loss reaches the disk
    assert results["final_loss"] == results["loss_curve"][-1][1] and results["train_loss"] > 0
    assert results["svd_seconds"] > 0 and results["swap_seconds"] == 0.0


def test_early_stopping_patience_stops_a_run_whose_eval_loss_stops_improving(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS["prompt_completion"] * 2)
    out = tmp_path / "out"
    argv = fast(tiny_model_dir, out, "--dataset", str(data), "--eval_split_ratio", "0.25", "--max_steps", "30",
                "--learning_rate", "0.3", "--lr_scheduler_type", "constant", "--warmup_steps", "0",
                "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
                "--load_best_model_at_end", "true", "--early_stopping_patience", "2", "--heldout_generate", "0")
    assert main(["train", *argv]) == 0
    assert json.loads((out / "results.json").read_text())["steps"] < 30


def test_a_profile_the_strategy_does_not_use_is_said_not_silently_dropped(tiny_model_dir, tmp_path, capsys):
    small = ("--max_steps", "1", "--num_train_examples", "64", "--heldout_generate", "0")
    first = tmp_path / "owl"
    assert main(["train", *fast(tiny_model_dir, first, *small, "--sampling_strategy", "owl")]) == 0
    out = tmp_path / "uniform"
    assert main(["train", *fast(tiny_model_dir, out, *small, "--profile", str(first / "profile.json"))]) == 0
    said = capsys.readouterr().err
    assert "is not used: sampling_strategy 'uniform' of method ows draws without an outlier profile" in said
    assert not (out / "profile.json").exists()
