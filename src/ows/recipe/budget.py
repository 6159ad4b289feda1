"""``max_memory``: the settings of an ``ows train`` or ``ows memory`` run chosen to fit a memory budget.

The estimator takes the run's fields by their own names (:func:`estimate_settings` picks them, used by
both commands), :func:`ows.memory.plan.plan_for_budget` picks the levers, and :func:`apply_plan`
writes the plan back into the run's fields. Fields the user set are never changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..config import OWSConfig
from ..errors import UsageError
from ..memory.plan import HEADROOM, Plan, plan_for_budget
from ..memory.size import parse_budget, size_text
from .arguments import ScriptArguments

# The fields of each kind that the estimate reads (and a plan may change).
OWS_FIELDS = ("num_active_layers", "rank", "train_embeddings", "train_lm_head", "fused_step", "master_weights",
              "outside_optimizer", "svd_method", "frozen_quantization", "sampling_granularity", "sample_budget_params",
              "project_head_grad")
SCRIPT_FIELDS = ("dtype", "max_seq_length", "lora_r", "loss_chunk_size")
TRAINING_FIELDS = {"per_device_train_batch_size": 8, "gradient_checkpointing": False, "gradient_accumulation_steps": 1}


def estimate_settings(script: ScriptArguments, config: OWSConfig, training: Mapping[str, Any],
                      attn_implementation: str = "sdpa", device: str = "cuda") -> dict[str, Any]:
    """``estimate_memory``'s keyword arguments for a run's fields;
    ``training`` holds TrainingArguments values (missing ones take the Trainer's defaults)."""
    values = {name: getattr(script, name) for name in SCRIPT_FIELDS}
    if values["dtype"] == "auto":  # both commands resolve it first (arguments.resolve_dtype): a last resort
        values["dtype"] = "float32"
    values.update({name: getattr(config, name) for name in OWS_FIELDS})
    values.update({name: default if training.get(name) is None else training[name]
                   for name, default in TRAINING_FIELDS.items()})
    return dict(values, attn_implementation=attn_implementation, device=device)


def plan(model_config: dict[str, Any], method: str, budget_text: str, settings: dict[str, Any],
         given: frozenset[str], headroom_text: str = HEADROOM) -> Plan:
    """The plan for ``budget_text`` (``16GiB``) keeping ``headroom_text`` free; a bad size is a ``UsageError``."""
    try:
        budget = parse_budget(budget_text)
        headroom = parse_budget(headroom_text, "memory_headroom", zero=True) if str(headroom_text).strip() else 0
    except ValueError as err:
        raise UsageError(str(err)) from None
    if headroom >= budget:
        raise UsageError(f"memory_headroom={headroom_text!r} leaves nothing of max_memory={budget_text!r}: give a "
                         "smaller memory_headroom (e.g. 0) or a larger max_memory")
    return plan_for_budget(model_config, method, budget, settings, frozenset(settings) & given, headroom)


def refuse(plan_: Plan, method: str, given: frozenset[str], model_config: dict[str, Any]) -> None:
    """Raise the one-line ``UsageError`` of a plan that does not fit: the fields the user set that rule every plan
    out, or the smallest plan's estimate and the budget it would take."""
    levers = {*OWS_FIELDS, *SCRIPT_FIELDS, *TRAINING_FIELDS} - {"gradient_accumulation_steps"}
    kept = sorted(given & levers)
    start = plan_.settings | {name: plan_.settings[name] for name in kept}
    free = plan_for_budget(model_config, method, plan_.budget, start, frozenset(), plan_.headroom) if kept else None
    if free is not None and free.fits:
        blockers = [name for name in kept if plan_for_budget(model_config, method, plan_.budget, start,
                                                              frozenset(kept) - {name}, plan_.headroom).fits]
        named = ", ".join(f"{name}={plan_.settings[name]!r}" for name in blockers) or ", ".join(kept)
        raise UsageError(f"max_memory={size_text(plan_.budget)}: the fields you set rule out every plan for "
                         f"method={method!r} ({named}; without them a plan needs {size_text(free.total)}): leave "
                         f"{'it' if len(blockers) == 1 else 'them'} to the plan or raise max_memory")
    needed = size_text(plan_.total + plan_.headroom)
    raise UsageError(f"max_memory={size_text(plan_.budget)}: nothing fits for method={method!r}: the smallest plan needs "
                     f"{size_text(plan_.total)} plus memory_headroom {size_text(plan_.headroom)}: raise max_memory to "
                     f"{needed} or more, or use shorter sequences (max_seq_length) or a smaller model")


def apply_plan(plan_: Plan, script: ScriptArguments, config: OWSConfig,
               training: dict[str, Any]) -> tuple[ScriptArguments, OWSConfig, dict[str, Any]]:
    """The run's fields with the plan's changes."""
    s, given = plan_.settings, script.given
    script = dataclasses.replace(script, **{name: s[name] for name in SCRIPT_FIELDS})
    script.given = given
    config = dataclasses.replace(config, **{name: s[name] for name in OWS_FIELDS})
    training = dict(training, **{name: s[name] for name in TRAINING_FIELDS})
    return script, config, training
