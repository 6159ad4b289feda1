"""Shared CLI plumbing: usage errors, logging to stderr, argument helpers."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any, NoReturn

from ..errors import UsageError, did_you_mean

__all__ = ["ArgumentParser", "UsageError", "did_you_mean", "setup_logging"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one ``UsageError`` line (exit 2) instead of exiting.

    Prefixes of flags are not accepted (``--num_active 3`` is an error, not ``--num_active_layers 3``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):  # name the closest flag of each unknown one
            flags = [w for w in message.split()[2:] if w.startswith("--")]
            message += "".join(did_you_mean(f.split("=")[0], self._option_string_actions) for f in flags)
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def _parse_optional(self, arg_string: str) -> Any:
        """A word starting with a minus and a digit (``-1GiB``, ``-1e-3``) is a value, never a flag: the field's own
        check then names it (argparse alone takes only plain negative numbers as values)."""
        if re.match(r"^-\d", arg_string):
            return None
        return super()._parse_optional(arg_string)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the call (it may be replaced, e.g. in tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record; while a tqdm bar is drawn, above it (the bar is redrawn below)."""
        bars = sys.modules.get("tqdm")
        if bars is None:
            return super().emit(record)
        try:
            bars.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging never raises
            self.handleError(record)


def setup_logging() -> None:
    """Human output goes to stdout; logs to stderr, at the level of ``OWS_LOG_LEVEL`` (DEBUG, INFO (default),
    WARNING, ERROR)."""
    level = os.environ.get("OWS_LOG_LEVEL", "INFO").upper()
    root = logging.getLogger()
    if not any(getattr(h, "_ows", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._ows = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.getLogger("ows").setLevel(level)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # optional CPU-kernel notice, not actionable
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
