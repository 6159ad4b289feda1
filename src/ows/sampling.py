"""Block sampling: probabilities from outlier ratios, and a reproducible schedule of active blocks.

A block is a whole decoder layer (``sampling_granularity: layer``) or one 2-D weight of a layer
(``module``). :class:`LayerSampler` draws gamma layers, :class:`BudgetSampler` draws weights until a
parameter budget is filled; both are pure functions of (seed, period). The ``gradient`` strategy's
sampler keeps state (:mod:`ows.importance`) and draws with the same keys.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch

from .choices import SAMPLING_STRATEGIES
from .validation import check_active_layers
from .granularity import check_budget, fill_budget


def _normalise(weights: Sequence[float], what: str) -> list[float]:
    values = [float(w) for w in weights]
    if not values:
        raise ValueError(f"{what} is empty: need one value per decoder layer")
    bad = [i for i, w in enumerate(values) if not math.isfinite(w) or w < 0]
    if bad:
        raise ValueError(
            f"{what}[{bad[0]}]={values[bad[0]]!r} is invalid: every value must be a finite number >= 0"
        )
    total = sum(values)
    if total <= 0:
        raise ValueError(
            f"{what} are all zero: no layer can be sampled; use sampling_strategy='uniform' or other weights"
        )
    return [w / total for w in values]


def sampling_probabilities(
    ratios: Sequence[float] | None,
    strategy: str = "owl",
    *,
    num_layers: int | None = None,
    weights: Sequence[float] | None = None,
    temperature: float = 1.0,
) -> list[float]:
    """Probability of drawing each decoder layer, summing to 1, in layer order.

    ``owl``: p_l proportional to ratio_l ** temperature (temperature 1 is the OWS paper, 0 uniform).
    ``uniform``: LISA. ``owl_reverse``: the ``owl`` probabilities handed out in reverse rank order, so the
    layer with the most outliers gets the smallest probability. ``increase`` / ``decrease``: proportional
    to depth (l + 1) or to (L - l). ``weights``: the user's ``weights``, normalised. ``gradient``: the
    order of its first visits (its prior): ``owl``'s probabilities when ``ratios`` are given, else uniform.
    """
    if strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"sampling_strategy={strategy!r} is unknown: use one of {', '.join(SAMPLING_STRATEGIES)}")
    if strategy == "weights":
        if weights is None:
            raise ValueError("sampling_strategy='weights' needs sampling_weights: one weight per decoder layer")
        probs = _normalise(weights, "sampling_weights")
        _check_count(len(probs), num_layers, "sampling_weights")
        return probs
    count = num_layers if ratios is None else len(ratios)
    if ratios is not None:
        _check_count(len(ratios), num_layers, "outlier profile")
    if count is None or count < 1:
        raise ValueError(f"sampling_strategy={strategy!r} needs the number of layers or an outlier profile")
    if strategy == "uniform" or (strategy == "gradient" and ratios is None):
        return [1.0 / count] * count
    if strategy == "increase":
        return _normalise([l + 1 for l in range(count)], "increase weights")
    if strategy == "decrease":
        return _normalise([count - l for l in range(count)], "decrease weights")
    if ratios is None:
        raise ValueError(
            f"sampling_strategy={strategy!r} needs an outlier profile: run ows.profile_outliers(model, batches) "
            "or use sampling_strategy='uniform'"
        )
    raw = [float(r) for r in ratios]
    if any(not math.isfinite(r) or r < 0 for r in raw):
        raise ValueError(f"outlier ratios {raw} contain NaN, inf or negative values: recompute the profile")
    powered = [r**temperature if r > 0 else (1.0 if temperature == 0 else 0.0) for r in raw]
    probs = _normalise(powered, "outlier ratios")
    if strategy == "owl_reverse":
        order = sorted(range(count), key=lambda l: (probs[l], l))
        reversed_probs = [0.0] * count
        for src, dst in zip(order, reversed(order)):
            reversed_probs[dst] = probs[src]
        return reversed_probs
    return probs


def _check_count(got: int, expected: int | None, what: str) -> None:
    if expected is not None and got != expected:
        raise ValueError(
            f"{what} has {got} layers but the model has {expected} decoder layers: "
            "profile this model (ows.profile_outliers) or give one weight per layer"
        )


def _period_generator(seed: int, period: int) -> torch.Generator:
    # A hash keeps the streams of neighbouring (seed, period) pairs unrelated, on every platform.
    digest = hashlib.sha256(f"ows-layer-sampler:{seed}:{period}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _keys(probabilities: Sequence[float], seed: int, period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exponential keys log(u)/p of a period (-inf where p = 0) and the log-uniforms log(u) they come from."""
    probs = torch.tensor(list(probabilities), dtype=torch.float64)
    uniforms = torch.rand(len(probs), generator=_period_generator(seed, period), dtype=torch.float64)
    logs = uniforms.clamp_min(1e-300).log()
    return torch.where(probs > 0, logs / probs, torch.tensor(-math.inf, dtype=torch.float64)), logs


def draw_layers(probabilities: Sequence[float], num_active: int, seed: int, period: int) -> tuple[int, ...]:
    """Draw ``num_active`` distinct layers without replacement, a pure function of its arguments.

    Uses exponential keys (Efraimidis-Spirakis): key_l = log(u_l) / p_l, keep the largest. This is
    the same distribution as drawing one layer at a time proportional to p and removing it.
    """
    keys, _ = _keys(probabilities, seed, period)
    chosen = torch.topk(keys, num_active).indices.tolist()
    return tuple(sorted(chosen))


def draw_order(probabilities: Sequence[float], seed: int, period: int, groups: Sequence[int] | None = None,
               include_zero: bool = False) -> list[int]:
    """Every block in the order a draw of period ``period`` offers them, a pure function of its arguments.

    By ``groups`` first (lower first; None: one group), then blocks with p > 0 by descending exponential
    key (the order of drawing one at a time proportional to p, without replacement), then, with
    ``include_zero``, the blocks with p = 0 in uniform random order (else they are left out).
    """
    keys, logs = (t.tolist() for t in _keys(probabilities, seed, period))
    groups = list(groups) if groups is not None else [0] * len(keys)
    positive = [float(p) > 0 for p in probabilities]
    blocks = [b for b in range(len(keys)) if positive[b] or include_zero]
    return sorted(blocks, key=lambda b: (groups[b], not positive[b], -(keys[b] if positive[b] else logs[b]), b))


class _PeriodSampler:
    """Steps to periods, and a schedule from ``period_blocks``; subclasses draw the blocks of a period."""

    stateful = False  # True: the draw depends on state measured during the run (saved with checkpoints)
    interval: int
    seed: int

    def _set_interval(self, interval: int, seed: int) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"sample_interval={interval!r} is invalid: must be an integer >= 1")
        self.interval = interval
        self.seed = int(seed)

    def period(self, step: int) -> int:
        """Index of the sampling period that optimizer step ``step`` (0-based) belongs to."""
        if step < 0:
            raise ValueError(f"step={step} is invalid: optimizer steps count from 0")
        return step // self.interval

    def period_blocks(self, period: int) -> tuple[int, ...]:
        """Sorted indices of the blocks trained in ``period``."""
        raise NotImplementedError

    def active_blocks(self, step: int) -> tuple[int, ...]:
        """Sorted indices of the blocks trained at optimizer step ``step``."""
        return self.period_blocks(self.period(step))

    def ran(self, num_steps: int) -> list[tuple[int, tuple[int, ...]]]:
        """(period, blocks) of every period that starts before ``num_steps``."""
        return [(k, self.period_blocks(k)) for k in range(max(0, math.ceil(num_steps / self.interval)))]

    def schedule(self, num_steps: int) -> list[tuple[int, ...]]:
        """Active blocks of every period that starts before ``num_steps``."""
        return [blocks for _, blocks in self.ran(num_steps)]


class LayerSampler(_PeriodSampler):
    """Which decoder layers are active at an optimizer step.

    The active set for period ``k = step // interval`` depends only on (seed, k, probabilities), so it is
    the same after a resume and on every rank, and no sampler state needs saving.
    """

    def __init__(self, probabilities: Sequence[float], num_active: int, interval: int, seed: int = 0) -> None:
        self.probabilities = _normalise(probabilities, "sampling probabilities")
        self.num_layers = self.num_blocks = len(self.probabilities)
        check_active_layers(num_active, self.num_layers, sum(p > 0 for p in self.probabilities))
        self._set_interval(interval, seed)
        self.num_active = num_active

    def period_blocks(self, period: int) -> tuple[int, ...]:
        return draw_layers(self.probabilities, self.num_active, self.seed, period)

    def active_layers(self, step: int) -> tuple[int, ...]:
        """Sorted indices of the layers trained at optimizer step ``step``."""
        return self.active_blocks(step)


class BudgetSampler(_PeriodSampler):
    """Which blocks (single weights) are active at an optimizer step, drawn until ``budget`` parameters are filled.

    Each period walks the blocks with p > 0 in :func:`draw_order` and keeps every block that still fits
    (:func:`ows.granularity.fill_budget`): a pure function of (seed, period, probabilities, sizes, budget).
    """

    def __init__(self, probabilities: Sequence[float], sizes: Sequence[int], budget: int, interval: int,
                 seed: int = 0) -> None:
        self.probabilities = _normalise(probabilities, "sampling probabilities")
        if len(sizes) != len(self.probabilities):
            raise ValueError(f"{len(sizes)} block sizes for {len(self.probabilities)} probabilities: give one size "
                             "per block")
        self.sizes = [int(s) for s in sizes]
        self.num_blocks = len(self.sizes)
        check_budget(budget, self.sizes, sum(s for s, p in zip(self.sizes, self.probabilities) if p > 0))
        self.budget = int(budget)
        self._set_interval(interval, seed)

    def period_blocks(self, period: int) -> tuple[int, ...]:
        return fill_budget(draw_order(self.probabilities, self.seed, period), self.sizes, self.budget)
