"""The output folder of a run: one run at a time, a moved folder resumes, files readable by others."""

import contextlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from conftest import tiny_train_argv
from ows.cli import main

pytest.importorskip("transformers")
ROWS = [{"prompt": f"{a} + 1 =", "completion": f" {a + 1}"} for a in range(16)]


def _args(model, data, out, *extra):
    return tiny_train_argv(model, data, out, "--logging_steps", "1", *extra)


def _run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        return main(argv), err.getvalue()


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_runs_lock_is_not(tiny_model_dir, tmp_path, data):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from ows.recipe.run_folder import RunLock\n"
        f"lock = RunLock(Path({str(out)!r})); lock.acquire(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = _run(_args(tiny_model_dir, data, out))
        assert code == 2 and f"is in use by another ows train (pid {holder.pid})" in err
        assert sorted(p.name for p in out.iterdir()) == [".ows.lock"]  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    code, err = _run(_args(tiny_model_dir, data, out))  # the killed holder's lock file is still there
    assert code == 0, err
    assert (out / "model.safetensors").is_file()


def test_a_moved_run_folder_resumes_and_its_files_have_the_usual_modes(tiny_model_dir, tmp_path, data):
    out = tmp_path / "out"
    owl = ("--sampling_strategy", "owl")  # with an outlier profile, whose file is checked too
    code, err = _run(_args(tiny_model_dir, data, out, "--max_steps", "2", *owl))
    assert code == 0, err
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    (moved / "model.safetensors").unlink()
    code, err = _run(_args(tiny_model_dir, data, moved, "--max_steps", "2", *owl, "--resume_from_checkpoint", "latest"))
    assert code == 0, err  # output_dir is not part of the run's settings
    usual = 0o666 & ~_umask()
    for name in ("model.safetensors", "ows_run.json", "results.json", "profile.json", "schedule.json",
                 "ows_config.json", "config.json"):
        assert stat.S_IMODE(os.stat(moved / name).st_mode) == usual, name


def _umask():
    current = os.umask(0)
    os.umask(current)
    return current


def test_an_attempt_that_failed_before_its_first_step_does_not_block_the_corrected_rerun(tiny_model_dir, tmp_path,
                                                                                          data):
    import ows

    class FailsAtStart(ows.RunCallback):  # as an out-of-memory first step would
        def on_train_begin(self, args, state, control, **kwargs):
            raise RuntimeError("CUDA out of memory")

    out = tmp_path / "out"
    script = dict(dataset=str(data), calibration_samples=2, calibration_seq_len=32, heldout_generate=0)
    training = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, save_strategy="no",
                    report_to="none")
    with pytest.raises(RuntimeError, match="out of memory"):
        ows.train(ows.ScriptArguments(model=str(tiny_model_dir), **script), ows.OWSConfig(num_active_layers=2, sampling_strategy="owl"),
                  training, callbacks=[FailsAtStart()])
    assert (out / "ows_run.json").is_file() and (out / "profile.json").is_file()
    other = tmp_path / "other-model"  # the corrected rerun: another model, a smaller batch
    shutil.copytree(tiny_model_dir, other)
    said = []
    result = ows.train(ows.ScriptArguments(model=str(other), **script), ows.OWSConfig(num_active_layers=2, sampling_strategy="owl"),
                       dict(training, per_device_train_batch_size=2), echo=said.append)
    assert result.status == "finished"
    assert any("holds an attempt that stopped before its first step (model " in line and "starting over" in line
               for line in said), said
    assert json.loads((out / "profile.json").read_text())["model_name"] == "other-model"  # measured again


def test_a_finished_run_trains_longer_when_resumed_with_more_steps(tiny_model_dir, tmp_path, data):
    out = tmp_path / "out"
    code, err = _run(_args(tiny_model_dir, data, out, "--max_steps", "2"))
    assert code == 0, err
    code, err = _run(_args(tiny_model_dir, data, out, "--max_steps", "4"))  # not resumed: refused, with the ways forward
    assert code == 2 and "holds this run with max_steps 2 there, 4 now: pass --resume_from_checkpoint latest to " \
                         "train it longer, or use a new --output_dir, or pass --overwrite_output_dir true" in err
    out_text = io.StringIO()
    with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(io.StringIO()):
        assert main(_args(tiny_model_dir, data, out, "--max_steps", "4", "--resume_from_checkpoint", "latest")) == 0
    assert "continuing the run in" in out_text.getvalue() and "(max_steps 2 there, 4 now)" in out_text.getvalue()
    assert json.loads((out / "results.json").read_text())["steps"] == 4
    code, err = _run(_args(tiny_model_dir, data, out, "--max_steps", "3", "--resume_from_checkpoint", "latest"))
    assert code == 2 and "holds a different run (max_steps 4 there, 3 now): use a new --output_dir, or pass " \
                         "--overwrite_output_dir true to replace it" in err


def test_the_same_command_rerun_on_its_stopped_run_continues_it(tiny_model_dir, tmp_path, data):
    import ows

    class KilledAtStep3(ows.RunCallback):  # after checkpoint-2 was written, as a SIGKILL or a lost machine would
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("killed")

    out = tmp_path / "out"
    script = dict(dataset=str(data), heldout_generate=0)
    training = dict(output_dir=str(out), max_steps=4, save_steps=2, per_device_train_batch_size=4, report_to="none")
    with pytest.raises(RuntimeError, match="killed"):
        ows.train(ows.ScriptArguments(model=str(tiny_model_dir), **script), ows.OWSConfig(num_active_layers=2),
                  training, callbacks=[KilledAtStep3()])
    assert (out / "checkpoint-2").is_dir() and not (out / "results.json").exists()
    said = []
    result = ows.train(ows.ScriptArguments(model=str(tiny_model_dir), **script), ows.OWSConfig(num_active_layers=2),
                       training, echo=said.append)
    assert result.status == "finished" and result.steps == 4
    assert any(line.startswith(f"resuming from {out / 'checkpoint-2'}") and "stopped before its end" in line
               for line in said), said
