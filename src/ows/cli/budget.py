"""``max_memory``: the settings of an ``ows train`` or ``ows memory`` run chosen to fit a memory budget.

The run's fields become the estimator's keyword arguments (:func:`estimate_settings`, used by both
commands), :func:`ows.memory.plan.plan_for_budget` picks the levers, and :func:`apply_plan` writes
the plan back into the run's fields. Fields the user set are never changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import OWSConfig
from ..memory.plan import Plan, parse_budget, plan_for_budget, size_text
from .arguments import ScriptArguments
from .common import UsageError

OWS_FIELDS = ("num_active_layers", "rank", "train_embeddings", "train_lm_head", "fused_step", "master_weights",
              "outside_optimizer", "svd_method", "frozen_quantization")
# estimator argument -> the run field it comes from (when the names differ)
FIELD_OF = {"batch_size": "per_device_train_batch_size", "seq_len": "max_seq_length", "lora_rank": "lora_r",
            "chunked_loss": "loss_chunk_size"}


def estimate_settings(script: ScriptArguments, config: OWSConfig, batch_size: int, gradient_checkpointing: bool,
                      attention: str = "sdpa", device: str = "cuda", accumulation: int = 1) -> dict[str, Any]:
    """``estimate_memory``'s keyword arguments for a run's fields (plus ``gradient_accumulation_steps``)."""
    chunked = script.loss_chunk_size > 0
    return dict(dtype=script.dtype, batch_size=batch_size, seq_len=script.max_seq_length, lora_rank=script.lora_r,
                gradient_checkpointing=gradient_checkpointing, chunked_loss=chunked,
                loss_chunk_size=script.loss_chunk_size if chunked else 1024, attention=attention, device=device,
                gradient_accumulation_steps=accumulation, **{name: getattr(config, name) for name in OWS_FIELDS})


def plan(model_config: dict[str, Any], method: str, budget_text: str, settings: dict[str, Any],
         given: frozenset[str]) -> Plan:
    """The plan for ``budget_text`` (``16GiB``); a bad budget is a ``UsageError``."""
    try:
        budget = parse_budget(budget_text)
    except ValueError as err:
        raise UsageError(str(err)) from None
    fixed = frozenset(arg for arg, field in {**{k: k for k in settings}, **FIELD_OF}.items() if field in given)
    if "gradient_checkpointing" in given:
        fixed |= {"gradient_checkpointing"}
    return plan_for_budget(model_config, method, budget, settings, fixed)


def refuse(plan_: Plan, method: str, given: frozenset[str]) -> None:
    """Raise the one-line ``UsageError`` of a plan that does not fit."""
    kept = ", ".join(sorted(given & {*OWS_FIELDS, *FIELD_OF.values(), "gradient_checkpointing"})) or "none"
    raise UsageError(f"max_memory={size_text(plan_.budget)}: nothing fits for method={method!r}: the smallest plan "
                     f"needs {size_text(plan_.total)} (fields you set and that were kept: {kept}): raise "
                     "max_memory, leave those fields to the plan, or use a smaller model or shorter sequences")


def apply_plan(plan_: Plan, script: ScriptArguments, config: OWSConfig,
               training: dict[str, Any]) -> tuple[ScriptArguments, OWSConfig, dict[str, Any]]:
    """The run's fields with the plan's changes."""
    s, given = plan_.settings, script.given
    script = dataclasses.replace(script, loss_chunk_size=s["loss_chunk_size"] if s["chunked_loss"] else 0)
    script.given = given
    config = dataclasses.replace(config, **{name: s[name] for name in OWS_FIELDS})
    training = dict(training, per_device_train_batch_size=s["batch_size"],
                    gradient_accumulation_steps=s["gradient_accumulation_steps"],
                    gradient_checkpointing=s["gradient_checkpointing"])
    return script, config, training
