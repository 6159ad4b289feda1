"""GSM8K: k-shot chain-of-thought prompts, greedy generation, the final number, exact match.

Prompts follow lm-evaluation-harness's ``gsm8k`` task: ``Question: ...\\nAnswer:`` with each shot's full
worked answer (ending ``#### N``), shots separated by blank lines. The shipped copy is the test split
only, so shots are drawn (fixed seed) from the other test questions unless a ``fewshot_path`` (e.g.
your copy of the train split) is given. ``exact_match`` takes the number after ``####`` or else the
last number in the generation; ``exact_match_strict`` needs the ``####``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Sequence

from .fewshot import pick_shots, with_shots
from .files import field, gsm8k_path, read_jsonl
from .generation import generate_until

logger = logging.getLogger(__name__)

STOP = ("Question:", "</s>", "<|im_end|>", "\n\n")
DEFAULT_FEWSHOT = 5
GSM8K_FIX = "every line needs 'question' and 'answer' (a worked answer ending '#### <number>')"
_MARKED = re.compile(r"####\s*\$?\s*(-?[\d.,]*\d)")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class MathDoc:
    """One word problem: the question, the worked answer and its final number."""

    question: str
    answer: str
    target: str

    def query(self) -> str:
        """The prompt of this question."""
        return f"Question: {self.question.strip()}\nAnswer:"

    def shot(self) -> str:
        """This question with its worked answer, as a few-shot example."""
        return f"{self.query()} {self.answer.strip()}"


def normalize_number(text: str) -> str | None:
    """``'$1,234.50'`` -> ``'1234.5'``; ``'18.00'`` -> ``'18'``; None when it is not a number."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(text: str, strict: bool = False) -> str | None:
    """The number after ``####`` (strict), or else the last number in ``text``; normalised."""
    marked = _MARKED.search(text)
    if marked:
        return normalize_number(marked.group(1))
    if strict:
        return None
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def read_gsm8k(path: str | Path | None = None) -> list[MathDoc]:
    """Problems of a GSM8K-format file (the shipped test set by default)."""
    path = Path(path) if path is not None else gsm8k_path()
    docs = []
    for number, row in read_jsonl(path):
        where = f"{path} line {number}"
        question = field(row, "question", str, where, GSM8K_FIX)
        answer = field(row, "answer", str, where, GSM8K_FIX)
        target = extract_answer(answer, strict=True)
        if target is None:
            raise ValueError(f"{where}: field 'answer' does not end with '#### <number>': {GSM8K_FIX}")
        docs.append(MathDoc(question, answer, target))
    if not docs:
        raise ValueError(f"GSM8K file {str(path)!r} holds no problems: {GSM8K_FIX}")
    return docs


def gsm8k_items(
    limit: int | None, k: int, seed: int, path: str | None = None, fewshot_path: str | None = None, task: str = "gsm8k",
) -> list[dict[str, Any]]:
    """The first ``limit`` problems as ``{doc_id, prompt, target, shots}`` with ``k`` shots each."""
    docs = read_gsm8k(path)
    pool = read_gsm8k(fewshot_path) if fewshot_path else docs
    count = len(docs) if limit is None else min(limit, len(docs))
    logger.info("%s: %d of %d problems, %d-shot", task, count, len(docs), k)
    items = []
    for doc_id in range(count):
        shots = pick_shots(range(len(pool)), k, None if fewshot_path else doc_id, f"{seed}:{task}:{doc_id}")
        prompt = with_shots([pool[s].shot() for s in shots], docs[doc_id].query())
        items.append({"doc_id": doc_id, "prompt": prompt, "target": docs[doc_id].target, "shots": shots})
    return items


def score_generations(items: Sequence[dict[str, Any]], generations: Sequence[str]) -> tuple[dict[str, float], list[dict]]:
    """``exact_match`` / ``exact_match_strict`` of the generations against the items' targets, and samples."""
    samples = []
    for item, text in zip(items, generations, strict=True):
        answer, strict = extract_answer(text), extract_answer(text, strict=True)
        samples.append({**item, "generation": text, "answer": answer, "answer_strict": strict,
                        "exact_match": float(answer == item["target"]),
                        "exact_match_strict": float(strict == item["target"])})
    metrics = {m: sum(s[m] for s in samples) / len(samples) for m in ("exact_match", "exact_match_strict")}
    return metrics, samples


def evaluate_gsm8k(
    model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], batch_size: int = 8, max_new_tokens: int = 256,
) -> tuple[dict[str, float], list[dict]]:
    """Generate greedily for every item (stopping at the next question) and score the final numbers."""
    if not items:
        raise ValueError("no problems to evaluate: check --limit and the task file")
    generations = generate_until(model, tokenizer, [i["prompt"] for i in items], STOP, max_new_tokens, batch_size, "gsm8k")
    return score_generations(items, generations)
