"""One options convention: every command reads the same YAML file with the same field names."""

import contextlib
import io
import json

import pytest

from ows.cli import main

pytest.importorskip("transformers")


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _train_yaml(path, model, out, **extra):
    """A config written for ows train: train-only keys, a YAML 1.1 '3e-4' (text to YAML), calibration fields."""
    fields = {"model": str(model), "dataset": "reasoning-gym:chain_sum", "output_dir": str(out), "max_steps": 2,
              "learning_rate": "3e-4", "per_device_train_batch_size": 4, "max_seq_length": 64,
              "num_active_layers": 2, "sample_interval": 2, "rank": 4, "gradient_checkpointing": "true",
              "calibration_samples": 2, "calibration_seq_len": 32, "calibration_seed": 5, "num_train_examples": 16,
              "num_heldout_examples": 4, "heldout_generate": 0, "report_to": "none", "save_strategy": '"no"',
              "lora_r": 4, **extra}
    path.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
    return path


def test_memory_reads_a_train_config_as_the_run_it_describes(tiny_model_dir, tmp_path):
    config = _train_yaml(tmp_path / "run.yaml", tiny_model_dir, tmp_path / "out")
    code, out, err = _run("memory", str(config), "--methods", "ows", "--json")
    assert code == 0, err
    settings = json.loads(out)["estimates"][0]["settings"]
    assert (settings["batch_size"], settings["seq_len"], settings["num_active_layers"], settings["rank"]) == (4, 64, 2, 4)
    assert settings["gradient_checkpointing"] and settings["chunked_loss"]  # ows train's default loss
    assert settings["lora_rank"] == 4
    code, out, _ = _run("memory", str(tiny_model_dir), "--methods", "ows", "--num_active_layers", "2", "--json")  # no file
    settings = json.loads(out)["estimates"][0]["settings"]
    assert settings["batch_size"] == 1 and not settings["chunked_loss"]


def test_flags_override_the_file_and_old_spellings_still_work(tiny_model_dir, tmp_path):
    config = _train_yaml(tmp_path / "run.yaml", tiny_model_dir, tmp_path / "out")
    code, out, err = _run("memory", str(config), "--methods", "ows", "--batch-size", "2", "--max_seq_length", "32",
                          "--no-train-embeddings", "--json")
    assert code == 0, err
    settings = json.loads(out)["estimates"][0]["settings"]
    assert (settings["batch_size"], settings["seq_len"], settings["train_embeddings"]) == (2, 32, False)


def test_analyze_measures_the_profile_that_train_measures_from_the_same_file(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    config = _train_yaml(tmp_path / "run.yaml", tiny_model_dir, out)
    code, _, err = _run("analyze", str(config), "--profile_dir", str(tmp_path / "analysis"), "--json")
    assert code == 0, err
    analyzed = json.loads((tmp_path / "analysis" / "profile.json").read_text())
    code, _, err = _run("train", str(config))
    assert code == 0, err
    trained = json.loads((out / "profile.json").read_text())
    assert analyzed["ratios"] == trained["ratios"] and analyzed["num_tokens"] == trained["num_tokens"] == 64
    assert analyzed["extra"]["seed"] == trained["extra"]["seed"] == 5
    assert analyzed["model_name"] == trained["model_name"] == tiny_model_dir.name


@pytest.mark.parametrize("command", ["analyze", "memory", "eval"])
def test_a_key_no_command_knows_is_refused(tiny_model_dir, tmp_path, command):
    config = _train_yaml(tmp_path / "run.yaml", tiny_model_dir, tmp_path / "out", gamma=5)
    code, out, err = _run(command, str(config), "--tasks", "perplexity") if command == "eval" else _run(command, str(config))
    assert code == 2 and out == ""
    assert "unknown field 'gamma'" in err and len(err.strip().splitlines()) == 1


def test_duplicate_keys_and_flag_prefixes_are_refused(tiny_model_dir, tmp_path):
    config = tmp_path / "dup.yaml"
    config.write_text(f"model: {tiny_model_dir}\nrank: 4\nrank: 8\n")
    code, _, err = _run("memory", str(config))
    assert code == 2 and "key 'rank' appears twice (lines 2 and 3)" in err
    code, _, err = _run("memory", str(tiny_model_dir), "--num_active", "3")
    assert code == 2 and "unrecognized arguments: --num_active 3" in err
