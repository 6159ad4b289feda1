"""Statistics over seeds: mean with a 95 % confidence interval, and paired differences on the same seeds.

With n seeds the interval is mean ± t(0.975, n - 1) · s / √n (Student's t, scipy). A paired difference
compares two rows seed by seed (the same data order and, for the sampling methods, the same random
keys of the layer draws), which removes what the seeds share; it is significant at 5 % when its
interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


@dataclass
class Interval:
    """A mean, its 95 % half-width (None for one value) and how many values."""

    mean: float
    half: float | None
    n: int

    def text(self, fmt: str = "{:.3f}") -> str:
        body = fmt.format(self.mean)
        return body if self.half is None else f"{body} ± {fmt.format(self.half).rstrip('%')}"

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0 (for differences)."""
        return self.half is not None and abs(self.mean) > self.half


def mean_ci(values: Sequence[float | None]) -> Interval | None:
    """Mean and 95 % interval of the finite values (None when there are none)."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return None
    if len(kept) == 1:
        return Interval(kept[0], None, 1)
    half = t_quantile(len(kept) - 1) * statistics.stdev(kept) / math.sqrt(len(kept))
    return Interval(statistics.fmean(kept), half, len(kept))


def by_seed(runs: list[dict[str, Any]], row: str, metric: str) -> dict[int, float]:
    """``{seed: value}`` of one benchmark row's metric."""
    return {r["seed"]: r[metric] for r in runs if r["method"] == row and r.get(metric) is not None}


def paired(runs: list[dict[str, Any]], row: str, reference: str, metric: str) -> Interval | None:
    """The mean difference ``row - reference`` over the seeds both ran, with its 95 % interval."""
    a, b = by_seed(runs, row, metric), by_seed(runs, reference, metric)
    common = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in common]) if common else None
