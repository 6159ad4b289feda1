"""Kill training with SIGKILL at chosen points, resume, and require bit-identical final weights."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

RUNNER = Path(__file__).with_name("fault_runner.py")
# 20 rows in batches of 4: 5 steps an epoch, so the 12 steps end inside an epoch (a resume from the final
# checkpoint then lands mid-epoch, where the Trainer would run one step too many).
ROWS = [{"prompt": f"What is {a} + {b}?", "completion": f" {a + b}"} for a in range(5) for b in range(4)]
STEPS, INTERVAL, SAVE_EVERY = 12, 3, 2


def run(fault, args, cwd):
    env = dict(os.environ, OWS_LOG_LEVEL="WARNING", PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, str(RUNNER), fault, "--", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def train_args(model_dir, data, out):
    return ["--model", str(model_dir), "--dataset", str(data), "--output_dir", str(out), "--max_steps", str(STEPS),
            "--per_device_train_batch_size", "4", "--num_active_layers", "2", "--sample_interval", str(INTERVAL),
            "--rank", "4", "--update_proj_gap", "4", "--calibration_samples", "2", "--calibration_seq_len", "32",
            "--save_strategy", "steps", "--save_steps", str(SAVE_EVERY), "--logging_steps", "1",
            "--heldout_generate", "0", "--learning_rate", "0.01", "--lr_scheduler_type", "constant", "--seed", "3",
            "--report_to", "none"]


def kill_points(seed=0):
    """One kill inside a period, one on a period boundary, one during a checkpoint write (random picks), one
    right after the final checkpoint is complete, and one while the fine-tuned model is being written."""
    rng = random.Random(seed)
    inside = rng.choice([s for s in range(1, STEPS) if s % INTERVAL and s % SAVE_EVERY])
    boundary = rng.choice([s for s in range(INTERVAL, STEPS, INTERVAL) if s % SAVE_EVERY == 0])
    during_save = rng.choice(range(SAVE_EVERY * 2, STEPS, SAVE_EVERY))
    return [f"step:{inside}", f"step:{boundary}", f"save:{during_save}", f"saved:{STEPS}", "final"]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    result = run("none", train_args(tiny_model_dir, data, root / "out"), root)
    assert result.returncode == 0, result.stderr[-2000:]
    return data, load_file(root / "out" / "model.safetensors")


# The default suite kills at the three around the checkpoints and the final save (each failed before its fix,
# docs/RELIABILITY.md). The kill inside a period (the SIGTERM test below and tests/test_gradient_resume.py stop runs
# there too) and the period boundary (killed in tests/test_gradient_resume.py's module-granularity test) run with
# the slow ones below.
DEFAULT_POINTS = kill_points()[2:]


@pytest.mark.parametrize("fault", DEFAULT_POINTS)
def test_killed_run_resumes_bit_identically(tiny_model_dir, tmp_path, reference, fault):
    data, expected = reference
    out = tmp_path / "out"
    killed = run(fault, train_args(tiny_model_dir, data, out), tmp_path)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "model.safetensors").exists()  # no final model from a dead run
    resumed = run("none", train_args(tiny_model_dir, data, out) + ["--resume_from_checkpoint", "latest"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    kind, _, step = fault.partition(":")
    step = int(step or STEPS)
    # newest checkpoint written completely before the kill
    complete = step - SAVE_EVERY if kind == "save" else step - step % SAVE_EVERY
    if complete:
        assert f"resuming from {out / f'checkpoint-{complete}'}" in resumed.stdout
    else:  # killed before the first complete checkpoint: 'latest' starts over
        assert "resuming from" not in resumed.stdout
    assert ("is incomplete" in resumed.stderr) == (kind == "save")  # a torn checkpoint is detected and skipped
    got = load_file(out / "model.safetensors")
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].equal(expected[name]), name
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == STEPS and not (out / f"checkpoint-{STEPS + 1}").exists()
    assert not list(out.glob(".ows-final-*"))  # no staging folder left by a kill during the final save


def test_sigterm_saves_a_checkpoint_and_the_run_continues_identically(tiny_model_dir, tmp_path, reference):
    data, expected = reference
    out = tmp_path / "out"
    stopped = run("term:6", train_args(tiny_model_dir, data, out), tmp_path)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "stopped by SIGTERM at step 7" in stopped.stdout and "--resume_from_checkpoint latest" in stopped.stdout
    assert (out / "checkpoint-7" / "ows_complete.json").is_file()  # saved at the next step boundary, off schedule
    assert not (out / "model.safetensors").exists()
    resumed = run("none", train_args(tiny_model_dir, data, out) + ["--resume_from_checkpoint", "latest"], tmp_path)
    assert resumed.returncode == 0 and f"resuming from {out / 'checkpoint-7'}" in resumed.stdout
    got = load_file(out / "model.safetensors")
    assert all(got[name].equal(expected[name]) for name in expected)


# Every other kill point of the 12-step run (slow: about 20 s each).
MORE = [f for f in [f"step:{s}" for s in range(1, STEPS)] + [f"save:{s}" for s in range(SAVE_EVERY, STEPS + 1, SAVE_EVERY)]
        + [f"saved:{s}" for s in range(SAVE_EVERY, STEPS, SAVE_EVERY)] if f not in DEFAULT_POINTS]


@pytest.mark.slow
@pytest.mark.parametrize("fault", MORE)
def test_more_kill_points(tiny_model_dir, tmp_path, reference, fault):
    test_killed_run_resumes_bit_identically(tiny_model_dir, tmp_path, reference, fault)


@pytest.fixture(scope="module")
def reference_nf4(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("bitsandbytes")
    root = tmp_path_factory.mktemp("reference-nf4")
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    result = run("none", train_args(tiny_model_dir, data, root / "out") + ["--frozen_quantization", "nf4"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    return data, load_file(root / "out" / "model.safetensors")


def test_a_killed_run_with_nf4_frozen_layers_resumes_bit_identically(tiny_model_dir, tmp_path, reference_nf4):
    data, expected = reference_nf4
    out = tmp_path / "out"
    args = train_args(tiny_model_dir, data, out) + ["--frozen_quantization", "nf4"]
    killed = run("step:7", args, tmp_path)  # period 2: layers of periods 0 and 1 left, their exact copies kept
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = run("none", args + ["--resume_from_checkpoint", "latest"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {out / 'checkpoint-6'}" in resumed.stdout
    got = load_file(out / "model.safetensors")
    assert got.keys() == expected.keys() and all(got[k].equal(expected[k]) for k in expected)
