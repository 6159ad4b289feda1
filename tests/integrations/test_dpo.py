"""Preference tuning: OWS in TRL's DPOTrainer (the example, on the tiny model) and ows train --task dpo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
from ows.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests" / "cli"))
import dpo_trl  # noqa: E402
from test_train import fast  # noqa: E402


def test_the_example_grows_the_preference_margin_on_a_tiny_model(tiny_model_dir, tmp_path):
    # 16 pairs seen 8 times: a random tiny model learns the preference on them (not beyond them in 16 steps)
    result = dpo_trl.main(["--model", str(tiny_model_dir), "--steps", "16", "--batch-size", "8", "--lr", "1e-2",
                           "--num-active-layers", "2", "--sample-interval", "4", "--rank", "4", "--pairs", "16",
                           "--output-dir", str(tmp_path / "out")])
    margins = result["margins"]
    assert len(margins) == 16 and abs(margins[0]) < 1e-3  # step 1: policy == reference
    assert sum(margins[-4:]) / 4 > 0.3 > sum(margins[:4]) / 4
    assert result["draws"] == 4 and result["visits"]  # 4 periods of 2 layers' worth of single weights (the default)


def _pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ows_train_task_dpo(tiny_model_dir, tmp_path, capsys):
    pairs = dpo_trl.preference_pairs(16, 0)
    data = _pairs(tmp_path / "pairs.jsonl", pairs)
    evaluation = _pairs(tmp_path / "eval.jsonl", pairs[:8])  # the margin on pairs it trained on
    out = tmp_path / "run"
    code = main(["train", *fast(tiny_model_dir, out, "--task", "dpo", "--dataset", str(data), "--max_steps", "16",
                                "--learning_rate", "1e-2", "--lr_scheduler_type", "constant", "--warmup_steps", "0",
                                "--per_device_train_batch_size", "8", "--eval_dataset", str(evaluation),
                                "--sample_interval", "4", "--method", "ows", "--sampling_strategy", "uniform")])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["eval"]["eval_rewards/margins"] > 0.3 and results["eval"]["eval_rewards/accuracies"] > 0.5
    assert (out / "model.safetensors").is_file() and json.loads((out / "schedule.json").read_text())["schedule"]


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "a", "chosen": "b"}], "row 1 is missing field 'rejected'"),
    ([{"prompt": "a", "chosen": "b", "rejected": 3}], "row 1 field 'rejected' is int"),
    ([{"prompt": "a", "chosen": " ", "rejected": "c"}], "row 1 field 'chosen' is empty"),
    ([{"prompt": "a", "chosen": "b", "rejected": "b"}], "every row's chosen equals its rejected"),
    ([{"prompt": [{"role": "user", "content": "a"}], "chosen": "b", "rejected": "c"}], "mixes strings and message lists"),
    ([{"prompt": [{"role": "human", "content": "a"}], "chosen": [{"role": "assistant", "content": "b"}],
       "rejected": [{"role": "assistant", "content": "c"}]}], "has role 'human'"),
])
def test_bad_preference_rows_are_one_line_errors_before_anything_is_written(tiny_model_dir, tmp_path, capsys,
                                                                          rows, message):
    data = _pairs(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "run"
    assert main(["train", *fast(tiny_model_dir, out, "--task", "dpo", "--dataset", str(data))]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--task", "ppo"], "task='ppo' is unknown: use one of sft, dpo"),
    (["--task", "dpo"], "task=dpo needs preference rows and dataset='reasoning-gym:chain_sum'"),
    (["--task", "dpo", "--dataset", "x.jsonl", "--dpo_beta", "0"], "dpo_beta=0.0 is invalid"),
    (["--task", "dpo", "--dataset", "x.jsonl", "--packing", "true"], "packing=true does not apply to task=dpo"),
])
def test_bad_dpo_settings(tiny_model_dir, tmp_path, capsys, flags, message):
    assert main(["train", *fast(tiny_model_dir, tmp_path / "run", *flags)]) == 2
    assert message in capsys.readouterr().err


def test_pairs_whose_prompt_fills_max_seq_length_are_counted_before_loading(tiny_model_dir, caplog):
    from transformers import AutoTokenizer

    from ows.data.preference import check_prompt_lengths

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = {"prompt": "The quick brown fox jumps over the lazy dog. " * 8, "chosen": " a", "rejected": " b"}
    short = {"prompt": "Hi", "chosen": " a", "rejected": " b"}
    chat = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    check_prompt_lengths([short, chat, long], tokenizer, 32, "d.jsonl")
    assert "1 of 3 pairs have a prompt of max_seq_length=32 tokens or more" in caplog.text
    with pytest.raises(ValueError, match="every prompt is at least max_seq_length=32 tokens long"):
        check_prompt_lengths([long, long], tokenizer, 32, "d.jsonl")
