"""Hugging Face ``Trainer`` integration: an optimizer plus a callback that runs the layer schedule.

Works with ``transformers.Trainer`` and subclasses such as TRL's ``SFTTrainer``; the LR scheduler
from ``TrainingArguments`` wraps the returned optimizer as usual.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .. import distributed
from ..config import OWSConfig
from ..controller import OWSController, create_ows
from ..layers import input_embeddings, input_gradient_stopped
from ..optim.galore_adamw import GaLoreAdamW

logger = logging.getLogger(__name__)


class OWSCallback(TrainerCallback):
    """Resamples the active decoder layers on optimizer-step boundaries of a ``Trainer`` run.

    ``on_step_begin`` fires once per optimizer step (not per micro-batch), with
    ``state.global_step`` = optimizer steps done, so resumed runs continue the same schedule.
    ``schedule`` records ``(step, active_layers)`` at every resample.
    """

    def __init__(self, controller: OWSController) -> None:
        self.controller = controller
        self.schedule: list[tuple[int, tuple[int, ...]]] = []
        self._is_main = True
        controller.on_resample = self._record

    def _record(self, step: int, active: tuple[int, ...]) -> None:
        self.schedule.append((step, active))
        if self._is_main:
            logger.info("step %d: active decoder layers %s", step, list(active))

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        # TrainingArguments start torch.distributed; the Trainer wraps the model in DDP only in train().
        if not fsdp_requested(args):
            distributed.setup_ddp(self.controller.model, self.controller.layers)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: nn.Module | None = None, **kwargs: Any
    ) -> None:
        self._is_main = state.is_world_process_zero
        model_ready = distributed.is_sharded(self.controller.model) or hasattr(self.controller.model, "_ows_layer_sync")
        if distributed.is_distributed() and not model_ready:
            raise RuntimeError(
                f"{distributed.world_size()} processes but the model is neither sharded (FSDP2) nor prepared for DDP: "
                "pass the OWS callback to the Trainer constructor (callbacks=[callback]) so that it runs before training"
            )
        checkpointing = getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False)
        if checkpointing and model is not None:
            _ensure_input_grads(model, _reentrant_checkpointing(args))
        self.controller.begin_step(state.global_step)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.controller.begin_step(state.global_step)


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


def prepare_for_trainer(
    model: nn.Module,
    config: OWSConfig,
    profile: Any | None = None,
    *,
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[GaLoreAdamW, OWSCallback]:
    """``(optimizer, callback)`` for ``Trainer(..., optimizers=(optimizer, None), callbacks=[callback])``.

    ``profile`` is an ``OutlierProfile`` (needed by the 'owl' strategies). ``lr`` etc. are the
    optimizer's; the Trainer's scheduler scales ``lr`` as configured in ``TrainingArguments``.
    Under torchrun / accelerate with DDP the callback hides the decoder layers from DDP and
    synchronises them itself (see ``ows.distributed``) when the Trainer is constructed, after it has
    placed the model and before it wraps it. Under FSDP the Trainer refuses ``optimizers=``: construct it
    without, then set ``trainer.optimizer = optimizer`` (accelerate swaps in the sharded parameters).
    """
    optimizer, controller = create_ows(
        model, config, profile, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps
    )
    return optimizer, OWSCallback(controller)
