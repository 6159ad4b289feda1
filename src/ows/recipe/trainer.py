"""The Trainer of a run: its TrainingArguments, the method built from the registry, ows's callbacks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import OWSConfig
from ..errors import UsageError
from ..outliers import OutlierProfile
from .arguments import ScriptArguments
from .data import Datasets

logger = logging.getLogger(__name__)

def training_arguments(training: dict[str, Any], has_eval: bool, script: ScriptArguments | None = None) -> Any:
    """``TrainingArguments`` of the run (TRL's ``DPOConfig`` for task dpo); a refused value is a ``UsageError``."""
    from transformers import TrainingArguments

    values = {"remove_unused_columns": False, **training}  # disable_tqdm as given: ows's bar reads it
    values.setdefault("dataloader_pin_memory", torch.cuda.is_available())
    if values.get("report_to") is None:  # `--report_to none` arrives as None; transformers wants "none"
        values["report_to"] = "none"
    if has_eval:
        values.setdefault("per_device_eval_batch_size", values.get("per_device_train_batch_size", 8))
    try:
        if script is not None and script.task == "dpo":
            from ..integrations.dpo import dpo_config

            return dpo_config(values, script.dpo_beta, script.max_seq_length)
        return TrainingArguments(**values)
    except Exception as err:  # noqa: BLE001 - the Trainer's checks raise many types (OSError for a missing file)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        culprit = _culprit(TrainingArguments, values, list(training))
        named = f"{culprit}={training[culprit]!r}: " if culprit else ""
        raise UsageError(f"TrainingArguments refused {named}{first}") from None


def resolve_precision(script: ScriptArguments, training: dict[str, Any],
                      model_config: dict[str, Any]) -> tuple[ScriptArguments, dict[str, Any], str]:
    """The run with a concrete ``dtype`` (:func:`ows.recipe.arguments.resolve_dtype`) and, on a GPU, the
    mixed-precision flag that matches it (``bf16`` for bfloat16 weights; ``fp16`` for a half checkpoint on a GPU
    without bfloat16) unless ``bf16`` or ``fp16`` is given; and the line that says what was chosen and why."""
    import dataclasses

    from .arguments import HALF, checkpoint_dtype, resolve_dtype

    gpu = torch.cuda.is_available()
    dtype, why = resolve_dtype(script.dtype, model_config, gpu, gpu and torch.cuda.is_bf16_supported())
    flags: dict[str, Any] = {}
    if gpu and not {"bf16", "fp16"} & set(training):
        if dtype == "bfloat16":
            flags["bf16"] = True
        elif script.dtype == "auto" and checkpoint_dtype(model_config) in HALF:
            flags["fp16"] = True
    given = script.given
    script = dataclasses.replace(script, dtype=dtype)
    script.given = given
    mixed = f"; mixed precision: {', '.join(f'{k} true' for k in flags)}" if flags else ""
    return script, {**training, **flags}, f"dtype {dtype} ({why}){mixed}"


def _culprit(cls: Any, values: dict[str, Any], given: list[str]) -> str | None:
    """The one given field without which ``cls(**values)`` succeeds (to name it in the error), else None."""
    for name in given:
        try:
            cls(**{k: v for k, v in values.items() if k != name})
        except Exception:  # noqa: BLE001 - any failure: this field is not the only cause
            continue
        return name
    return None


def make_trainer(model: Any, tokenizer: Any, script: ScriptArguments, config: OWSConfig,
                 profile: OutlierProfile | None, args: Any, datasets: Datasets,
                 run: dict[str, Any], extra_callbacks: Sequence[Any] = ()) -> tuple[Any, Any, tuple[Any, Any]]:
    """The method's setup, the Trainer, and the (graceful stop, non-finite guard) callbacks.

    ``extra_callbacks`` (the caller's ``TrainerCallback``s) come after ows's own, so that a checkpoint is
    marked complete before they see it."""
    from transformers import PrinterCallback, Trainer
    from transformers import ProgressCallback as TrainerBar

    from ..data.encode import PadCollator
    from ..integrations.hf import OWSCallback, attach_trainer, fsdp_requested
    from ..loading import resolve_model_path
    from ..integrations.progress import ProgressCallback
    from ..integrations.reliability import CheckpointMarker, GracefulStop, NonFiniteGuard
    from ..integrations.chunked_loss import enable_chunked_loss
    from ..methods import build_method, get_method

    if script.loss_chunk_size and script.task == "sft":  # TRL's DPO scores pairs with its own fused head
        enable_chunked_loss(model, script.loss_chunk_size)
    setup = build_method(get_method(script.method), model, config, profile, lr=args.learning_rate, weight_decay=args.weight_decay,
                         betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                         max_grad_norm=args.max_grad_norm or 0.0, weights_source=_folder(resolve_model_path(script.model)),
                         lora={"r": script.lora_r, "alpha": script.lora_alpha, "dropout": script.lora_dropout,
                               "target_modules": lora_targets(script.lora_target_modules)})
    fsdp = fsdp_requested(args)  # the Trainer refuses optimizers= under FSDP; accelerate shards ours when set after
    owned = [OWSCallback(setup.controller)] if setup.controller is not None else []
    callbacks = [*owned, ProgressCallback(setup.controller)]
    if script.task == "dpo":
        from ..integrations.dpo import make_dpo_trainer

        trainer = make_dpo_trainer(setup.model, tokenizer, args, datasets.train, datasets.eval,
                                   None if fsdp else setup.optimizer, callbacks)
    else:
        trainer = Trainer(model=setup.model, args=args, train_dataset=datasets.train, eval_dataset=datasets.eval or None,
                          data_collator=PadCollator(tokenizer.pad_token_id),
                          optimizers=(None if fsdp else setup.optimizer, None), callbacks=callbacks)
    if fsdp:
        trainer.optimizer = setup.optimizer
    attach_trainer(trainer)  # the fused step's clipping, quiet tied keys on resume
    for printer in (PrinterCallback, TrainerBar):  # ows's ProgressCallback draws the bar and logs the steps
        trainer.remove_callback(printer)
    guards = (GracefulStop(), NonFiniteGuard(script.nan_policy, script.max_bad_steps))
    if script.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=script.early_stopping_patience))
    for callback in (*guards, CheckpointMarker(run), *extra_callbacks):  # the marker sees the guards' save decision
        trainer.add_callback(callback)
    return setup, trainer, guards


def restore_finished(trainer: Any, checkpoint: str) -> None:
    """Load a checkpoint that ends the run (its step reached max_steps) instead of training again.

    The Trainer, resumed from such a checkpoint in the middle of an epoch, would run one more step
    before it checks max_steps; here the weights and the trainer state are loaded and nothing runs.
    """
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    best = trainer.state.best_model_checkpoint
    use_best = trainer.args.load_best_model_at_end and best and Path(best).is_dir()
    trainer._load_from_checkpoint(best if use_best else checkpoint)
    from ..integrations.hf import restore_sampler_state

    restore_sampler_state(trainer, checkpoint)  # gradient sampling: the schedule that ran is in its state
    logger.info("%s is the run's final checkpoint (step %d): nothing left to train", checkpoint,
                trainer.state.global_step)


def lora_targets(names: list[str] | None) -> list[str] | None:
    """LoRA's target modules: None (every linear layer) for none or ``all`` (LLaMA-Factory's word)."""
    return None if not names or [n.lower() for n in names] == ["all"] else list(names)


def _folder(path: str | None) -> str | None:
    """``path`` when it is a local folder (holding the model's safetensors files), else None."""
    return path if path and Path(path).is_dir() else None
