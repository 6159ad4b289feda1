"""reasoning-gym tasks as prompt/completion records, generated offline from a seed.

Prompts use the plain ``Question: ... Answer:`` form, which trains better than a chat template at
small model sizes. Every record keeps its task name and the generator's entry, so the task's own
checker (``score_answer``) can grade a generated answer.
"""

from __future__ import annotations

import functools
from typing import Any

PREFIX = "reasoning-gym:"


def parse_spec(spec: str | None) -> list[str] | None:
    """Task names of a ``reasoning-gym:a,b`` dataset spec, or None for anything else."""
    if not spec or not spec.startswith(PREFIX):
        return None
    tasks = [t.strip() for t in spec[len(PREFIX):].split(",") if t.strip()]
    if not tasks:
        raise ValueError(f"dataset={spec!r} names no task: write e.g. reasoning-gym:chain_sum")
    return tasks


@functools.lru_cache(maxsize=None)
def _generator(task: str, size: int, seed: int) -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise FileNotFoundError("reasoning-gym tasks need the package: pip install reasoning-gym==0.1.25") from None
    try:
        return reasoning_gym.create_dataset(task, size=size, seed=seed)
    except Exception as err:  # the package raises several types for unknown names
        raise ValueError(f"reasoning-gym task {task!r} is unknown ({err}): use a name such as chain_sum") from None


def prompt_for(question: str) -> str:
    """The prompt text of one question."""
    return f"Question: {question.strip()}\nAnswer:"


def make_records(tasks: list[str], size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` records split evenly over ``tasks`` (interleaved), with prompt, completion, task and index."""
    per_task = [size // len(tasks) + (1 if i < size % len(tasks) else 0) for i in range(len(tasks))]
    columns = []
    for task, count in zip(tasks, per_task):
        dataset = _generator(task, max(count, 1), seed)
        columns.append([
            {"prompt": prompt_for(entry["question"]), "completion": f" {entry['answer']}", "task": task,
             "answer": str(entry["answer"]), "index": i, "size": max(count, 1), "seed": seed}
            for i, entry in enumerate(dataset) if i < count
        ])
    return [col[i] for i in range(max(per_task)) for col in columns if i < len(col)]


def drop_overlap(heldout: list[dict], train: list[dict]) -> list[dict]:
    """Held-out records whose prompt does not occur in the training records."""
    seen = {r["prompt"] for r in train}
    return [r for r in heldout if r["prompt"] not in seen]


def score(record: dict[str, Any], generated: str) -> float:
    """Grade generated text with the task's own checker (first line, stripped)."""
    answer = generated.strip().splitlines()[0].strip() if generated.strip() else ""
    dataset = _generator(record["task"], record["size"], record["seed"])
    entry = dataset[record["index"]]
    return float(dataset.score_answer(answer, entry))
