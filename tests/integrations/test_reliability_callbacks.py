import torch
import pytest

pytest.importorskip("transformers")
from transformers import TrainerCallback  # noqa: E402

from ows.integrations.checkpoint import is_complete, latest_complete_checkpoint, mark_complete, resolve_resume  # noqa: E402
from ows.integrations.reliability import CheckpointMarker, NonFiniteGuard  # noqa: E402
from test_hf import make_trainer  # noqa: E402


class PoisonGrads(TrainerCallback):
    """Puts a NaN into one gradient before the optimizer steps listed."""

    def __init__(self, steps):
        self.steps = set(steps)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            next(p for p in model.parameters() if p.grad is not None).grad[0].fill_(float("nan"))


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_nonfinite_steps_are_skipped(tmp_path):
    trainer, _ = make_trainer(tmp_path, max_steps=6)
    guard = NonFiniteGuard("skip", max_consecutive=3)
    trainer.add_callback(PoisonGrads({2, 4}))
    trainer.add_callback(guard)
    snapshots = {}
    trainer.add_callback(type("Snap", (TrainerCallback,), {
        "on_step_end": lambda self, a, s, c, model=None, **k: snapshots.__setitem__(s.global_step, weights(model))})())
    trainer.train()
    assert guard.skipped == 2 and not guard.failed and trainer.state.global_step == 6
    for skipped in (3, 5):  # global_step after the poisoned steps 2 and 4: weights unchanged
        assert all(torch.equal(snapshots[skipped][k], snapshots[skipped - 1][k]) for k in snapshots[skipped])
    assert not all(torch.equal(snapshots[2][k], snapshots[1][k]) for k in snapshots[2])
    assert all(torch.isfinite(v).all() for v in snapshots[6].values())


def test_consecutive_nonfinite_steps_stop_without_a_new_checkpoint(tmp_path):
    trainer, _ = make_trainer(tmp_path, max_steps=12, save_strategy="steps", save_steps=2)
    guard = NonFiniteGuard("skip", max_consecutive=2)
    trainer.add_callback(PoisonGrads({6, 7, 8}))  # the 2nd bad step ends on a save step (8)
    trainer.add_callback(guard)
    trainer.add_callback(CheckpointMarker({"test": True}))
    trainer.train()
    assert guard.failed and trainer.state.global_step == 8
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert latest_complete_checkpoint(out) == out / "checkpoint-6"


def test_a_run_whose_every_step_was_skipped_fails(tmp_path):
    trainer, _ = make_trainer(tmp_path, max_steps=2)
    guard = NonFiniteGuard("skip", max_consecutive=5)
    trainer.add_callback(PoisonGrads({0, 1}))
    trainer.add_callback(guard)
    trainer.train()
    assert guard.skipped == 2 and guard.failed  # nothing was trained: not a finished run


def test_stop_policy_stops_at_the_first_bad_step(tmp_path):
    trainer, _ = make_trainer(tmp_path, max_steps=6)
    guard = NonFiniteGuard("stop")
    trainer.add_callback(PoisonGrads({1}))
    trainer.add_callback(guard)
    trainer.train()
    assert guard.failed and trainer.state.global_step == 2


def test_checkpoint_resolution(tmp_path):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    mark_complete(tmp_path / "checkpoint-2", 2, {})
    mark_complete(tmp_path / "checkpoint-4", 4, {})
    (tmp_path / "checkpoint-4" / "ows_complete.json").write_text("{trunc")  # torn marker: incomplete
    assert not is_complete(tmp_path / "checkpoint-6")
    assert resolve_resume("latest", tmp_path) == str(tmp_path / "checkpoint-2")
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("latest", tmp_path / "empty") is None
    with pytest.raises(ValueError, match="incomplete"):
        resolve_resume(str(tmp_path / "checkpoint-6"), tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint-9"):
        resolve_resume(str(tmp_path / "checkpoint-9"), tmp_path)
    with pytest.raises(ValueError, match="nan_policy"):
        NonFiniteGuard("ignore")
