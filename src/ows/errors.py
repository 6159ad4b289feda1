"""The error every part of ows raises for bad input found before long work."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user, in one line naming the field, the value and the fix (``ows``: exit code 2)."""
