"""MT-Bench answers: two-turn chat answers to a questions file, written in FastChat's ``model_answer`` format.

The 80 MT-Bench questions are not on PyPI: give FastChat's ``data/mt_bench/question.jsonl`` (one object
per line: ``question_id``, ``category``, ``turns``: the user's messages, two for MT-Bench). Each turn is
answered in the conversation so far through the tokenizer's chat template, greedily (FastChat samples
some categories with a temperature; greedy answers are reproducible), up to ``max_gen_tokens``. The
answers file holds one FastChat row per question (``question_id``, ``answer_id``, ``model_id``,
``choices: [{index: 0, turns: [...]}]``, ``tstamp``), ready for ``fastchat.llm_judge.gen_judgment``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from .files import read_jsonl

logger = logging.getLogger(__name__)
FIX = ("use FastChat's data/mt_bench/question.jsonl: one JSON object per line with question_id, category and turns "
       "(a list of the user's messages)")


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """The questions of a FastChat question file, checked; a bad line is a ``ValueError`` naming it."""
    questions, seen = [], set()
    for number, row in read_jsonl(path):
        where = f"{path} line {number}"
        if "question_id" not in row or "turns" not in row:
            missing = "question_id" if "question_id" not in row else "turns"
            raise ValueError(f"{where}: field {missing!r} is missing: {FIX}")
        qid, turns = row["question_id"], row["turns"]
        if isinstance(qid, bool) or not isinstance(qid, (int, str)):
            raise ValueError(f"{where}: question_id is {type(qid).__name__}: give a number or a string; {FIX}")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(f"{where}: turns must be a non-empty list of non-empty strings: {FIX}")
        if qid in seen:
            raise ValueError(f"{where}: question_id {qid!r} appears twice: give each question its own id")
        seen.add(qid)
        questions.append({"question_id": qid, "category": str(row.get("category", "")), "turns": list(turns)})
    if not questions:
        raise ValueError(f"{path} holds no questions: {FIX}")
    return questions


def check_chat_template(tokenizer: Any, model: str) -> None:
    """MT-Bench talks to a chat model: a tokenizer without a chat template is a ``ValueError``."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"task mt-bench needs a chat model and {model!r} has no chat template in its tokenizer: "
                         "evaluate an instruction-tuned model, or add a chat_template to its tokenizer_config.json")


def answer_questions(model: Any, tokenizer: Any, questions: Sequence[dict[str, Any]], max_new_tokens: int,
                     batch_size: int) -> list[list[str]]:
    """The answers of every question, turn by turn (turn k sees the question's earlier turns and answers)."""
    from .generation import generate_until

    answers: list[list[str]] = [[] for _ in questions]
    for turn in range(max(len(q["turns"]) for q in questions)):
        asked = [i for i, q in enumerate(questions) if turn < len(q["turns"])]
        prompts = []
        for i in asked:
            messages = []
            for k in range(turn):
                messages += [{"role": "user", "content": questions[i]["turns"][k]},
                             {"role": "assistant", "content": answers[i][k]}]
            messages.append({"role": "user", "content": questions[i]["turns"][turn]})
            prompts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        logger.info("mt-bench: turn %d of %d questions", turn + 1, len(asked))
        generated = generate_until(model, tokenizer, prompts, [], max_new_tokens, batch_size,
                                   desc=f"mt-bench turn {turn + 1}", add_special_tokens=False)
        for i, text in zip(asked, generated):
            answers[i].append(text.strip())
    return answers


def answer_rows(questions: Sequence[dict[str, Any]], answers: Sequence[list[str]], model_id: str) -> list[dict]:
    """FastChat ``model_answer`` rows."""
    now = time.time()
    return [{"question_id": q["question_id"], "answer_id": uuid.uuid4().hex, "model_id": model_id,
             "choices": [{"index": 0, "turns": a}], "tstamp": now} for q, a in zip(questions, answers)]


def write_answers(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write the rows as JSON lines (FastChat reads ``data/mt_bench/model_answer/<model_id>.jsonl``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return target
