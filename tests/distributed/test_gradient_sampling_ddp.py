"""sampling_strategy gradient under 2-process DDP (gloo): every rank measures the same scores and draws the same
blocks, whole layers or single weights, with and without the fused step, although each rank trains on other data."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
from launch import torchrun  # noqa: E402

WORKER = Path(__file__).with_name("gradient_worker.py")


def launch(tmp_path, **spec):
    (tmp_path / "spec.json").write_text(json.dumps({"out": str(tmp_path), "steps": 8, **spec}))
    done = torchrun([str(WORKER), str(tmp_path / "spec.json")])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [torch.load(tmp_path / f"result-rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("granularity, fused", [("layer", False), ("module", True)])
def test_every_rank_draws_the_same_blocks_from_the_same_scores(tmp_path, granularity, fused):
    r0, r1 = launch(tmp_path, granularity=granularity, fused=fused)
    assert r0["schedule"] == r1["schedule"] and len(r0["schedule"]) == 8
    assert r0["state"] == r1["state"]  # scores, visits, sums: bit-identical
    scored = [s for s in r0["state"]["scores"] if s is not None]
    assert len(scored) >= 6 and len(set(scored)) == len(scored)  # measured, not a constant
    visits = r0["state"]["visits"]
    assert all(v >= 1 for v in visits) and max(visits) > 1  # every block visited, then the scores drew again
    for name, value in r0["weights"].items():
        assert torch.equal(value, r1["weights"][name]), name


def test_the_measurements_are_summed_over_ranks_before_they_score(tmp_path):
    # No DDP: each rank trains its own replica on its own data, so the local gradients and weights differ; the
    # sampler's all-reduce still gives both ranks the same scores and draws.
    r0, r1 = launch(tmp_path, granularity="layer", fused=False, ddp=False)
    assert any(not torch.equal(value, r1["weights"][name]) for name, value in r0["weights"].items())
    assert r0["state"] == r1["state"] and r0["schedule"] == r1["schedule"]
