"""A run folder knows which run wrote each checkpoint, its lock is never written through a link, and the base model's
folder is never an output folder."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")
from conftest import tiny_train_argv
from ows.cli import main  # noqa: E402
from ows.errors import UsageError  # noqa: E402
from ows.integrations.checkpoint import MARKER, resolve_resume  # noqa: E402

ROWS = [{"prompt": f"{a} + 1 =", "completion": f" {a + 1}"} for a in range(20)]


def _args(model, data, out, *extra):
    return tiny_train_argv(model, data, out, "--lr_scheduler_type", "constant", *extra)


def _run(argv, patch=None):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), (patch or contextlib.nullcontext()):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _killed_after_checkpoint(step):
    """Stop the run (as a kill would) right after checkpoint-``step`` is marked complete."""
    from unittest import mock

    from ows.integrations.reliability import CheckpointMarker

    original = CheckpointMarker.on_save

    def on_save(self, args, state, control, **kwargs):
        original(self, args, state, control, **kwargs)
        if state.global_step == step:
            raise KeyboardInterrupt

    return mock.patch.object(CheckpointMarker, "on_save", on_save)


def _lr(checkpoint):
    return json.loads((checkpoint / MARKER).read_text())["run"]["learning_rate"]


def test_latest_resumes_this_runs_checkpoint_never_an_overwritten_runs(tiny_model_dir, tmp_path, data):
    from safetensors.torch import load_file

    out = tmp_path / "ow"
    code, log = _run(_args(tiny_model_dir, data, out, "--learning_rate", "0.01"))  # run A: checkpoints 2 and 4
    assert code == 0, log
    b = _args(tiny_model_dir, data, out, "--learning_rate", "0.002", "--overwrite_output_dir", "true")
    code, log = _run(b, _killed_after_checkpoint(2))  # run B, killed after its checkpoint-2
    assert code == 130, log
    assert _lr(out / "checkpoint-2") == 0.002 and _lr(out / "checkpoint-4") == 0.01  # A's checkpoint-4 is newer
    code, log = _run([*b, "--resume_from_checkpoint", "latest"])
    assert code == 0, log
    assert f"resuming from {out / 'checkpoint-2'}" in log and "another run wrote it (learning_rate=0.01" in log
    assert _lr(out / "checkpoint-4") == 0.002  # A's folder was replaced by B's own, not mixed into it
    reference = tmp_path / "b"
    code, log = _run(_args(tiny_model_dir, data, reference, "--learning_rate", "0.002"))
    assert code == 0, log
    resumed, whole = load_file(str(out / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)  # B's model, bit for bit, not A's


def _checkpoint(out, step, run):
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / MARKER).write_text(json.dumps({"step": step, "run": run}))
    return folder


def test_latest_picks_the_newest_checkpoint_of_this_run_only(tmp_path):
    a, b = {"learning_rate": 0.01, "fused_step": False}, {"learning_rate": 0.002, "fused_step": False}
    _checkpoint(tmp_path, 2, b)
    _checkpoint(tmp_path, 4, a)
    assert resolve_resume("latest", tmp_path, b) == str(tmp_path / "checkpoint-2")
    assert resolve_resume("latest", tmp_path, a) == str(tmp_path / "checkpoint-4")
    assert resolve_resume("latest", tmp_path, {**b, "fused_step": True}) is None  # another run's: start over
    assert resolve_resume(str(tmp_path / "checkpoint-4"), tmp_path, b) == str(tmp_path / "checkpoint-4")  # a path


def test_a_foreign_checkpoint_folder_is_removed_before_this_run_saves_there(tmp_path):
    from ows.integrations.reliability import CheckpointMarker

    mine, other = {"learning_rate": 0.002}, {"learning_rate": 0.01}
    _checkpoint(tmp_path, 2, mine)
    (_checkpoint(tmp_path, 4, other) / "rng_state_1.pth").write_bytes(b"x")
    marker = CheckpointMarker(mine)
    args = SimpleNamespace(output_dir=str(tmp_path))
    for step in (2, 4):
        marker.on_step_end(args, SimpleNamespace(global_step=step, is_world_process_zero=True),
                           SimpleNamespace(should_save=True))
    assert (tmp_path / "checkpoint-2").is_dir() and not (tmp_path / "checkpoint-4").exists()


def test_a_linked_lock_file_is_refused_and_its_target_untouched(tiny_model_dir, tmp_path, data):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    victim.chmod(0o600)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".ows.lock").symlink_to(victim)
    code, log = _run(_args(tiny_model_dir, data, out, "--max_steps", "1"))
    assert code == 2 and "its lock file .ows.lock is a symbolic link" in log
    assert victim.read_text() == "keep\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == [".ows.lock"]


def test_the_lock_refuses_a_link_made_after_the_early_check(tmp_path):
    from ows.recipe.run_folder import RunLock

    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    lock = RunLock(tmp_path / "out")
    (tmp_path / "out").mkdir()
    lock.path.symlink_to(victim)
    from unittest import mock

    with mock.patch("ows.recipe.run_folder.check_lock_file"), pytest.raises(UsageError, match="its lock file .ows.lock is a symbolic link"):
        lock.acquire()  # O_NOFOLLOW: the open itself refuses the link
    assert victim.read_text() == "keep\n"


def test_output_dir_holding_the_base_model_by_any_path_is_refused(tiny_model_dir, tmp_path):
    from ows.recipe.checks import check_not_base_folder

    real = tmp_path / "real"
    shutil.copytree(tiny_model_dir, real)
    (tmp_path / "alias").symlink_to(real)
    with pytest.raises(UsageError, match="holds the base model"):
        check_not_base_folder(tmp_path / "alias", str(real), "real")  # the same folder through a link
    with pytest.raises(UsageError, match="holds the base model"):
        check_not_base_folder(tmp_path / "x" / ".." / "real", str(real), "real")
    links = tmp_path / "links"  # a model folder whose files are links into another folder
    links.mkdir()
    for path in real.iterdir():
        (links / path.name).symlink_to(path)
    with pytest.raises(UsageError, match="holds the base model"):
        check_not_base_folder(real, str(links), "links")
    check_not_base_folder(tmp_path / "elsewhere", str(real), "real")  # another folder is fine
    check_not_base_folder(real / "finetuned", str(real), "real")  # so is a new folder inside it


def test_resuming_with_fused_step_switched_is_refused_and_latest_does_not_resume_it(tiny_model_dir, tmp_path, data):
    out = tmp_path / "out"
    code, log = _run(_args(tiny_model_dir, data, out, "--max_steps", "2"))
    assert code == 0, log
    (out / "model.safetensors").unlink()
    fused = _args(tiny_model_dir, data, out, "--max_steps", "2", "--fused_step", "true", "--overwrite_output_dir",
                  "true")
    code, log = _run([*fused, "--resume_from_checkpoint", str(out / "checkpoint-2")])
    assert code == 2 and "was written with fused_step=False, this run has True" in log
    assert not (out / "model.safetensors").exists()
    assert resolve_resume("latest", out, {**json.loads((out / "checkpoint-2" / MARKER).read_text())["run"],
                                          "fused_step": True}) is None
    assert Path(resolve_resume("latest", out, json.loads((out / "checkpoint-2" / MARKER).read_text())["run"])).name \
        == "checkpoint-2"


def test_ows_files_replace_a_link_and_never_write_through_it(tmp_path):
    from ows.integrations.plots import plot_loss_curve
    from ows.jsonio import write_json

    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    for name in ("results.json", "loss_curve.png"):
        (tmp_path / name).symlink_to(victim)
    write_json({"a": 1}, tmp_path / "results.json")
    written = plot_loss_curve([1, 2], [1.0, 0.5], tmp_path / "loss_curve.png")
    assert victim.read_text() == "keep\n"
    assert not (tmp_path / "results.json").is_symlink() and json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert written is None or not (tmp_path / "loss_curve.png").is_symlink()
