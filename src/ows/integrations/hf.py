"""Hugging Face ``Trainer`` integration: an optimizer plus a callback that runs the layer schedule.

Works with ``transformers.Trainer`` and subclasses such as TRL's ``SFTTrainer``; the LR scheduler
from ``TrainingArguments`` wraps the returned optimizer as usual.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .. import distributed
from ..config import OWSConfig
from ..controller import OWSController, create_ows
from ..layers import input_embeddings, input_gradient_stopped
from ..optim.galore_adamw import GaLoreAdamW
from .metrics import run_metrics

logger = logging.getLogger(__name__)


class OWSCallback(TrainerCallback):
    """Forwards the optimizer-step boundaries of a ``Trainer`` run to the controller's ``begin_step``.

    ``on_step_begin`` fires once per optimizer step (not per micro-batch), with
    ``state.global_step`` = optimizer steps done, so resumed runs continue the same schedule (the
    ``gradient`` sampler's state travels in the optimizer's state dict, which the Trainer saves with every
    checkpoint and loads before training resumes). The schedule that ran is the controller's
    (``callback.controller.schedule``). The callback also
    prepares the model for DDP when the Trainer is built and checks the input gradients under
    gradient checkpointing.
    """

    def __init__(self, controller: OWSController) -> None:
        self.controller = controller
        self.reporters: list[Any] = []  # the Trainer's tracker callbacks (report_to), set by attach_trainer

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        # TrainingArguments start torch.distributed; the Trainer wraps the model in DDP only in train().
        stateful = getattr(self.controller.sampler, "stateful", False)
        if fsdp_requested(args) and (stateful or self.controller.granularity == "module"):
            option = "sampling_strategy='gradient'" if stateful else "sampling_granularity='module'"
            raise ValueError(f"{option} is not supported with FSDP: use DDP or one process, or sample whole layers "
                             "with a static strategy")
        if not fsdp_requested(args):
            distributed.setup_ddp(self.controller.model, self.controller.layers, self.controller.optimizer.fused)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: nn.Module | None = None, **kwargs: Any
    ) -> None:
        model_ready = distributed.is_sharded(self.controller.model) or hasattr(self.controller.model, "_ows_layer_sync")
        if distributed.is_distributed() and not model_ready:
            raise RuntimeError(
                f"{distributed.world_size()} processes but the model is neither sharded (FSDP2) nor prepared for DDP: "
                "pass the OWS callback to the Trainer constructor (callbacks=[callback]) so that it runs before training"
            )
        checkpointing = getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False)
        if checkpointing and model is not None:
            _ensure_input_grads(model, _reentrant_checkpointing(args))
        check_attached(self.controller.optimizer, args)
        self.controller.begin_step(state.global_step)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.controller.begin_step(state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Send OWS's metrics (:mod:`ows.integrations.metrics`) to the trackers, in a log event of their own
        (the console and ``log_history`` keep the Trainer's usual lines)."""
        if not self.reporters:
            return
        metrics = run_metrics(self.controller, unwrap_optimizer(self.controller.optimizer), state.global_step)
        for reporter in self.reporters:
            reporter.on_log(args, state, control, logs=dict(metrics))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.controller.residency is not None:  # evaluate and save the exact model, not the quantized one
            self.controller.residency.materialize()


def _reentrant_checkpointing(args: TrainingArguments) -> bool:
    kwargs = getattr(args, "activation_checkpointing_kwargs", None) or getattr(args, "gradient_checkpointing_kwargs", None)
    if kwargs and "use_reentrant" in kwargs:
        return bool(kwargs["use_reentrant"])
    import transformers

    return int(transformers.__version__.split(".")[0]) < 5  # transformers 5 defaults to non-reentrant


def _ensure_input_grads(model: nn.Module, reentrant: bool = True) -> None:
    """Reentrant checkpointing gives no gradients to blocks whose input needs none; make the input need one.

    Applies when the input embeddings are frozen or cut off from autograd (``train_embeddings`` off).
    Non-reentrant checkpointing needs no such input, so the backward still stops at the lowest sampled layer.
    """
    embeddings = input_embeddings(model)
    stopped = input_gradient_stopped(model)
    if stopped and not reentrant and hasattr(model, "disable_input_require_grads"):
        # transformers turns input gradients on with every checkpointing; they are not needed here
        model.disable_input_require_grads()
        logger.info("train_embeddings off: the backward stops at the lowest sampled layer")
        return
    constant = stopped or (embeddings is not None and not any(p.requires_grad for p in embeddings.parameters()))
    if constant and reentrant and getattr(model, "_require_grads_hook", None) is None \
            and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
        logger.info("gradient checkpointing with frozen embeddings: enabled input gradients")


def restore_sampler_state(trainer: Any, checkpoint: str) -> bool:
    """Load a stateful sampler's state (``gradient`` sampling) from a checkpoint's ``optimizer.pt`` without the rest of
    the optimizer (a run whose final checkpoint is restored instead of trained records its schedule from it); True
    when one was loaded."""
    from pathlib import Path

    from ..importance import STATE_KEY

    owned = [c for c in trainer.callback_handler.callbacks if isinstance(c, OWSCallback)]
    path = Path(checkpoint) / "optimizer.pt"
    if not owned or not getattr(owned[0].controller.sampler, "stateful", False) or not path.is_file():
        return False
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(STATE_KEY)
    if saved is not None:
        owned[0].controller.sampler.load_state_dict(saved)
    return saved is not None


def fsdp_requested(args: Any | None = None) -> bool:
    """Whether the run shards with FSDP (``accelerate launch`` with an FSDP config, or ``TrainingArguments.fsdp``)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1"):
        return True
    return bool(getattr(args, "fsdp", None)) or getattr(args, "fsdp_plugin_args", None) is not None


def full_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The full (unsharded) state dict of an FSDP-trained model on rank 0; None when not sharded.

    A collective under FSDP: call it on every rank.
    """
    if not distributed.is_sharded(trainer.model):
        return None
    return trainer.accelerator.get_state_dict(trainer.model)


def _sync_gradients() -> bool:
    """Whether the Trainer's current micro-batch is the last of its optimizer step (accelerate's GradientState)."""
    from accelerate.state import GradientState

    return bool(GradientState().sync_gradients)


def attach_trainer(trainer: Any) -> None:
    """Connect a built ``Trainer`` to OWS: its trackers get OWS's metrics, and the fused step works.

    Call it once, after the Trainer is built. The OWS callback sends the layer schedule, memory, SVD
    and swap time (:mod:`ows.integrations.metrics`) to every tracker of ``report_to`` (tensorboard,
    wandb, mlflow, trackio, ...) at each logging step. With ``fused_step=true`` the Trainer would clip
    and measure only the gradients it still finds after backward (those outside the decoder layers);
    attached, it logs the fused step's exact global norm, and clipping is the fused step's (the previous
    step's norm, see :mod:`ows.optim.fused`). The fused step also learns which micro-batch ends a step. With
    ``project_head_grad`` (the default with a GaLore head) the head's gradient is summed projected by the chunked
    loss and the Trainer's clipping and reported norm count it (:mod:`ows.optim.head_grad`). On resume, the names of tied weights are left out of transformers' missing-keys warning (they are saved once).
    """
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    kinds = tuple(INTEGRATION_TO_CALLBACK.values())
    callbacks = trainer.callback_handler.callbacks
    for callback in callbacks:
        if isinstance(callback, OWSCallback):
            callback.reporters = [c for c in callbacks if isinstance(c, kinds)]
    _attach_fused(trainer)
    _attach_head_grad(trainer)
    _quiet_tied_keys(trainer)


def _attach_head_grad(trainer: Any) -> None:
    """Keep the head's gradient projected (``project_head_grad``, :mod:`ows.optim.head_grad`) when the run can, and
    make the Trainer's clipping and reported norm count it."""
    from ..optim.head_grad import enable_projected_head_grad

    args = trainer.args
    head = enable_projected_head_grad(unwrap_optimizer(trainer.optimizer), trainer.model,
                                      args.gradient_accumulation_steps,
                                      distributed=getattr(args, "world_size", 1) > 1 or distributed.is_distributed(),
                                      grad_scaler=bool(getattr(args, "fp16", False)))
    if head is None:
        return

    def total_norm(model: Any, max_norm: float) -> torch.Tensor:
        params = [p for p in model.parameters() if p.grad is not None]
        extra = [head.low] if head.low is not None else []
        norm = torch.nn.utils.get_total_norm([p.grad for p in params] + extra)
        if math.isfinite(max_norm):
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
            for low in extra:
                low.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0).to(low.dtype))
        return norm

    trainer._clip_grad_norm = lambda model: total_norm(model, float(args.max_grad_norm))
    trainer._get_grad_norm = lambda model, grad_norm=None: (grad_norm if grad_norm is not None
                                                            else total_norm(model, math.inf))


def _quiet_tied_keys(trainer: Any) -> None:
    """On resume, transformers warns that a tied weight's second name (``lm_head.weight`` of a tied head) is missing
    from the checkpoint, which saves that tensor once: leave those names out of the warning, keep the rest."""
    seen: set[int] = set()
    tied: set[str] = set()
    for name, param in trainer.model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.add(name)
        seen.add(id(param))
    warn = getattr(trainer, "_issue_warnings_after_load", None)
    if not tied or warn is None:
        return

    def issue(load_result: Any) -> None:
        missing = [key for key in load_result.missing_keys if key not in tied]
        warn(load_result._replace(missing_keys=missing) if hasattr(load_result, "_replace") else load_result)

    trainer._issue_warnings_after_load = issue


def _attach_fused(trainer: Any) -> None:
    fused = getattr(unwrap_optimizer(trainer.optimizer), "fused", None)
    if fused is None:
        return
    fused.is_final_micro_batch = _sync_gradients
    fused.max_grad_norm = float(trainer.args.max_grad_norm or 0.0)
    norm = lambda *args, **kwargs: torch.tensor(fused.current_grad_norm())  # noqa: E731
    trainer._clip_grad_norm = norm
    trainer._get_grad_norm = lambda model, grad_norm=None: grad_norm if grad_norm is not None else norm()
    fused.attached = True


def check_attached(optimizer: Any, args: Any) -> None:
    """Raise ``RuntimeError`` when an optimizer with the fused step trains in a Trainer not attached to it."""
    fused = getattr(unwrap_optimizer(optimizer), "fused", None)
    if fused is not None and not getattr(fused, "attached", False):
        raise RuntimeError("fused_step=true with a Hugging Face Trainer needs ows.attach_trainer(trainer) after the "
                           "Trainer is built: without it the Trainer clips and logs only the gradients outside the "
                           "decoder layers")


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's wrapper."""
    while optimizer is not None and getattr(optimizer, "optimizer", None) not in (None, optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def prepare_for_trainer(
    model: nn.Module,
    config: OWSConfig,
    profile: Any | None = None,
    **optimizer_kwargs: Any,
) -> tuple[GaLoreAdamW, OWSCallback]:
    """``(optimizer, callback)`` for ``Trainer(..., optimizers=(optimizer, None), callbacks=[callback])``.

    ``profile`` is an ``OutlierProfile`` (needed by the 'owl' strategies). ``optimizer_kwargs``
    (``lr``, ``weight_decay``, ``betas``, ``eps``) go to :func:`ows.create_ows`; the Trainer's scheduler
    scales ``lr`` as configured in ``TrainingArguments``.
    Under torchrun / accelerate with DDP the callback hides the decoder layers from DDP and
    synchronises them itself (see ``ows.distributed``) when the Trainer is constructed, after it has
    placed the model and before it wraps it. Under FSDP the Trainer refuses ``optimizers=``: construct it
    without, then set ``trainer.optimizer = optimizer`` (accelerate swaps in the sharded parameters).
    With ``config.fused_step``, call :func:`attach_trainer` on the Trainer once it is built.
    """
    optimizer, controller = create_ows(model, config, profile, **optimizer_kwargs)
    return optimizer, OWSCallback(controller)
