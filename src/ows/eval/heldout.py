"""Held-out answer loss and exact match for prompt/completion records."""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch

from ..data.encode import PadCollator, encode_example
from ..layers import eval_mode
from .generation import generate_until

logger = logging.getLogger(__name__)


@torch.no_grad()
def answer_loss(model: Any, tokenizer: Any, records: Sequence[dict], batch_size: int = 16, max_seq_length: int = 512) -> float:
    """Mean cross-entropy (nats per token) over the completion tokens of ``records``, token-weighted."""
    examples = [e for e in (encode_example(r, "prompt_completion", tokenizer, max_seq_length, True) for r in records) if e]
    if not examples:
        raise ValueError("answer_loss needs at least one record with a non-empty completion")
    collate = PadCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with eval_mode(model):
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size]).items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits[:, :-1].float()
            targets = labels[:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += float(losses)
            count += int((targets != -100).sum())
    return total / count


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 16,
                     batch_size: int = 16) -> list[str]:
    """Greedy completions of ``prompts`` as written (no special tokens added); the prompt is not included."""
    return generate_until(model, tokenizer, prompts, (), max_new_tokens, batch_size, "held-out answers",
                          add_special_tokens=False)


def exact_match(
    model: Any, tokenizer: Any, records: Sequence[dict], scorer: Callable[[dict, str], float] | None = None,
    max_new_tokens: int | None = None, batch_size: int = 16,
) -> float:
    """Fraction of ``records`` answered exactly right by greedy generation.

    ``scorer(record, generated)`` grades one answer in [0, 1] (e.g. a reasoning-gym checker, which may
    give partial credit); only a full score counts. The default compares the first generated line
    with ``record['completion']`` after stripping whitespace.
    """
    if not records:
        raise ValueError("exact_match needs at least one record")
    if max_new_tokens is None:  # room for the longest reference answer and its end token
        max_new_tokens = 2 + max(len(tokenizer(str(r["completion"]), add_special_tokens=False)["input_ids"]) for r in records)
    answers = generate_answers(model, tokenizer, [r["prompt"] for r in records], max_new_tokens, batch_size)
    grade = scorer or _plain_match
    return sum(grade(r, a) >= 1.0 for r, a in zip(records, answers)) / len(records)


def _plain_match(record: dict, generated: str) -> float:
    first = generated.strip().splitlines()[0].strip() if generated.strip() else ""
    return float(first == str(record["completion"]).strip())
