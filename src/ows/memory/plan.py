"""A memory budget that configures a run: the least harmful settings whose estimated peak fits (no torch).

:func:`plan_for_budget` starts from the run's settings and, while the estimate
(:func:`ows.memory.estimate.estimate_memory`) is above the budget, applies the next lever, from the
ones that cost nothing in quality to the ones that cost most:

1. the chunked loss (no cost), 2. the fused step (clipping by the previous step's norm),
3. gradient checkpointing (about a third more compute), 4. 8-bit moments outside the decoder layers,
5. the Gram-matrix projector, 6. int8 then NF4 frozen decoder layers (the forward through a frozen
layer uses quantized weights), 7. half the batch with twice the gradient accumulation, down to 1
(same effective batch, slower), 8. fewer sampled layers (gamma), 9. a lower GaLore rank, down to 16.

A lever the method cannot serve, or whose field the user set, is skipped. Every applied lever is a
:class:`Step` that says what changed and the estimate after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..methods import get_method
from .estimate import estimate_memory

UNITS = {"": 2**30, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30,
         "tb": 10**12, "tib": 2**40}


def parse_budget(text: str, field_name: str = "max_memory") -> int:
    """Bytes of a budget such as ``16GiB``, ``15.5 GB`` or ``12000MiB`` (a bare number is GiB)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"{field_name}={text!r} is invalid: give a positive size such as 16GiB, 15.5GB or 12000MiB")
    return int(float(match.group(1)) * UNITS[unit])


def size_text(nbytes: int) -> str:
    """``9.71 GiB``, or ``19.2 MiB`` below a GiB."""
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


@dataclass
class Step:
    """One change of the plan: the field, its new value, why, and the estimated peak after it (bytes)."""

    field: str
    value: Any
    why: str
    total: int


@dataclass
class Plan:
    """The settings chosen for a budget, the steps that led there and the final estimate."""

    settings: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    total: int = 0
    budget: int = 0

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    def lines(self) -> list[str]:
        """The plan as text: one line per change, then the result."""
        out = [f"  {s.field} = {s.value}: {s.why} -> {size_text(s.total)}" for s in self.steps]
        verdict = "fits" if self.fits else "does not fit"
        out.append(f"  estimate {size_text(self.total)} of the {size_text(self.budget)} budget: {verdict}")
        return out


Lever = tuple[str, Callable[[dict[str, Any]], Any], str]


def _halve(settings: dict[str, Any]) -> Any:
    batch = settings["per_device_train_batch_size"]
    return batch // 2 if batch > 1 else None


LEVERS: list[Lever] = [
    ("loss_chunk_size", lambda s: 1024 if not s["loss_chunk_size"] else None,
     "the loss over chunks of tokens, no full logits"),
    ("fused_step", lambda s: True if not s["fused_step"] else None, "each update inside backward, one gradient at a time"),
    ("gradient_checkpointing", lambda s: True if not s["gradient_checkpointing"] else None,
     "recompute each layer in backward (about a third more compute)"),
    ("outside_optimizer", lambda s: "adamw8bit" if s["outside_optimizer"] == "adamw" else None,
     "8-bit moments for the embeddings and head"),
    ("svd_method", lambda s: "gram" if s["svd_method"] == "exact" else None, "the projector from the Gram matrix"),
    ("frozen_quantization", lambda s: "int8" if s["frozen_quantization"] == "none" else None,
     "frozen decoder layers in int8 (their forward uses quantized weights)"),
    ("frozen_quantization", lambda s: "nf4" if s["frozen_quantization"] == "int8" else None,
     "frozen decoder layers in NF4"),
]
REPEATED: list[Lever] = [
    ("per_device_train_batch_size", _halve, "half the batch, twice the gradient accumulation (same effective batch)"),
    ("num_active_layers", lambda s: s["num_active_layers"] - 1 if s["num_active_layers"] > 1 else None,
     "one sampled layer fewer"),
    ("rank", lambda s: max(16, s["rank"] // 2) if s["rank"] > 16 else None, "half the GaLore rank"),
]
OPTION_OF = {"fused_step": "fused_step", "outside_optimizer": "outside_optimizer",
             "frozen_quantization": "frozen_quantization"}


def plan_for_budget(model_config: dict[str, Any], method: str, budget: int, settings: dict[str, Any],
                    fixed: frozenset[str] = frozenset()) -> Plan:
    """The settings for ``method`` whose estimate fits ``budget`` bytes, changing no field in ``fixed``.

    ``settings`` are ``estimate_memory``'s keyword arguments (the run fields ``per_device_train_batch_size``,
    ``num_active_layers``, ...) plus ``gradient_accumulation_steps``; ``fixed`` the fields the user set. The plan may not fit: check :attr:`Plan.fits`.
    """
    spec = get_method(method)
    plan = Plan(dict(settings), budget=budget, total=_total(model_config, method, settings))
    while any(_try(plan, lever, spec, model_config, method, fixed) for lever in LEVERS):
        pass  # after each applied lever, from the cheapest again: one that gained nothing may gain once the peak moved
    for lever in REPEATED:  # each as far as it goes before the next
        while plan.total > budget and _try(plan, lever, spec, model_config, method, fixed):
            pass
    return plan


def _try(plan: Plan, lever: Lever, spec: Any, model_config: dict[str, Any], method: str,
         fixed: frozenset[str]) -> bool:
    """Apply ``lever`` when the plan does not fit yet and the lever lowers the estimate; True if applied."""
    name, propose, why = lever
    if plan.total <= plan.budget or name in fixed or (name in OPTION_OF and not spec.serves(OPTION_OF[name])):
        return False
    if (name == "num_active_layers" and not spec.samples_layers) or (name == "rank" and not spec.galore):
        return False
    value = propose(plan.settings)
    if value is None:
        return False
    trial = dict(plan.settings, **{name: value})
    if name == "per_device_train_batch_size":
        trial["gradient_accumulation_steps"] = plan.settings.get("gradient_accumulation_steps", 1) * 2
    total = _total(model_config, method, trial)
    if total >= plan.total:  # no gain: the lever does not reach this model's peak
        return False
    plan.settings, plan.total = trial, total
    plan.steps.append(Step(name, value, why, total))
    return True


def _total(model_config: dict[str, Any], method: str, settings: dict[str, Any]) -> int:
    kwargs = {k: v for k, v in settings.items() if k != "gradient_accumulation_steps"}
    return estimate_memory(model_config, method, **kwargs).total
