"""benchmarks/bench/child.py: a run with quantized frozen layers also records held-out loss and forgetting in the quantized model."""

from __future__ import annotations

import json

import pytest
from _scripts import load_script


def _child():
    return load_script("bench/child.py")


def _spec(tmp_path, model_dir, quantization):
    argv = ["--model", str(model_dir), "--dataset", "reasoning-gym:basic_arithmetic", "--method", "ows",
            "--num_train_examples", "4", "--num_heldout_examples", "4", "--heldout_generate", "0",
            "--max_seq_length", "64", "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--num_active_layers", "1", "--sample_interval", "1", "--rank", "4", "--update_proj_gap", "1",
            "--sampling_strategy", "uniform", "--frozen_quantization", quantization, "--report_to", "none",
            "--save_strategy", "no", "--seed", "0", "--output_dir", str(tmp_path / "run")]
    spec = {"argv": argv, "measure_before": False, "forgetting_samples": 2, "forgetting_seq_len": 32,
            "bench_json": str(tmp_path / "bench.json")}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_quantized_frozen_layers_add_the_loss_of_the_model_training_saw(tiny_model_dir_64, tmp_path):
    assert _child().child_main(str(_spec(tmp_path, tiny_model_dir_64, "nf4"))) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    exact, quantized = bench["heldout_answer_loss"], bench["heldout_answer_loss_quantized"]
    assert exact > 0 and quantized > 0 and quantized != exact  # NF4 changes every frozen weight
    assert bench["forgetting_ppl"] > 1 and bench["forgetting_ppl_quantized"] > 1
    assert bench["forgetting_ppl_quantized"] != bench["forgetting_ppl"]


@pytest.mark.slow
def test_exact_runs_record_no_quantized_loss(tiny_model_dir_64, tmp_path):
    assert _child().child_main(str(_spec(tmp_path, tiny_model_dir_64, "none"))) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["heldout_answer_loss"] > 0 and "heldout_answer_loss_quantized" not in bench
    assert "forgetting_ppl_quantized" not in bench
