"""Tokenize rows with loss masks, truncate or pack them, and pad batches.

Rows become ``{"input_ids", "attention_mask", "labels"}`` lists; ``labels`` is -100 wherever no loss is
taken (prompt tokens when ``completion_only_loss``, and padding added by :class:`PadCollator`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import torch

from ..losses import IGNORE_INDEX
from .chat import chat_segments
from .records import as_messages, detect_format, has_assistant_turn, to_prompt_completion

logger = logging.getLogger(__name__)

@dataclass
class EncodeStats:
    """Counts reported after encoding."""

    examples: int = 0
    truncated: int = 0
    dropped_empty: int = 0
    tokens: int = 0


def _ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens added by the tokenizer."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _bos(tokenizer: Any) -> list[int]:
    """[bos] when the tokenizer normally starts its encodings with BOS, else []."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    return [bos] if list(tokenizer("a")["input_ids"])[:1] == [bos] else []


def _pieces(record: dict, fmt: str, tokenizer: Any, style: str | None) -> list[tuple[list[int], bool]]:
    """Token ids of the example in pieces, each flagged True when it is completion (always-labelled) text."""
    if fmt == "messages" or style == "chat":
        if not getattr(tokenizer, "chat_template", None):
            other = "dataset_format prompt_completion" if fmt == "messages" else "template none"
            raise ValueError(f"dataset_format={fmt!r} with a chat template needs a tokenizer with a chat_template: use "
                             f"a tokenizer with a chat template, the path of a Jinja file as template, or {other}")
        rows = record["messages"] if fmt == "messages" else as_messages(record, fmt)
        messages = [{k: v for k, v in m.items() if v is not None} for m in rows]
        return [(_ids(tokenizer, text), out) for text, out in chat_segments(tokenizer, messages)]
    prompt, completion = to_prompt_completion(record, fmt, style)
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    bos = [] if record.get("chat") else _bos(tokenizer)  # a prompt rendered by a chat template holds its own
    return [(bos + _ids(tokenizer, prompt), False), (_ids(tokenizer, completion) + eos, True)]


def encode_example(record: dict, fmt: str, tokenizer: Any, max_seq_length: int, completion_only_loss: bool = True,
                   stats: EncodeStats | None = None, style: str | None = None) -> dict[str, list[int]] | None:
    """``input_ids``, ``attention_mask`` and ``labels`` of one row, truncated to ``max_seq_length``.

    Prompt formats: [bos if the tokenizer adds one] + prompt + completion + [eos] (``style`` as in
    :func:`ows.data.records.to_prompt_completion`; ``chat``: the row as a conversation, as 'messages');
    'text' labels every token. 'messages': the chat template's text; with ``completion_only_loss`` only
    the assistant turns (content and end-of-turn token) are labelled. A prompt/completion row marked
    ``chat`` (its prompt rendered by a chat template) gets no BOS. Returns None when no labelled token
    survives truncation.
    """
    ids: list[int] = []
    labels: list[int] = []
    for piece, is_output in _pieces(record, fmt, tokenizer, style):
        ids += piece
        labelled = is_output or not completion_only_loss or fmt == "text"
        labels += piece if labelled else [IGNORE_INDEX] * len(piece)
    stats = stats if stats is not None else EncodeStats()
    if len(ids) > max_seq_length:
        stats.truncated += 1
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
    if all(label == IGNORE_INDEX for label in labels):
        stats.dropped_empty += 1
        return None
    stats.examples += 1
    stats.tokens += len(ids)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def _pack(examples: list[dict], block: int) -> list[dict]:
    """Concatenate examples into blocks of ``block`` tokens (the last may be shorter), dropping blocks
    without a labelled token. Each block has ``position_ids`` that restart at 0 with every example (and at
    the block's start, where an example cut at the previous block's end goes on) and no ``attention_mask``: transformers
    then keeps each example's attention to itself (a block-diagonal causal mask for sdpa/eager, the
    sequence boundaries for flash_attention_2). The first token of each example after the first takes
    no loss (it would be predicted from the previous example)."""
    ids = [t for e in examples for t in e["input_ids"]]
    labels = [IGNORE_INDEX if i == 0 and n else t for n, e in enumerate(examples) for i, t in enumerate(e["labels"])]
    firsts = [i == 0 for e in examples for i in range(len(e["input_ids"]))]
    blocks = []
    for start in range(0, len(ids), block):
        chunk = labels[start:start + block]
        if any(label != IGNORE_INDEX for label in chunk):
            positions, at = [], 0
            for offset, first in enumerate(firsts[start:start + block]):
                at = 0 if first or offset == 0 else at + 1
                positions.append(at)
            blocks.append({"input_ids": ids[start:start + block], "labels": chunk, "position_ids": positions})
    return blocks


def encode_dataset(records: list[dict], fmt: str, tokenizer: Any, max_seq_length: int,
                   completion_only_loss: bool = True, packing: bool = False,
                   style: str | None = None) -> tuple[list[dict], EncodeStats]:
    """Encode every row (``fmt`` 'auto' is detected, an explicit one checked) and report the counts.

    ``packing`` concatenates the encoded examples (labels included, not truncated one by one: a long
    example continues in the next block) into blocks of exactly ``max_seq_length`` tokens; the last
    block may be shorter (the collator pads it) and blocks without a labelled token are dropped.
    Examples in a block do not attend to each other: position ids restart per example (see :func:`_pack`).
    ``style``: see :func:`encode_example`.
    """
    if max_seq_length < 1:
        raise ValueError(f"max_seq_length={max_seq_length} must be >= 1: raise it")
    fmt = detect_format(records, fmt)
    silent = [i for i, r in enumerate(records, start=1) if fmt == "messages" and completion_only_loss
              and not has_assistant_turn(r)]
    if silent:
        logger.warning("%d of %d rows have no assistant turn (first: row %d) and leave completion_only_loss no token "
                       "to learn: they are dropped", len(silent), len(records), silent[0])
        if len(silent) == len(records):
            raise ValueError(f"no row has an assistant turn (row {silent[0]} and all {len(records)} others), so "
                             "completion_only_loss leaves no token to learn: add the assistant's replies or set "
                             "completion_only_loss false")
    stats = EncodeStats()
    limit = sys.maxsize if packing else max_seq_length
    encoded = [e for r in records
               if (e := encode_example(r, fmt, tokenizer, limit, completion_only_loss, stats, style)) is not None]
    logger.info("encoded %d of %d examples (format %s): %d tokens, %d truncated, %d dropped without labels",
                stats.examples, len(records), fmt, stats.tokens, stats.truncated, stats.dropped_empty)
    if stats.truncated:
        logger.warning("%d of %d examples were longer than max_seq_length=%d and were truncated",
                       stats.truncated, len(records), max_seq_length)
    if stats.dropped_empty:
        logger.warning("%d of %d examples had no completion token within max_seq_length=%d and were dropped",
                       stats.dropped_empty, len(records), max_seq_length)
    if packing:
        encoded = _pack(encoded, max_seq_length)
    if not encoded:
        raise ValueError(f"no examples left after encoding {len(records)} rows (format {fmt}, "
                         f"max_seq_length={max_seq_length}): raise max_seq_length or check the data")
    return encoded, stats


class PadCollator:
    """Callable for a torch DataLoader / HF Trainer: right-pads encoded examples (dicts of lists) to the
    longest in the batch (``input_ids`` with ``pad_token_id``, ``labels`` with -100, ``attention_mask``
    and packed blocks' ``position_ids`` with 0) and returns a dict of LongTensors."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: set tokenizer.pad_token (e.g. to the eos token)")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of} must be >= 1 or None")
        self.pad_values = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX, "position_ids": 0}
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """The padded batch."""
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for key, pad in self.pad_values.items():
            if key in features[0]:
                rows = [list(f[key]) + [pad] * (length - len(f[key])) for f in features]
                batch[key] = torch.tensor(rows, dtype=torch.long)
        return batch
