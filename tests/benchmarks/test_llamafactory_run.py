"""benchmarks/llamafactory_run.py: the data, config and log parsing around LLaMA-Factory's own CLI."""

from __future__ import annotations

import pytest
from _scripts import load_script


def _load():
    return load_script("llamafactory_run.py")


def test_rows_render_our_prompt_completion_and_end_token():
    lf = _load()
    rows = lf.alpaca_rows([{"prompt": "Question: 2+2=?\nAnswer:", "completion": " 4", "task": "chain_sum"}], "<eos>")
    assert rows == [{"instruction": "Question: 2+2=?\nAnswer:", "input": "", "output": " 4<eos>"}]


def test_config_matches_the_quick_rows_settings(tmp_path):
    lf = _load()
    args = lf.parse_args(["--python", __import__("sys").executable, "--steps", "12", "--batch-size", "4"])
    config = lf.train_config(args, "/models/m", tmp_path / "data", tmp_path / "model")
    assert config["max_steps"] == 12 and config["per_device_train_batch_size"] == 4
    assert config["warmup_steps"] == 1 and config["lr_scheduler_type"] == "cosine"
    assert config["learning_rate"] == lf.LEARNING_RATES["badam"]
    assert (config["use_badam"], config["badam_switch_interval"], config["badam_switch_mode"]) == (True, 50, "descending")


def test_losses_are_read_from_its_log_lines():
    lf = _load()
    log = ("noise\n{'loss': '3.906', 'grad_norm': '6.961', 'learning_rate': '0.0001', 'epoch': '0.05'}\n"
           " 40%|x| {'loss': 3.19, 'grad_norm': 5.4}\n{'train_runtime': 12.0}\n")
    assert lf.losses(log) == [3.906, 3.19]


def test_a_missing_interpreter_is_refused_in_one_line(capsys):
    lf = _load()
    with pytest.raises(SystemExit):
        lf.parse_args(["--python", "/nowhere/python"])
    assert "--python '/nowhere/python' does not exist" in capsys.readouterr().err
