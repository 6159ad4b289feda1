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
    assert (settings["per_device_train_batch_size"], settings["max_seq_length"], settings["num_active_layers"],
            settings["rank"]) == (4, 64, 2, 4)
    assert settings["gradient_checkpointing"] and settings["loss_chunk_size"] == 1024  # ows train's default loss
    assert settings["lora_r"] == 4
    code, out, _ = _run("memory", str(tiny_model_dir), "--methods", "ows", "--num_active_layers", "2", "--json")  # no file
    settings = json.loads(out)["estimates"][0]["settings"]
    assert settings["per_device_train_batch_size"] == 1 and settings["loss_chunk_size"] == 0


def test_flags_override_the_file_and_old_spellings_still_work(tiny_model_dir, tmp_path):
    config = _train_yaml(tmp_path / "run.yaml", tiny_model_dir, tmp_path / "out")
    code, out, err = _run("memory", str(config), "--methods", "ows", "--batch-size", "2", "--max_seq_length", "32",
                          "--no-train-embeddings", "--json")
    assert code == 0, err
    settings = json.loads(out)["estimates"][0]["settings"]
    assert (settings["per_device_train_batch_size"], settings["max_seq_length"], settings["train_embeddings"]) == \
        (2, 32, False)


def test_analyze_measures_the_profile_that_train_measures_from_the_same_file(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    config = _train_yaml(tmp_path / "run.yaml", tiny_model_dir, out, sampling_strategy="owl")  # a run that profiles
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


def test_the_training_argument_names_kept_for_torch_free_commands_are_transformers_own():
    import dataclasses

    from transformers import TrainingArguments

    from ows.cli.arguments import TRAINING_ARGUMENT_FIELDS

    assert TRAINING_ARGUMENT_FIELDS == {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def test_memory_with_a_train_config_loads_no_torch(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "run.yaml"
    config.write_text("model: llama-2-7b\nlearning_rate: 3e-4\nmax_steps: 10\nper_device_train_batch_size: 2\n")
    code = (f"import sys\nfrom ows.cli import main\nassert main(['memory', {str(config)!r}, '--json']) == 0\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_switches_stand_alone_before_a_positional_and_lists_take_one_word_each(tiny_model_dir, tmp_path):
    code, out, err = _run("memory", "--json", "--gradient-checkpointing", str(tiny_model_dir), "--num_active_layers", "2")
    assert code == 0, err
    assert json.loads(out)["estimates"][0]["settings"]["gradient_checkpointing"]
    from ows.cli.eval import parse

    command = parse(["--task-file", "a.yaml", str(tiny_model_dir), "--task-file", "b.yaml", "--json"])
    assert command.model == str(tiny_model_dir) and command.options.task_file == ["a.yaml", "b.yaml"]
    command = parse(["--compare", "a.json", "b.json"])
    assert command.options.compare == ["a.json", "b.json"] and command.model is None


def test_none_for_a_list_field_and_mappings_and_merge_keys_in_yaml(tmp_path):
    from ows.cli.train import parse

    config = tmp_path / "c.yaml"
    config.write_text("base: &b {max_steps: 10}\nlr_scheduler_kwargs: {num_cycles: 2}\n"
                      "model: m\ndataset: d.jsonl\noutput_dir: o\n")
    with pytest.raises(Exception, match="unknown field 'base'"):
        parse([str(config)])
    config.write_text("model: m\ndataset: d.jsonl\noutput_dir: o\nlr_scheduler_kwargs: {num_cycles: 2}\n")
    script, config_, training = parse([str(config), "--target_modules", "none"])
    assert training["lr_scheduler_kwargs"] == {"num_cycles": 2} and config_.target_modules is None
    merged = tmp_path / "m.yaml"
    merged.write_text("model: m\ndataset: d.jsonl\noutput_dir: o\n<<: {rank: 8, max_steps: 10}\n")
    _, config_, training = parse([str(merged)])
    assert config_.rank == 8 and training["max_steps"] == 10


def test_trl_and_llamafactory_names_are_aliases_of_ours(tmp_path, tiny_model_dir):
    from ows.cli.train import parse

    config = tmp_path / "lf.yaml"
    config.write_text("model_name_or_path: m\ndataset: d.jsonl\noutput_dir: o\ncutoff_len: 256\nlora_target: q_proj\n"
                      "chat_template: none\nval_size: 0.1\n")
    script, _, _ = parse([str(config), "--lora_rank", "8"])
    assert (script.model, script.max_seq_length, script.lora_target_modules, script.template, script.eval_split_ratio,
            script.lora_r) == ("m", 256, ["q_proj"], "none", 0.1, 8)
    script, _, _ = parse(["--model_name_or_path", "m", "--dataset", "d.jsonl", "--output_dir", "o", "--max_length", "64",
                          "--dataset_text_field", "content", "--early_stopping_patience", "2", "--eval_split_ratio",
                          "0.1", "--eval_strategy", "steps", "--save_strategy", "steps", "--load_best_model_at_end",
                          "true"])
    assert (script.model, script.max_seq_length, script.dataset_text_field, script.early_stopping_patience) == \
        ("m", 64, "content", 2)
    assert script.given >= {"model", "max_seq_length"}  # a memory plan keeps them as it keeps our own names
    config.write_text(f"model_name_or_path: {tiny_model_dir}\ndataset: d.jsonl\nmax_length: 128\nnum_active_layers: 2\n")
    code, out, err = _run("memory", str(config), "--methods", "ows", "--json")  # every command that has the field
    assert code == 0, err
    assert json.loads(out)["estimates"][0]["settings"]["max_seq_length"] == 128


@pytest.mark.parametrize("argv, yaml, message", [
    (["--max_seq_length", "128", "--cutoff_len", "256"], "",
     "--max_seq_length 128 and --cutoff_len 256 name the same setting (max_seq_length) with different values"),
    ([], "max_seq_length: 128\nmax_length: 256\n",
     "max_seq_length=128 and max_length=256 name the same setting (max_seq_length) with different values: keep one"),
    (["--learnig_rate", "1e-4"], "", "unrecognized arguments: --learnig_rate 1e-4 (did you mean '--learning_rate'?)"),
    (["--num_actve_layers", "3"], "", "(did you mean '--num_active_layers'?)"),
    ([], "lora_targt_modules: [q_proj]\n", "unknown field 'lora_targt_modules' (did you mean 'lora_target_modules'?)"),
    ([], "warmup_step: 5\n", "unknown field 'warmup_step' (did you mean 'warmup_steps'?)"),
    (["--attn_implementation", "flash_attention_3"], "", "attn_implementation='flash_attention_3' is unknown"),
    (["--template", "missing/chat.jinja"], "", "template='missing/chat.jinja' does not exist: check the path"),
    (["--template", "llama3"], "", "template='llama3' is unknown: use auto (the tokenizer's chat template), alpaca, "
                                   "none, or the path of a Jinja chat template file"),
    (["--early_stopping_patience", "2"], "", "early_stopping_patience=2 needs an evaluation set: set eval_dataset or "
                                             "eval_split_ratio"),
    (["--early_stopping_patience", "2", "--eval_split_ratio", "0.1"], "",
     "early_stopping_patience=2 needs evaluations during training: set eval_strategy"),
    (["--early_stopping_patience", "2", "--eval_split_ratio", "0.1", "--eval_strategy", "steps"], "",
     "early_stopping_patience=2 needs load_best_model_at_end true"),
])
def test_names_and_controls_bad_input_is_one_line_before_any_work(tmp_path, argv, yaml, message):
    config = tmp_path / "c.yaml"
    config.write_text("model: m\ndataset: d.jsonl\n" + yaml)
    code, out, err = _run("train", str(config), "--output_dir", str(tmp_path / "out"), *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


def test_flash_attention_2_is_refused_in_one_line_when_flash_attn_is_not_installed(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    code, _, err = _run("train", "--model", "m", "--dataset", "d.jsonl", "--output_dir", str(tmp_path / "o"),
                        "--attn_implementation", "flash_attention_2")
    assert code == 2 and "needs the flash-attn package, which is not installed" in err.strip().splitlines()[-1]


def test_train_help_lists_every_field_without_importing_transformers():
    import subprocess
    import sys

    code = ("import sys, contextlib, io\nfrom ows.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out): assert main(['train', '--help']) == 0\n"
            "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'imported'\n"
            "print(out.getvalue())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    from ows.cli.arguments import TRAINING_ARGUMENT_FIELDS

    for name in ("num_active_layers", "template", "attn_implementation", *TRAINING_ARGUMENT_FIELDS):
        assert f"--{name}" in result.stdout, name
    assert "--model_name_or_path" in result.stdout and "ows train configs/demo.yaml" in result.stdout
