"""benchmarks/forgetting_dial.py: the interpolation, and A = 0 / A = 1 giving the base model and the run."""

from __future__ import annotations

import json

import pytest
import torch
from _scripts import load_script


def test_interpolation_goes_from_the_base_to_the_run():
    dial = load_script("forgetting_dial.py")
    base, tuned = {"w": torch.zeros(3), "n": torch.tensor([1])}, {"w": torch.tensor([2.0, 4.0, -2.0]), "n": torch.tensor([7])}
    assert torch.equal(dial.interpolate(base, tuned, 0.5)["w"], torch.tensor([1.0, 2.0, -1.0]))
    assert torch.equal(dial.interpolate(base, tuned, 1.0)["w"], tuned["w"])
    assert torch.equal(dial.interpolate(base, tuned, 0.5)["n"], tuned["n"])  # not a float: kept


def test_a_run_at_a_1_and_0_scores_as_the_run_and_its_base(tiny_model_dir, tmp_path):
    import ows

    dial = load_script("forgetting_dial.py")
    run = tmp_path / "run"
    result = ows.train(ows.ScriptArguments(model=str(tiny_model_dir), dataset="reasoning-gym:chain_sum",
                                           num_train_examples=32, num_heldout_examples=8, heldout_generate=0,
                                           calibration_samples=2, calibration_seq_len=32),
                       ows.OWSConfig(num_active_layers=2, sample_interval=2, rank=4),
                       {"output_dir": str(run), "max_steps": 3, "per_device_train_batch_size": 4,
                        "learning_rate": 1e-2, "save_strategy": "no", "report_to": "none"})
    out = tmp_path / "dial"
    assert dial.main([str(run), "--alphas", "0.5,1", "--forgetting-samples", "2", "--forgetting-seq-len", "32",
                      "--output-dir", str(out)]) == 0
    points = {p["alpha"]: p for p in json.loads((out / "results.json").read_text())["results"][0]["points"]}
    assert points[1.0]["heldout_answer_loss"] == pytest.approx(result.after["heldout_answer_loss"], rel=1e-5)
    assert points[0.0]["heldout_answer_loss"] == pytest.approx(result.before["heldout_answer_loss"], rel=1e-5)
    assert (out / "table.md").is_file()
    with pytest.raises(SystemExit):
        dial.parse_args([str(run), "--alphas", "3", "--output-dir", str(out)])
