"""Layer sampling: probabilities from outlier ratios, and a reproducible schedule of active layers."""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch

from .config import SAMPLING_STRATEGIES, check_active_layers


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
    to depth (l + 1) or to (L - l). ``weights``: the user's ``weights``, normalised.
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
    if strategy == "uniform":
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


def draw_layers(probabilities: Sequence[float], num_active: int, seed: int, period: int) -> tuple[int, ...]:
    """Draw ``num_active`` distinct layers without replacement, a pure function of its arguments.

    Uses exponential keys (Efraimidis-Spirakis): key_l = log(u_l) / p_l, keep the largest. This is
    the same distribution as drawing one layer at a time proportional to p and removing it.
    """
    probs = torch.tensor(list(probabilities), dtype=torch.float64)
    uniforms = torch.rand(len(probs), generator=_period_generator(seed, period), dtype=torch.float64)
    keys = torch.where(probs > 0, uniforms.clamp_min(1e-300).log() / probs, torch.tensor(-math.inf, dtype=torch.float64))
    chosen = torch.topk(keys, num_active).indices.tolist()
    return tuple(sorted(chosen))


class LayerSampler:
    """Which decoder layers are active at an optimizer step.

    The active set for period ``k = step // interval`` depends only on (seed, k, probabilities), so it is
    the same after a resume and on every rank, and no sampler state needs saving.
    """

    def __init__(self, probabilities: Sequence[float], num_active: int, interval: int, seed: int = 0) -> None:
        self.probabilities = _normalise(probabilities, "sampling probabilities")
        self.num_layers = len(self.probabilities)
        check_active_layers(num_active, self.num_layers, sum(p > 0 for p in self.probabilities))
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"sample_interval={interval!r} is invalid: must be an integer >= 1")
        self.num_active = num_active
        self.interval = interval
        self.seed = int(seed)

    def period(self, step: int) -> int:
        """Index of the sampling period that optimizer step ``step`` (0-based) belongs to."""
        if step < 0:
            raise ValueError(f"step={step} is invalid: optimizer steps count from 0")
        return step // self.interval

    def active_layers(self, step: int) -> tuple[int, ...]:
        """Sorted indices of the layers trained at optimizer step ``step``."""
        return draw_layers(self.probabilities, self.num_active, self.seed, self.period(step))

    def schedule(self, num_steps: int) -> list[tuple[int, ...]]:
        """Active layers of every period that starts before ``num_steps``."""
        periods = max(0, math.ceil(num_steps / self.interval))
        return [draw_layers(self.probabilities, self.num_active, self.seed, k) for k in range(periods)]
