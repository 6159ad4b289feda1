"""sampling_strategy gradient under SIGKILL: killed inside a period and on a period boundary, resumed from the newest
complete checkpoint, the run ends with bit-identical weights and records the schedule that ran.

Reuses the fault-injection runner and the run settings of tests/reliability/test_fault_injection.py (12 steps,
a period of 3, a checkpoint every 2; a 4-layer model at gamma 2, so periods 0 and 1 visit every layer and the
draws of periods 2 and 3 come from the measured scores)."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent / "reliability"))
from safetensors.torch import load_file  # noqa: E402
from test_fault_injection import INTERVAL, ROWS, SAVE_EVERY, run, train_args  # noqa: E402

GRADIENT = ["--sampling_strategy", "gradient", "--sampling_granularity", "layer"]
MODULE = ["--sampling_strategy", "gradient", "--sampling_granularity", "module"]


def finished(root, model_dir, extra):
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    result = run("none", train_args(model_dir, data, root / "out") + extra, root)
    assert result.returncode == 0, result.stderr[-2000:]
    out = root / "out"
    return data, load_file(out / "model.safetensors"), json.loads((out / "schedule.json").read_text())


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    return finished(tmp_path_factory.mktemp("gradient"), tiny_model_dir, GRADIENT)


def kill_and_resume(model_dir, tmp_path, data, fault, extra):
    out = tmp_path / "out"
    args = train_args(model_dir, data, out) + extra
    killed = run(fault, args, tmp_path)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = run("none", args + ["--resume_from_checkpoint", "latest"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    step = int(fault.partition(":")[2])
    assert f"resuming from {out / f'checkpoint-{step - step % SAVE_EVERY}'}" in resumed.stdout
    return load_file(out / "model.safetensors"), json.loads((out / "schedule.json").read_text())


def assert_same(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].equal(expected[name]), name


# Inside period 1 (from checkpoint-4), on the boundary of period 2, and right after the final checkpoint (restored,
# not trained: the schedule comes from the sampler state in its optimizer.pt). The last two are slow (about 20 s each).
@pytest.mark.parametrize("fault", ["step:5", pytest.param("step:6", marks=pytest.mark.slow),
                                   pytest.param("saved:12", marks=pytest.mark.slow)])
def test_a_killed_gradient_run_resumes_bit_identically(tiny_model_dir, tmp_path, reference, fault):
    assert (int(fault.partition(":")[2]) % INTERVAL == 0) == (fault != "step:5")
    data, expected, schedule = reference
    assert len(schedule["schedule"]) == 4 and {i for _, a in schedule["schedule"][:2] for i in a} == {0, 1, 2, 3}
    weights, resumed_schedule = kill_and_resume(tiny_model_dir, tmp_path, data, fault, GRADIENT)
    assert_same(weights, expected)
    assert resumed_schedule == schedule  # the periods before the kill come from the saved sampler state


def test_a_killed_module_granularity_gradient_run_resumes_bit_identically(tiny_model_dir, tmp_path_factory, tmp_path):
    data, expected, schedule = finished(tmp_path_factory.mktemp("module"), tiny_model_dir, MODULE)
    assert len(schedule["blocks"]) == 28
    weights, resumed_schedule = kill_and_resume(tiny_model_dir, tmp_path, data, "step:6", MODULE)
    assert_same(weights, expected)
    assert resumed_schedule == schedule
