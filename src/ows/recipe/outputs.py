"""What a run measures and writes: held-out metrics before and after, the model folder, results, the delta."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import OWSConfig
from ..data import tasks as reasoning
from ..distributed import is_main_process
from ..jsonio import write_json
from . import run_folder as files
from .arguments import ScriptArguments
from .data import Datasets

logger = logging.getLogger(__name__)
HELDOUT_BATCH_SIZE = 32  # records per forward pass when scoring the held-out answers


def heldout_metrics(model: Any, tokenizer: Any, datasets: Datasets, script: ScriptArguments, when: str) -> dict:
    """Answer loss (and exact match for reasoning-gym data) on the held-out records."""
    from ..eval.heldout import answer_loss, exact_match

    if not datasets.heldout:
        return {}
    logger.info("held-out evaluation (%s training) on %d items", when, len(datasets.heldout))
    loss = answer_loss(model, tokenizer, datasets.heldout, HELDOUT_BATCH_SIZE, script.max_seq_length)
    metrics = {"heldout_answer_loss": loss}
    if script.heldout_generate:
        items = datasets.heldout[: script.heldout_generate]
        scorer = reasoning.score if datasets.reasoning else None
        metrics["heldout_exact_match"] = exact_match(model, tokenizer, items, scorer, batch_size=HELDOUT_BATCH_SIZE)
        metrics["heldout_exact_match_items"] = len(items)
    return metrics


def heldout_before(model: Any, tokenizer: Any, datasets: Datasets, script: ScriptArguments, out: Path,
                   reuse: bool) -> dict:
    """Held-out metrics of the starting model; a resumed run reuses the ones its first attempt stored."""
    stored = out / files.HELDOUT_BEFORE
    if reuse and stored.is_file():
        return json.loads(stored.read_text(encoding="utf-8"))
    metrics = heldout_metrics(model, tokenizer, datasets, script, "before")
    if is_main_process():
        write_json(metrics, stored)
    return metrics


def save_model_folder(model: Any, tokenizer: Any, out: Path, state_dict: dict | None = None) -> None:
    """Write the model and tokenizer into a temporary folder first, then move the files into ``out``:
    a failure (e.g. a full disk) leaves no half-written model file behind. ``state_dict``: the full
    weights of a sharded (FSDP) model."""
    import shutil
    import tempfile

    staging = Path(tempfile.mkdtemp(prefix=files.STAGING_PREFIX, dir=out))
    try:
        model.save_pretrained(staging, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
        files.publish_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


ADAPTER = "adapter"  # lora / qlora: the PEFT adapter, beside the (merged) model


def save_adapter(model: Any, out: Path, base_name: str | None) -> Path:
    """Write a PEFT model's adapter (``adapter_model.safetensors``, ``adapter_config.json``) into ``out/adapter``,
    with ``base_model_name_or_path`` = ``base_name`` (the model as the user named it), staged like the model."""
    import shutil
    import tempfile

    if base_name:
        for adapter_config in model.peft_config.values():
            adapter_config.base_model_name_or_path = base_name
    staging = Path(tempfile.mkdtemp(prefix=files.STAGING_PREFIX, dir=out))
    try:
        model.save_pretrained(staging / ADAPTER)
        files.publish_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / ADAPTER


def save_outputs(out: Path, setup: Any, trainer: Any, tokenizer: Any, config: OWSConfig, result: Any,
                 keep_weights: bool = True, base_name: str | None = None) -> None:
    """Model folder (unless not ``keep_weights``), tokenizer, ows_config.json, schedule.json, loss_curve.png and
    results.json (``result``: the run's :class:`ows.recipe.RunResult`). An adapter method also writes its adapter
    into ``out/adapter`` (:func:`save_adapter`; ``base_name``: the base model as the user named it).

    Call on every rank: gathering sharded weights and evaluating are collectives; only rank 0 writes."""
    from ..integrations.hf import full_state_dict
    from ..memory.measure import peak_memory
    from ..integrations.plots import plot_loss_curve

    state_dict = full_state_dict(trainer)
    evaluation = trainer.evaluate() if trainer.eval_dataset is not None else None
    if not is_main_process():
        return
    # LoRA is merged into a plain model; QLoRA's 4-bit base cannot take it exactly: its adapter is saved
    if keep_weights:
        if hasattr(setup.model, "peft_config"):
            logger.info("saved the LoRA adapter to %s (base_model_name_or_path %s)",
                        save_adapter(setup.model, out, base_name), base_name)
        model = setup.model.merge_and_unload() if setup.name == "lora" else setup.model
        save_model_folder(model, tokenizer, out, state_dict)
    method_config = setup.config or config
    write_json({"method": setup.name, **method_config.to_dict()}, out / files.METHOD_CONFIG)
    if setup.controller is not None:
        write_json(setup.controller.schedule_record(trainer.state.global_step), out / files.SCHEDULE)
    curve = loss_curve(trainer.state.log_history)
    plot_loss_curve([s for s, _ in curve], [v for _, v in curve], out / files.LOSS_CURVE,
                    title=f"{setup.name}: training loss")
    results = {"method": setup.name, "before": result.before, "after": result.after,
               "train_seconds": result.train_seconds, "steps": result.steps, **training_figures(trainer, setup),
               **peak_memory()}
    if evaluation is not None:
        results["eval"] = evaluation
    write_json(results, out / files.RESULTS)


def loss_curve(log_history: list[dict]) -> list[list[float]]:
    """``[[step, loss], ...]``: the training loss of every logging step."""
    return [[h["step"], h["loss"]] for h in log_history if "loss" in h]


def training_figures(trainer: Any, setup: Any) -> dict[str, Any]:
    """The training loss (curve, last logged value, the Trainer's mean over the run) and the seconds GaLore spent
    in SVDs and the frozen layers in swaps (0.0 for a method without them)."""
    history = trainer.state.log_history
    curve = loss_curve(history)
    mean = next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None)
    residency = getattr(setup.controller, "residency", None)
    return {"train_loss": mean, "final_loss": curve[-1][1] if curve else None, "loss_curve": curve,
            "svd_seconds": round(float(getattr(setup.optimizer, "svd_seconds", 0.0) or 0.0), 3),
            "swap_seconds": round(float(residency.swap_seconds if residency is not None else 0.0), 3)}


def run_of_config(config_file: str, model: str | None) -> str | None:
    """What ``ows eval CONFIG.yaml`` evaluates: the config's ``output_dir`` when it holds a finished run (a model
    folder with results.json and ows_run.json; the log says so), else ``model``."""
    import yaml

    out = (yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}).get("output_dir")
    done = out is not None and all((Path(out) / name).is_file() for name in ("config.json", files.RESULTS,
                                                                              files.RUN_RECORD))
    if not done:
        return model
    logger.info("evaluating the run in %s (output_dir of %s), not its base model %s: pass --model %s to evaluate the "
                "base", out, config_file, model, model)
    return str(out)


def save_delta(script: ScriptArguments, out: Path) -> str:
    """Write ``out/delta`` (the tensors the run changed, with the base's identity); returns a line saying so."""
    from ..export import compute_delta, write_delta
    from ..loading import model_identity, resolve_model_path

    base = resolve_model_path(script.model)
    delta = compute_delta(base, out)
    folder = write_delta(delta, base, model_identity(script.model, base), out / "delta", str(out), replace=True)
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
