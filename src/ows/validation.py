"""Checks of single values, each raising a one-line ``ValueError`` that names the field, the value and the fix.

Shared by :class:`ows.config.OWSConfig`, the samplers and the memory estimator; imports no torch."""

from __future__ import annotations

import math
from typing import Any


def check_active_layers(num_active: int, num_layers: int, nonzero: int | None = None) -> None:
    """Raise ``ValueError`` unless 1 <= ``num_active`` <= ``num_layers`` (and <= ``nonzero`` layers that can be drawn).

    The one check of gamma against a model, used by the CLI's early check, the API and the estimator.
    """
    if isinstance(num_active, bool) or not isinstance(num_active, int) or num_active < 1:
        raise ValueError(f"num_active_layers={num_active!r} is invalid: must be an integer >= 1")
    if num_active > num_layers:
        raise ValueError(f"num_active_layers={num_active} is larger than the model's {num_layers} decoder layers: "
                         f"use a value between 1 and {num_layers}")
    if nonzero is not None and nonzero < num_active:
        raise ValueError(f"num_active_layers={num_active} but only {nonzero} layers have a non-zero probability (of "
                         f"{num_layers}): lower num_active_layers, or use sampling_strategy='uniform' or a "
                         "sampling_temperature < 1")


def check_int(cfg: Any, name: str, minimum: int) -> None:
    """``cfg.<name>`` must be an integer (not a bool) >= ``minimum``."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"OWSConfig.{name}={value!r} is invalid: must be an integer >= {minimum}")


def check_float(cfg: Any, name: str, minimum: float, strict: bool = False) -> None:
    """``cfg.<name>`` must be a finite number >= ``minimum`` (> with ``strict``)."""
    value = getattr(cfg, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"OWSConfig.{name}={value!r} is invalid: must be a finite number {bound}")


def check_bool(cfg: Any, name: str) -> None:
    """``cfg.<name>`` must be True or False."""
    value = getattr(cfg, name)
    if not isinstance(value, bool):
        raise ValueError(f"OWSConfig.{name}={value!r} is invalid: must be true or false")


def check_choice(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    """``cfg.<name>`` must be one of ``choices``."""
    value = getattr(cfg, name)
    if value not in choices:
        raise ValueError(f"OWSConfig.{name}={value!r} is invalid: use one of {', '.join(choices)}")
