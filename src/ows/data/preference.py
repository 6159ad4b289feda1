"""Preference rows for ``ows train --task dpo``: prompt, chosen and rejected, checked before any model loads.

Each row holds ``prompt``, ``chosen`` and ``rejected``: three strings, or (TRL's conversational form)
lists of ``{role, content}`` messages: the prompt's turns, and the assistant's answer(s) for chosen and
rejected. A row whose chosen equals its rejected teaches nothing: it is dropped with a warning (an error
when no row is left).
"""

from __future__ import annotations

import logging
from typing import Any

from .records import check_messages, load_records

logger = logging.getLogger(__name__)
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
_FIX = "each row needs prompt, chosen and rejected: strings, or lists of {role, content} chat messages"


def _check_value(value: Any, name: str, where: str) -> None:
    if isinstance(value, str):
        if name != "prompt" and not value.strip():
            raise ValueError(f"{where} field {name!r} is empty: give the {name} answer's text")
        return
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value):
        check_messages(value, f"{where} field {name!r}")
        return
    raise ValueError(f"{where} field {name!r} is {type(value).__name__} {str(value)[:40]!r}: {_FIX}")


def check_preference_rows(rows: list[dict], source: str) -> list[dict]:
    """The rows with their three fields checked (one-line ``ValueError`` naming row and field); same-answer rows dropped."""
    kept = []
    for index, row in enumerate(rows):
        where = f"{source} row {index}"
        missing = [name for name in PREFERENCE_FIELDS if row.get(name) is None]
        if missing:
            raise ValueError(f"{where} is missing field {missing[0]!r} (columns: {', '.join(sorted(row))}): {_FIX}")
        for name in PREFERENCE_FIELDS:
            _check_value(row[name], name, where)
        if isinstance(row["prompt"], str) != isinstance(row["chosen"], str) or \
                isinstance(row["chosen"], str) != isinstance(row["rejected"], str):
            raise ValueError(f"{where} mixes strings and message lists in prompt, chosen and rejected: give all three "
                             "as strings or all three as lists of messages")
        if row["chosen"] == row["rejected"]:
            continue
        kept.append({name: row[name] for name in PREFERENCE_FIELDS})
    if not kept:
        raise ValueError(f"{source}: every row's chosen equals its rejected: a preference pair needs two different "
                         "answers")
    if len(kept) < len(rows):
        logger.warning("%s: %d rows whose chosen equals rejected were dropped", source, len(rows) - len(kept))
    return kept


def load_preference_rows(path: str, split: str | None = None) -> list[dict]:
    """Read and check the preference rows of a .json/.jsonl/.csv/.parquet file or a saved dataset folder."""
    return check_preference_rows(load_records(path, split), f"dataset={path!r}")
