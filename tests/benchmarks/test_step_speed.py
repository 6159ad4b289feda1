"""benchmarks/step_speed.py and fused_speed.py: rows side by side on a tiny model, results written."""

from __future__ import annotations

import json

import pytest
from _scripts import load_script

pytest.importorskip("transformers")


def test_step_speed_times_every_row_in_turn_and_writes_ratios(tiny_model_dir, tmp_path, capsys):
    speed = load_script("step_speed.py")
    assert speed.main(["--model", str(tiny_model_dir), "--steps", "3", "--batch-size", "2", "--seq-len", "8",
                       "--gamma", "2", "--interval", "2", "--output-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert set(result["seconds"]) == {"ows", "ows-before", "lora"}
    assert all(len(times) == 3 and min(times) > 0 for times in result["seconds"].values())
    assert result["ratio_to_first"]["ows"] == 1.0
    with pytest.raises(SystemExit):
        speed.parse_args(["--rows", "ows,nope"])
    assert "--rows 'nope' is unknown" in capsys.readouterr().err


def test_fused_speed_gives_the_same_weights_as_the_unfused_step(tiny_model_dir, tmp_path):
    fused = load_script("fused_speed.py")
    assert fused.main(["--model", str(tiny_model_dir), "--steps", "2", "--batch-size", "2", "--seq-len", "8",
                       "--rank", "4", "--output-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["max_weight_difference"] < 1e-5 and len(result["seconds"]["fused"]) == 2
