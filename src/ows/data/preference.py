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
        if name != "prompt":
            _check_answer(value, name, where)
        return
    raise ValueError(f"{where} field {name!r} is {type(value).__name__} {str(value)[:40]!r}: {_FIX}")


def _check_answer(messages: list[dict], name: str, where: str) -> None:
    """A chosen or rejected message list holds the assistant's answer: an assistant turn, none of them empty."""
    answers = [m for m in messages if m["role"] == "assistant"]
    if not answers:
        roles = ", ".join(m["role"] for m in messages)
        raise ValueError(f"{where} field {name!r} has no assistant message (roles: {roles}): give the assistant's "
                         f"{name} answer as a {{\"role\": \"assistant\", \"content\": ...}} message")
    if any(not m["content"].strip() for m in answers):
        raise ValueError(f"{where} field {name!r} has an empty assistant message: give the {name} answer's text")


def check_prompt_lengths(rows: list[dict], tokenizer: Any, max_length: int, source: str) -> None:
    """TRL drops a pair whose prompt alone fills ``max_length`` tokens (no answer token would be left): a warning
    for some, a ``ValueError`` when that is every pair (before any model loads)."""
    lengths = [_prompt_tokens(row["prompt"], tokenizer) for row in rows]
    kept = sum(length < max_length for length in lengths)
    if kept == 0:
        raise ValueError(f"{source}: every prompt is at least max_seq_length={max_length} tokens long (the shortest "
                         f"has {min(lengths)}), so no answer token fits: raise max_seq_length above {min(lengths)} "
                         "or shorten the prompts")
    if kept < len(rows):
        logger.warning("%s: %d of %d pairs have a prompt of max_seq_length=%d tokens or more and are dropped by the "
                       "trainer", source, len(rows) - kept, len(rows), max_length)


def _prompt_tokens(prompt: Any, tokenizer: Any) -> int:
    """Tokens of a prompt as TRL counts them: the text, or the chat template with the generation prompt."""
    if isinstance(prompt, str):
        return len(tokenizer(prompt)["input_ids"])
    ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def check_preference_rows(rows: list[dict], source: str) -> list[dict]:
    """The rows with their three fields checked (one-line ``ValueError`` naming row and field); same-answer rows dropped."""
    kept = []
    for index, row in enumerate(rows, start=1):  # numbered from 1, as the rows of every other format
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
