"""Sizes as people write them: ``16GiB``, ``15.5 GB``, ``12000MiB`` read into bytes, and bytes shown in GiB."""

from __future__ import annotations

import re

UNITS = {"": 2**30, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30,
         "tb": 10**12, "tib": 2**40}


def parse_budget(text: str, field_name: str = "max_memory", zero: bool = False) -> int:
    """Bytes of a budget such as ``16GiB``, ``15.5 GB`` or ``12000MiB`` (a bare number is GiB); ``zero``: 0 is
    a valid size too (a headroom)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    value = float(match.group(1)) if match else 0.0  # the pattern has no sign: never negative
    if match is None or unit not in UNITS or (value == 0 and not zero):
        kind = "a size of 0 or more" if zero else "a positive size"
        raise ValueError(f"{field_name}={text!r} is invalid: give {kind} such as 16GiB, 15.5GB or 12000MiB")
    return int(value * UNITS[unit])


def size_text(nbytes: int) -> str:
    """``9.71 GiB``, or ``19.2 MiB`` below a GiB."""
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
