"""Multiple choice by log-likelihood: acc and acc_norm, k-shot prompts, local JSON-lines task files.

Each choice is scored as the continuation ``" " + choice`` of the prompt. ``acc`` takes the choice
with the highest log-likelihood, ``acc_norm`` the highest log-likelihood per character of the choice
(lm-eval's length normalisation). Local file format, one object per line::

    {"query": "Full prompt text ending where the answer starts:", "choices": ["...", "..."], "gold": 0}
    {"question": "Rendered as 'Question: ...\\nAnswer:'", "choices": ["...", "..."], "gold": 1}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field as dc_field
from typing import Any, Sequence

from .fewshot import TARGET_DELIMITER, pick_shots, with_shots
from .files import field, read_jsonl
from .loglik import loglikelihoods

logger = logging.getLogger(__name__)

MC_FIX = "every line needs 'query' or 'question' (string), 'choices' (list of strings) and 'gold' (index of the answer)"


@dataclass(frozen=True)
class ChoiceDoc:
    """One question as read from a file: query text, answer choices, gold index, optional group (subject)."""

    text: str
    choices: tuple[str, ...]
    gold: int
    group: str | None = None

    def shot(self) -> str:
        """The question answered, as a few-shot example."""
        return self.text + TARGET_DELIMITER + self.choices[self.gold]


@dataclass
class ChoiceItem:
    """One question ready to score: the full prompt (with shots) and its choices."""

    doc_id: int
    context: str
    choices: tuple[str, ...]
    gold: int
    category: str | None = None
    meta: dict[str, Any] = dc_field(default_factory=dict)


def read_choice_file(path: str) -> list[ChoiceDoc]:
    """Questions of a local multiple-choice file; a bad line is a ``ValueError`` naming file, line and field."""
    docs = []
    for number, row in read_jsonl(path):
        where = f"{path} line {number}"
        if "query" in row:
            text = field(row, "query", str, where, MC_FIX)
        elif "question" in row:
            text = f"Question: {field(row, 'question', str, where, MC_FIX).strip()}\nAnswer:"
        else:
            raise ValueError(f"{where}: field 'query' (or 'question') is missing: {MC_FIX} (see docs/EVALUATION.md)")
        choices = field(row, "choices", list, where, MC_FIX)
        if len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise ValueError(f"{where}: field 'choices' must be a list of at least 2 non-empty strings")
        gold = field(row, "gold", int, where, MC_FIX)
        if not 0 <= gold < len(choices):
            raise ValueError(f"{where}: field 'gold' is {gold}, not an index of the {len(choices)} choices (0-based)")
        docs.append(ChoiceDoc(text, tuple(choices), gold))
    if not docs:
        raise ValueError(f"task file {path!r} holds no questions: {MC_FIX}")
    return docs


def build_items(
    docs: Sequence[ChoiceDoc], selected: Sequence[int], k: int, seed: int, task: str,
    fewshot_docs: Sequence[ChoiceDoc] | None = None, description: str = "", categories: dict[str, str] | None = None,
) -> list[ChoiceItem]:
    """Items for the ``selected`` docs with ``k`` shots each, from ``fewshot_docs`` or else the other docs.

    With ``group`` set (MMLU subjects) the shots come from the same group and the description may use
    ``{group}``; ``categories`` maps a group to the category it is reported in.
    """
    pool = list(fewshot_docs) if fewshot_docs is not None else list(docs)
    same_file = fewshot_docs is None
    by_group: dict[str | None, list[int]] = {}
    for index, doc in enumerate(pool):
        by_group.setdefault(doc.group, []).append(index)
    items = []
    for doc_id in selected:
        doc = docs[doc_id]
        candidates = by_group.get(doc.group, []) if doc.group is not None else range(len(pool))
        shots = pick_shots(candidates, k, doc_id if same_file else None, f"{seed}:{task}:{doc_id}")
        context = with_shots([pool[s].shot() for s in shots], doc.text, description.format(group=doc.group))
        category = (categories or {}).get(doc.group) if doc.group is not None else None
        items.append(ChoiceItem(doc_id, context, doc.choices, doc.gold, category, {"shots": shots}))
    return items


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first of equal maxima, as numpy


def score_items(
    model: Any, tokenizer: Any, items: Sequence[ChoiceItem], batch_size: int = 8, desc: str = "multiple choice",
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """``acc`` and ``acc_norm`` (plus ``acc_<category>`` when items have categories) and one sample per item."""
    if not items:
        raise ValueError("no questions to evaluate: check --limit and the task file")
    pairs = [(item.context, TARGET_DELIMITER + choice) for item in items for choice in item.choices]
    flat = loglikelihoods(model, tokenizer, pairs, batch_size, desc)
    samples, position = [], 0
    for item in items:
        lls = flat[position:position + len(item.choices)]
        position += len(item.choices)
        pred = _argmax(lls)
        pred_norm = _argmax([ll / len(choice) for ll, choice in zip(lls, item.choices)])
        samples.append({"doc_id": item.doc_id, "gold": item.gold, "pred": pred, "pred_norm": pred_norm,
                        "acc": float(pred == item.gold), "acc_norm": float(pred_norm == item.gold),
                        "loglikelihoods": lls, "category": item.category, "prompt": item.context, **item.meta})
    return aggregate(samples), samples


def aggregate(samples: Sequence[dict[str, Any]], metrics: Sequence[str] = ("acc", "acc_norm")) -> dict[str, float]:
    """Means of ``metrics`` over the samples, then per category as ``<metric>_<category>`` (acc only)."""
    out = {m: sum(s[m] for s in samples) / len(samples) for m in metrics}
    categories = sorted({s["category"] for s in samples if s.get("category")})
    for category in categories:
        chosen = [s for s in samples if s.get("category") == category]
        out[f"acc_{category}"] = sum(s["acc"] for s in chosen) / len(chosen)
    return out


def category_counts(samples: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Items per category."""
    counts: dict[str, int] = {}
    for sample in samples:
        if sample.get("category"):
            counts[sample["category"]] = counts.get(sample["category"], 0) + 1
    return dict(sorted(counts.items()))
