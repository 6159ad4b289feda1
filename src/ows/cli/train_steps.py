"""The steps of ``ows train``: checks, data, profile, trainer, held-out evaluation, outputs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import OWSConfig
from ..distributed import is_main_process
from ..jsonio import write_json
from ..data import tasks as reasoning
from ..methods import get_method
from ..outliers import OutlierProfile
from .common import UsageError
from .arguments import ScriptArguments

logger = logging.getLogger("ows.cli.train")


@dataclass
class Datasets:
    """Encoded training/evaluation examples and prompt/completion records for held-out metrics."""

    train: list[dict]
    eval: list[dict] = field(default_factory=list)
    heldout: list[dict] = field(default_factory=list)
    reasoning: bool = False


def load_profile(script: ScriptArguments, out: Path) -> tuple[OutlierProfile | None, str | None]:
    """The given profile, else the one a previous attempt of this run stored in ``out`` (None: compute), and its
    path. A folder being overwritten holds another run: its profile is not reused."""
    stored = out / "profile.json"
    source = script.profile or (str(stored) if stored.is_file() and not script.overwrite_output_dir else None)
    return (OutlierProfile.from_json(source), source) if source is not None else (None, None)


def load_datasets(script: ScriptArguments, tokenizer: Any) -> Datasets:
    """Generate or read the rows, check the format, encode, split; before any model is loaded."""
    from ..data import encode as encoding, records as data

    if script.task == "dpo":
        return _preference_datasets(script)
    tasks = reasoning.parse_spec(script.dataset)
    if tasks:
        records = reasoning.make_records(tasks, script.num_train_examples, script.dataset_seed)
        heldout = reasoning.make_records(tasks, script.num_heldout_examples, script.heldout_seed)
        heldout = reasoning.drop_overlap(heldout, records)
        fmt, eval_records = "prompt_completion", []
    else:
        records = data.load_records(script.dataset, script.dataset_split)
        fmt = data.detect_format(records, script.dataset_format, script.dataset)
        if script.eval_dataset:
            eval_records = data.load_records(script.eval_dataset, script.dataset_split)
            data.detect_format(eval_records, fmt, script.eval_dataset)
        else:
            records, eval_records = data.split_train_eval(records, script.eval_split_ratio, script.dataset_seed)
        heldout = [_as_prompt_completion(r, fmt) for r in eval_records] if fmt in ("alpaca", "prompt_completion") else []
    encode = dict(tokenizer=tokenizer, max_seq_length=script.max_seq_length, completion_only_loss=script.completion_only_loss)
    train, stats = encoding.encode_dataset(records, fmt, packing=script.packing, **encode)
    evaluation = encoding.encode_dataset(eval_records, fmt, **encode)[0] if eval_records else []
    logger.info("data: %d training examples (%s), %d evaluation, %d held-out", len(train), fmt, len(evaluation), len(heldout))
    return Datasets(train, evaluation, heldout, reasoning=bool(tasks))


def _preference_datasets(script: ScriptArguments) -> Datasets:
    """task dpo: checked prompt/chosen/rejected rows (TRL tokenizes them), an evaluation split if asked."""
    from ..data import records as data
    from ..data.preference import load_preference_rows

    rows = load_preference_rows(script.dataset, script.dataset_split)
    if script.eval_dataset:
        evaluation = load_preference_rows(script.eval_dataset, script.dataset_split)
    else:
        rows, evaluation = data.split_train_eval(rows, script.eval_split_ratio, script.dataset_seed)
    logger.info("data: %d preference pairs for training, %d for evaluation", len(rows), len(evaluation))
    return Datasets(rows, evaluation)


def _as_prompt_completion(record: dict, fmt: str) -> dict:
    from ..data.records import to_prompt_completion

    prompt, completion = to_prompt_completion(record, fmt)
    return {"prompt": prompt, "completion": completion}


def training_arguments(training: dict[str, Any], has_eval: bool, script: ScriptArguments | None = None) -> Any:
    """``TrainingArguments`` of the run (TRL's ``DPOConfig`` for task dpo); a refused value is a ``UsageError``."""
    from transformers import TrainingArguments

    values = {"remove_unused_columns": False, **training, "disable_tqdm": True}
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


def _culprit(cls: Any, values: dict[str, Any], given: list[str]) -> str | None:
    """The one given field without which ``cls(**values)`` succeeds (to name it in the error), else None."""
    for name in given:
        try:
            cls(**{k: v for k, v in values.items() if k != name})
        except Exception:  # noqa: BLE001 - any failure: this field is not the only cause
            continue
        return name
    return None


def wants_profile(script: ScriptArguments, config: OWSConfig) -> bool:
    return get_method(script.method).needs_profile(config)


def heldout_metrics(model: Any, tokenizer: Any, datasets: Datasets, script: ScriptArguments, when: str) -> dict:
    """Answer loss (and exact match for reasoning-gym data) on the held-out records."""
    from ..eval.heldout import answer_loss, exact_match

    if not datasets.heldout:
        return {}
    logger.info("held-out evaluation (%s training) on %d items", when, len(datasets.heldout))
    metrics = {"heldout_answer_loss": answer_loss(model, tokenizer, datasets.heldout, 32, script.max_seq_length)}
    if script.heldout_generate:
        items = datasets.heldout[: script.heldout_generate]
        scorer = reasoning.score if datasets.reasoning else None
        metrics["heldout_exact_match"] = exact_match(model, tokenizer, items, scorer, batch_size=32)
        metrics["heldout_exact_match_items"] = len(items)
    return metrics


def heldout_before(model: Any, tokenizer: Any, datasets: Datasets, script: ScriptArguments, out: Path,
                   reuse: bool) -> dict:
    """Held-out metrics of the starting model; a resumed run reuses the ones its first attempt stored."""
    stored = out / "heldout_before.json"
    if reuse and stored.is_file():
        return json.loads(stored.read_text(encoding="utf-8"))
    metrics = heldout_metrics(model, tokenizer, datasets, script, "before")
    if is_main_process():
        write_json(metrics, stored)
    return metrics


def make_trainer(model: Any, tokenizer: Any, script: ScriptArguments, config: OWSConfig,
                 profile: OutlierProfile | None, args: Any, datasets: Datasets,
                 run: dict[str, Any]) -> tuple[Any, Any, tuple[Any, Any]]:
    """The method's setup, the Trainer, and the (graceful stop, non-finite guard) callbacks."""
    from transformers import PrinterCallback, Trainer

    from ..data.encode import PadCollator
    from ..integrations.hf import attach_trainer, fsdp_requested
    from ..loading import resolve_model_path
    from ..integrations.progress import ProgressCallback
    from ..integrations.reliability import CheckpointMarker, GracefulStop, NonFiniteGuard
    from ..integrations.chunked_loss import enable_chunked_loss
    from ..methods import build_method

    if script.loss_chunk_size and script.task == "sft":  # TRL's DPO scores pairs with its own fused head
        enable_chunked_loss(model, script.loss_chunk_size)
    setup = build_method(script.method, model, config, profile, lr=args.learning_rate, weight_decay=args.weight_decay,
                         betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                         max_grad_norm=args.max_grad_norm or 0.0, weights_source=_folder(resolve_model_path(script.model)),
                         lora={"r": script.lora_r, "alpha": script.lora_alpha, "dropout": script.lora_dropout})
    fsdp = fsdp_requested(args)  # the Trainer refuses optimizers= under FSDP; accelerate shards ours when set after
    callbacks = [*setup.callbacks, ProgressCallback(setup.controller)]
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
    attach_trainer(trainer)  # a no-op unless fused_step
    trainer.remove_callback(PrinterCallback)
    guards = (GracefulStop(), NonFiniteGuard(script.nan_policy, script.max_bad_steps))
    for callback in (CheckpointMarker(run), *guards):
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
    logger.info("%s is the run's final checkpoint (step %d): nothing left to train", checkpoint,
                trainer.state.global_step)


def _folder(path: str | None) -> str | None:
    """``path`` when it is a local folder (holding the model's safetensors files), else None."""
    return path if path and Path(path).is_dir() else None


def save_model_folder(model: Any, tokenizer: Any, out: Path, state_dict: dict | None = None) -> None:
    """Write the model and tokenizer into a temporary folder first, then move the files into ``out``:
    a failure (e.g. a full disk) leaves no half-written model file behind. ``state_dict``: the full
    weights of a sharded (FSDP) model."""
    import shutil
    import tempfile

    from .run_folder import STAGING_PREFIX, publish_folder

    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        model.save_pretrained(staging, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
        publish_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_outputs(out: Path, setup: Any, trainer: Any, tokenizer: Any, config: OWSConfig,
                 before: dict, after: dict, seconds: float) -> None:
    """Model folder, tokenizer, ows_config.json, schedule.json, loss_curve.png and results.json.

    Call on every rank: gathering sharded weights and evaluating are collectives; only rank 0 writes."""
    from ..integrations.hf import full_state_dict
    from ..memory.measure import peak_memory
    from ..integrations.plots import plot_loss_curve

    state_dict = full_state_dict(trainer)
    evaluation = trainer.evaluate() if trainer.eval_dataset is not None else None
    if not is_main_process():
        return
    # LoRA is merged into a plain model; QLoRA's 4-bit base cannot take it exactly: its adapter is saved
    model = setup.model.merge_and_unload() if setup.name == "lora" else setup.model
    save_model_folder(model, tokenizer, out, state_dict)
    method_config = setup.config or config
    write_json({"method": setup.name, **method_config.to_dict()}, out / "ows_config.json")
    if setup.controller is not None:
        write_json(setup.controller.schedule_record(trainer.state.global_step), out / "schedule.json")
    history = [h for h in trainer.state.log_history if "loss" in h]
    plot_loss_curve([h["step"] for h in history], [h["loss"] for h in history], out / "loss_curve.png",
                    title=f"{setup.name}: training loss")
    results = {"method": setup.name, "before": before, "after": after, "train_seconds": round(seconds, 1),
               "steps": trainer.state.global_step, **peak_memory()}
    if evaluation is not None:
        results["eval"] = evaluation
    write_json(results, out / "results.json")


def save_delta(script: ScriptArguments, out: Path) -> str:
    """Write ``out/delta`` (the tensors the run changed, with the base's identity); returns a line saying so."""
    from ..export import compute_delta, write_delta
    from ..loading import model_identity, resolve_model_path

    base = resolve_model_path(script.model)
    delta = compute_delta(base, out)
    folder = write_delta(delta, base, model_identity(script.model, base), out / "delta", str(out))
    return (f"saved the delta ({len(delta.changed)} changed tensors, {sum(v.numel() for v in delta.changed.values()):,} "
            f"parameters) to {folder}: `ows merge {script.model} {folder} FOLDER` rebuilds the model")


def results_table(before: dict, after: dict, method: str) -> str:
    """Markdown table of held-out metrics before and after training."""
    if not before:
        return f"{method}: training done (no held-out set to compare)"
    rows = [f"| {method} | before | after |", "|---|---|---|"]
    for key in before:
        if key.endswith("_items"):
            continue
        fmt = "{:.3f}" if "loss" in key else "{:.1%}"
        rows.append(f"| {key} | {fmt.format(before[key])} | {fmt.format(after[key])} |")
    if "heldout_exact_match_items" in before:
        rows.append(f"(exact match on {before['heldout_exact_match_items']} held-out items)")
    return "\n".join(rows)
