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


def save_outputs(out: Path, setup: Any, trainer: Any, tokenizer: Any, config: OWSConfig, result: Any,
                 keep_weights: bool = True) -> None:
    """Model folder (unless not ``keep_weights``), tokenizer, ows_config.json, schedule.json, loss_curve.png and
    results.json (``result``: the run's :class:`ows.recipe.RunResult`).

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
        model = setup.model.merge_and_unload() if setup.name == "lora" else setup.model
        save_model_folder(model, tokenizer, out, state_dict)
    method_config = setup.config or config
    write_json({"method": setup.name, **method_config.to_dict()}, out / files.METHOD_CONFIG)
    if setup.controller is not None:
        write_json(setup.controller.schedule_record(trainer.state.global_step), out / files.SCHEDULE)
    history = [h for h in trainer.state.log_history if "loss" in h]
    plot_loss_curve([h["step"] for h in history], [h["loss"] for h in history], out / files.LOSS_CURVE,
                    title=f"{setup.name}: training loss")
    results = {"method": setup.name, "before": result.before, "after": result.after,
               "train_seconds": result.train_seconds, "steps": result.steps, **peak_memory()}
    if evaluation is not None:
        results["eval"] = evaluation
    write_json(results, out / files.RESULTS)


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
