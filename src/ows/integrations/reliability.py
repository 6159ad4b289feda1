"""Trainer callbacks that keep long runs safe: completeness markers, graceful stop, non-finite guard."""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ..jsonio import give_usual_mode
from ..optim.head_grad import projected_grad, projected_grads
from .checkpoint import MARKER, mark_complete, other_run
from .hf import unwrap_optimizer

logger = logging.getLogger(__name__)


def nonfinite_gradients(model: torch.nn.Module) -> list[str]:
    """Names of parameters whose gradient (or projected gradient, :mod:`ows.optim.head_grad`) holds NaN or inf
    (empty when all are finite)."""
    def bad(p: torch.Tensor) -> bool:
        low = getattr(projected_grad(p), "low", None)
        return any(g is not None and not torch.isfinite(g).all() for g in (p.grad, low))

    return [name for name, p in model.named_parameters() if bad(p)]


class CheckpointMarker(TrainerCallback):
    """After the Trainer has written ``checkpoint-N`` completely, give its files the usual modes and mark it complete
    with this run's settings (see :mod:`ows.integrations.checkpoint`); before the Trainer saves into a
    ``checkpoint-N`` folder that this run did not write (another run's, or a torn one), remove that folder, so
    that no file of it is mixed into this run's checkpoint. Add it after the callbacks that decide whether to save.
    """

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = run

    def _clear_foreign(self, args: Any, state: Any, control: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if control.should_save and state.is_world_process_zero and folder.is_dir() and not folder.is_symlink() \
                and (why := other_run(folder, self.run)) is not None:
            if getattr(args, "world_size", 1) > 1:  # other ranks may be writing their files into it already
                logger.info("%s is not this run's (%s): its marker is removed before this run saves there", folder, why)
                (folder / MARKER).unlink(missing_ok=True)
                return
            logger.info("removing %s before this run saves its own there (%s)", folder, why)
            shutil.rmtree(folder)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._clear_foreign(args, state, control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._clear_foreign(args, state, control)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            for path in [folder, *folder.rglob("*")]:  # safetensors and temporary files are written 0600
                give_usual_mode(path)
            mark_complete(folder, state.global_step, self.run)


class GracefulStop(TrainerCallback):
    """SIGINT / SIGTERM: finish the current step, save a checkpoint, stop. ``signal_name`` tells why."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.step: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint after this step, then stopping (again to abort)",
                       self.signal_name)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.signal_name is not None and self.step is None:
            self.step = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class NonFiniteGuard(TrainerCallback):
    """Skips optimizer steps whose gradients hold NaN/inf; stops after ``max_consecutive`` in a row.

    ``policy='stop'`` stops at the first one. A stopped run saves no checkpoint, so the last good
    checkpoint stays the newest. ``failed`` is set when the run was stopped for this reason, or when every
    step of the run was skipped. With the
    fused step, a decoder-layer parameter with a non-finite gradient was already left out inside
    backward (its name is in ``optimizer.fused.nonfinite``); the rest of the step is skipped here.
    """

    def __init__(self, policy: str = "skip", max_consecutive: int = 5) -> None:
        if policy not in ("skip", "stop"):
            raise ValueError(f"nan_policy={policy!r} is unknown: use skip or stop")
        if max_consecutive < 1:
            raise ValueError(f"max_bad_steps={max_consecutive!r} is invalid: must be >= 1")
        self.policy = policy
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0
        self.failed = False

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        bad = nonfinite_gradients(model) if model is not None else []
        fused = getattr(unwrap_optimizer(kwargs.get("optimizer")), "fused", None)
        bad += list(fused.nonfinite) if fused is not None else []  # skipped inside backward already
        if not bad:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.skipped += 1
        for p in model.parameters():  # the optimizer skips parameters without gradients
            p.grad = None
        for head in projected_grads(model):
            head.take()
        logger.warning("step %d: non-finite gradient in %s (and %d more): step skipped (%d in a row)",
                       state.global_step, bad[0], len(bad) - 1, self.consecutive)
        if self.policy == "stop" or self.consecutive >= self.max_consecutive:
            self.failed = True
            control.should_training_stop = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.failed:
            control.should_save = False

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A run whose every step was skipped trained nothing: it fails too (it must not report a saved model)."""
        if self.skipped and self.skipped >= state.global_step:
            self.failed = True
