"""The error every part of ows raises for bad input found before long work."""

from __future__ import annotations

from typing import Iterable


class UsageError(Exception):
    """Bad input from the user, in one line naming the field, the value and the fix (``ows``: exit code 2)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates`` (difflib), or ``''``."""
    import difflib

    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
