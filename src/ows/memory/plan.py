"""A memory budget that configures a run: the settings with the best quality whose estimate fits (no torch).

:func:`plan_for_budget` starts from the run's settings and keeps ``headroom`` of the budget free for
what the estimate leaves out (the CUDA context, allocator fragmentation). While the estimate is above
the rest, it applies the lever with the smallest **measured quality cost per GiB saved** (then the
smallest compute cost per GiB): first the levers that cost no quality (the chunked loss, gradient
checkpointing, smaller loss chunks, half the batch with twice the accumulation, 8-bit outside moments,
the Gram projector), then bf16 for a float32 model on a GPU, then the lossy ones by their cost per GiB
(int8 frozen layers, then NF4 rather than int8, fewer sampled layers, the fused step, freezing the
embeddings and head, a lower rank). The costs are the worst measured on either task family.
Room to spare goes where the measurements show quality pays (``SPEND``: more sampled layers, up to a
fifth of the model's; the plan says what stays unspent). Each lever's cost and its source are in ``LEVERS``
/ ``SPEND``; docs/MEMORY.md has the table. A field the user set is never changed, and a lever the method
cannot serve is skipped. Every change is a :class:`Step` that says why and the estimate after it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..methods import get_method
from .estimate import estimate_memory
from .size import size_text

HEADROOM = "1GiB"  # the default memory_headroom: CUDA context and allocator fragmentation, not in the estimate
SMALLEST_LOSS_CHUNK = 128
SMALLEST_RANK = 16
ESTIMATED = frozenset(inspect.signature(estimate_memory).parameters)  # the settings the estimate reads
LEAST_SAVING = 2**24  # a lever that saves less than 16 MiB is not worth a line of the plan


@dataclass
class Step:
    """One change of the plan: the field, its new value, why, and the estimated peak after it (bytes)."""

    field: str
    value: Any
    why: str
    total: int
    spends: bool = False  # True: spends room to spare (the estimate rises), False: saves memory


@dataclass
class Plan:
    """The settings chosen for a budget, the steps that led there and the final estimate.

    ``budget`` is what the user gave; ``headroom`` of it is kept free, so the plan fits when ``total``
    is at most ``budget - headroom``. ``notes`` are advice that changed nothing (a field the user set)."""

    settings: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    total: int = 0
    budget: int = 0
    headroom: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def target(self) -> int:
        """The bytes the estimate may reach: the budget less the headroom."""
        return self.budget - self.headroom

    @property
    def fits(self) -> bool:
        return self.total <= self.target

    def lines(self) -> list[str]:
        """The plan as text: one line per change, the advice, then the result."""
        out = [f"  {s.field} = {s.value}: {s.why} -> {size_text(s.total)}" for s in self.steps]
        out += [f"  note: {note}" for note in self.notes]
        verdict = "fits" if self.fits else "does not fit"
        out.append(f"  estimate {size_text(self.total)} of the {size_text(self.budget)} budget "
                   f"({size_text(self.headroom)} kept free for what the estimate leaves out): {verdict}")
        return out


@dataclass(frozen=True)
class Lever:
    """A change of ``field`` (and of ``also``, set together): ``propose`` gives the next value (None: nothing
    more to do).

    ``quality``: the held-out loss it cost (nats, + worse) where measured, with ``source``; ``compute``:
    the extra time per step it costs (a fraction, negative when it saves time)."""

    field: str
    propose: Callable[[dict[str, Any]], Any]
    why: str
    quality: float
    compute: float
    source: str
    also: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field, *self.also)


def _halve_batch(s: dict[str, Any]) -> Any:
    batch = s["per_device_train_batch_size"]
    return batch // 2 if batch > 1 else None


def _half_chunk(s: dict[str, Any]) -> Any:
    """Half the loss chunk (the standard loss counts as one chunk of the whole batch), down to the smallest."""
    tokens = s["per_device_train_batch_size"] * s["max_seq_length"]
    chunk = min(s["loss_chunk_size"] or tokens, tokens) // 2
    return chunk if chunk >= SMALLEST_LOSS_CHUNK else None


def _switch(name: str, to: Any, when: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda s: to if s[name] == when else None


MEMORY_OPTIONS = "docs/RESULTS.md, the memory options on SmolLM2 (3 seeds)"
FROZEN_QUANTIZATION = "docs/RESULTS.md, frozen layers in int8 or NF4 (3 seeds, both task families)"
# Held-out loss against unquantized frozen layers, the worse family of the two (SmolLM2, quick setting).
INT8_COST, INT8_SOURCE = 0.006, "+0.006 +- 0.015 on the words family (arithmetic: +0.002)"
NF4_COST, NF4_SOURCE = 0.218, "+0.218 +- 0.087 on the words family (arithmetic: +0.072)"
WORDS = "docs/RESULTS.md, the defaults on the words family (3 seeds)"
LEVERS: list[Lever] = [
    Lever("loss_chunk_size", _switch("loss_chunk_size", 1024, 0), "the loss over chunks of 1024 tokens, no full "
          "logits", 0.0, -0.18, "the same loss (docs/PERFORMANCE.md: 0.82x the time)"),
    Lever("fused_step", _switch("fused_step", True, False), "each update inside backward, one gradient at a time",
          0.125, -0.05, WORDS + ": +0.125 +- 0.251 (chain_sum, quick: +0.003)"),
    Lever("train_embeddings", lambda s: False if s["train_embeddings"] or s["train_lm_head"] else None,
          "the embeddings and the output head frozen (backward stops at the lowest sampled layer)", 0.416, -0.2,
          WORDS + ": frozen with the fused step, +0.416 +- 0.302 (chain_sum, main: +0.015)", also=("train_lm_head",)),
    Lever("outside_optimizer", _switch("outside_optimizer", "adamw8bit", "adamw"), "8-bit moments for the weights "
          "outside the layers", -0.001, 0.0, MEMORY_OPTIONS + ": -0.001 +- 0.000"),
    Lever("gradient_checkpointing", _switch("gradient_checkpointing", True, False), "recompute each layer in "
          "backward (about a third more compute)", 0.0, 0.33, "the same gradients"),
    Lever("loss_chunk_size", lambda s: _half_chunk(s), "half the loss chunk", 0.0, 0.01, "the same loss"),
    Lever("per_device_train_batch_size", _halve_batch, "half the batch, twice the gradient accumulation (same "
          "effective batch)", 0.0, 0.1, "the same gradients, smaller matmuls"),
    Lever("svd_method", lambda s: "gram" if s["svd_method"] in ("auto", "exact") else None, "the projector from the "
          "Gram matrix for every weight", 0.0, 0.0,
          "the same subspace (docs/PERFORMANCE.md)"),
    Lever("dtype", _switch("dtype", "bfloat16", "float32"), "bf16 weights (half the bytes), as GPUs train", 0.0, -0.5,
          "taken as free, so a float32 model on a GPU goes to bf16 before any lossy lever (docs/RESULTS.md, bf16 "
          "weights: pure bf16 learns less at a small lr; --master_weights keeps fp32 copies of what trains)"),
    Lever("frozen_quantization", _switch("frozen_quantization", "int8", "none"), "frozen decoder weights in int8 (a "
          "byte a value, one scale per row)", INT8_COST, 0.1, FROZEN_QUANTIZATION + ": int8 " + INT8_SOURCE),
    Lever("frozen_quantization", _switch("frozen_quantization", "nf4", "int8"), "frozen decoder weights in NF4 rather "
          "than int8 (4 bits a value)", NF4_COST - INT8_COST, 0.0, FROZEN_QUANTIZATION + ": NF4 " + NF4_SOURCE),
    Lever("sampling_granularity", _switch("sampling_granularity", "layer", "module"), "whole layers instead of "
          "single weights (fewer layers keep their activations for backward)", 0.181, 0.0,
          "docs/RESULTS.md, sampling: single weights -0.181 +- 0.091 on the words family, -0.023 on arithmetic"),
    Lever("num_active_layers", lambda s: s["num_active_layers"] - 1 if s["num_active_layers"] > 2 else None,
          "one sampled layer (or layer's worth) fewer", 0.009, 0.0, "docs/RESULTS.md, ablations: gamma 5 -> 2 +0.026"),
    Lever("num_active_layers", _switch("num_active_layers", 1, 2), "one sampled layer (or layer's worth) fewer",
          0.024, 0.0, "docs/RESULTS.md, ablations: gamma 2 -> 1 +0.024"),
    Lever("rank", lambda s: max(SMALLEST_RANK, s["rank"] // 2) if s["rank"] > SMALLEST_RANK else None,
          "half the GaLore rank", 0.05, 0.0, "not measured: taken as costly, so it comes last"),
]
SPEND: list[Lever] = [
    Lever("num_active_layers", lambda s: s["num_active_layers"] + 1, "one more sampled layer: room to spare, and "
          "more layers at a time trained better", -0.009, 0.05, "docs/RESULTS.md, the equal-memory front: single "
          "weights at 2 -> 5 -> 6 layers' worth, 1.552 -> 1.539 -> 1.532"),
]
# No more sampled layers than this share of the model: on the front (docs/RESULTS.md, SmolLM2's 30 layers) the
# held-out loss stopped falling at about a fifth (6 layers' worth 1.532, 8: 1.533, paired +0.001 +- 0.027) while
# forgetting rose (+2.39 +- 2.13 news perplexity, significant), and every newly drawn layer computes fresh GaLore
# projectors. Room left past it stays unspent, and the plan says so.
SPEND_LAYER_SHARE = 0.2
OPTION_OF = {"fused_step", "outside_optimizer", "frozen_quantization", "master_weights"}


def plan_for_budget(model_config: dict[str, Any], method: str, budget: int, settings: dict[str, Any],
                    fixed: frozenset[str] = frozenset(), headroom: int = 0) -> Plan:
    """The settings for ``method`` with the best quality whose estimate fits ``budget - headroom`` bytes.

    ``settings`` are ``estimate_memory``'s keyword arguments (the run fields ``per_device_train_batch_size``,
    ``num_active_layers``, ``gradient_accumulation_steps``, ...); ``fixed`` the fields the user set,
    never changed. The plan may not fit: check :attr:`Plan.fits`."""
    spec, device = get_method(method), settings.get("device", "cuda")
    defaults = {k: v for k, v in spec.resolved_defaults().items() if k in ESTIMATED and settings.get(k) is None}
    settings = {**settings, **defaults}  # the method's defaults that change the estimate
    plan = Plan(dict(settings), budget=budget, headroom=headroom, total=_total(model_config, method, settings))
    levers = [lv for lv in LEVERS if _usable(lv, spec, fixed, device)]
    while not plan.fits and _apply_cheapest(plan, levers, model_config, method):
        pass
    if plan.fits:
        _spend(plan, [lv for lv in SPEND if _usable(lv, spec, fixed, device)], model_config, method, settings)
        _drop_detours(plan, settings, model_config, method)
    elif "dtype" in fixed and settings.get("dtype") == "float32" and device == "cuda":
        plan.notes.append("dtype float32 was kept because you set it: bfloat16 halves the weights' bytes")
    return plan


def _usable(lever: Lever, spec: Any, fixed: frozenset[str], device: str) -> bool:
    """Whether the plan may pull ``lever`` for this method and device."""
    if set(lever.fields) & fixed or (lever.field in OPTION_OF and not spec.serves(lever.field)):
        return False
    if lever.field == "num_active_layers" and not spec.samples_layers:
        return False
    if lever.field == "rank" and not spec.galore:
        return False
    if lever.field in ("train_embeddings", "train_lm_head") and spec.outside != "config":
        return False
    return not (lever.field == "dtype" and device != "cuda")


def _trial(plan: Plan, lever: Lever) -> dict[str, Any] | None:
    value = lever.propose(plan.settings)
    return None if value is None else _changed(plan.settings, lever.fields, value)


def _changed(settings: dict[str, Any], fields: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``settings`` with ``fields`` set to ``value`` (half the batch doubles the gradient accumulation)."""
    out = dict(settings, **{name: value for name in fields})
    if fields[0] == "per_device_train_batch_size":
        out["gradient_accumulation_steps"] = settings.get("gradient_accumulation_steps", 1) * 2
    return out


def _apply_cheapest(plan: Plan, levers: list[Lever], model_config: dict[str, Any], method: str) -> bool:
    """Apply the lever with the least quality (then compute) cost per GiB saved; False when none saves any."""
    best = None
    for order, lever in enumerate(levers):
        trial = _trial(plan, lever)
        if trial is None:
            continue
        total = _total(model_config, method, trial)
        if plan.total - total < LEAST_SAVING:  # it does not reach the peak (yet: it may once another lever moved it)
            continue
        saved = (plan.total - total) / 2**30
        key = (max(lever.quality, 0.0) / saved, lever.compute / saved, order)
        if best is None or key < best[0]:
            best = (key, lever, trial, total)
    if best is None:
        return False
    _, lever, trial, total = best
    plan.settings, plan.total = trial, total
    plan.steps.append(Step(", ".join(lever.fields), trial[lever.field], lever.why, total))
    return True


def _unspent_note(plan: Plan, field: str, cap: int, layers: int, share_cap: int) -> str:
    """Why the room left under the target stays unspent: ``field`` is at its cap (``share_cap``, a share of the
    layers, or the value the plan started from where that is already above it)."""
    share = f"{SPEND_LAYER_SHARE:.0%} of the {layers} layers"
    where = f"stays at {cap}, where it started (above {share})" if cap > share_cap else f"stops at {cap}, {share}"
    return (f"{size_text(plan.target - plan.total)} left unspent: {field} {where}; more did not train better on the "
            "equal-memory front and forgot more (docs/RESULTS.md)")


def _spend(plan: Plan, levers: list[Lever], model_config: dict[str, Any], method: str,
           start: dict[str, Any]) -> None:
    """Spend the room left under the target on the levers that improve quality, each as far as it fits and up to
    its cap (a field the plan had to lower first comes back up: a later lever may have made the room; those
    steps down and back up are then left out by :func:`_drop_detours`)."""
    layers = model_config.get("text_config", model_config).get("num_hidden_layers") or 0
    share_cap = int(layers * SPEND_LAYER_SHARE)
    for lever in levers:
        cap = max(share_cap, start[lever.field])
        while True:
            trial = _trial(plan, lever)
            if trial is None:
                break
            total = _total(model_config, method, trial)
            if total > plan.target:
                break
            if trial[lever.field] > cap:
                plan.notes.append(_unspent_note(plan, lever.field, cap, layers, share_cap))
                break
            plan.settings, plan.total = trial, total
            plan.steps.append(Step(lever.field, trial[lever.field], lever.why, total, spends=True))


def _drop_detours(plan: Plan, start: dict[str, Any], model_config: dict[str, Any], method: str) -> None:
    """Leave out of ``plan.steps`` what a later step undid: a field lowered step by step while it was the cheapest
    lever, then raised back once another lever made the room. Only the steps between its start and its final value
    stay (for a field raised above its start, only those raising it); the estimates are computed again along the
    shorter path, which ends at the same settings."""
    spent = {step.field for step in plan.steps if step.spends}
    if not spent:
        return
    final, kept = plan.settings, []
    for step in plan.steps:
        if step.field in spent:
            low, high = sorted((start[step.field], final[step.field]))
            if step.spends != (final[step.field] > start[step.field]) or not low <= step.value <= high \
                    or step.value == start[step.field]:
                continue
        kept.append(step)
    settings = dict(start)
    for step in kept:
        settings = _changed(settings, tuple(step.field.split(", ")), step.value)
        step.total = _total(model_config, method, settings)
    plan.steps = kept


def _total(model_config: dict[str, Any], method: str, settings: dict[str, Any]) -> int:
    return estimate_memory(model_config, method, **settings).total
