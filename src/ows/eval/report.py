"""Markdown tables of evaluation results: one run (task, metric, value, n) or several side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from .settings import FORMAT as RESULTS_FORMAT  # the marker of a results document ows eval wrote

LEGACY_FIELDS = {"tasks", "backend", "model_path", "device", "dtype"}  # in every one written before the marker
PERCENT_PREFIXES = ("acc", "exact_match")
MISSING = "–"


def format_value(metric: str, value: Any) -> str:
    """Accuracies as percentages (1 decimal), other numbers with 3 decimals (4 significant digits when large)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return str(value)
    if metric.startswith(PERCENT_PREFIXES):
        return f"{100 * value:.1f}%"
    return f"{value:.4g}" if abs(value) >= 100 else f"{value:.3f}"


def _rows(task: str, entry: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """(task, metric, value, n) rows of one task; per-category rows carry their own count."""
    counts = entry.get("n_by_category", {})
    rows = []
    for metric, value in entry.get("metrics", {}).items():
        category = metric[len("acc_"):] if metric.startswith("acc_") and metric[len("acc_"):] in counts else None
        rows.append((task, metric, value, counts[category] if category else entry.get("n")))
    return rows


def results_table(results: dict[str, Any]) -> str:
    """The markdown table of one results document, and a line saying what was evaluated."""
    lines = ["| task | metric | value | n |", "|---|---|---|---|"]
    for task, entry in results.get("tasks", {}).items():
        for name, metric, value, n in _rows(task, entry):
            lines.append(f"| {name} | {metric} | {format_value(metric, value)} | {n if n is not None else ''} |")
    shots = {t: e.get("num_fewshot") for t, e in results.get("tasks", {}).items() if e.get("num_fewshot") is not None}
    shot_text = ", ".join(f"{t} {k}-shot" for t, k in shots.items())
    lines.append(f"({results.get('model') or 'model'}, backend {results.get('backend')}"
                 + (f", {shot_text}" if shot_text else "") + f", {results.get('seconds', 0):.0f} s)")
    return "\n".join(lines)


def is_eval_results(doc: Any) -> bool:
    """Whether ``doc`` is a results document ``ows eval`` wrote: its format marker, or (written before the marker)
    the fields every one of them holds."""
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict):
        return False
    return doc.get("format") == RESULTS_FORMAT or (doc.get("format") is None and LEGACY_FIELDS <= set(doc))


def written_results(path: Path) -> bool:
    """Whether the file at ``path`` is a results document ``ows eval`` wrote (so it may replace it)."""
    try:
        return is_eval_results(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False


def written_answers(path: Path) -> bool:
    """Whether ``path`` is a plain file of FastChat answer lines (what ows eval writes for mt-bench)."""
    try:
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        row = json.loads(first[0]) if first else {}
    except (OSError, ValueError):
        return False
    return path.is_file() and isinstance(row, dict) and (not first or {"question_id", "model_id", "choices"} <= set(row))


def load_results(path: str | Path) -> dict[str, Any]:
    """A results JSON written by ``ows eval``, every task entry checked; anything else is a ``ValueError`` naming the
    file and what is wrong."""
    path = Path(path).expanduser()
    fix = "give results files written by ows eval"
    if not path.is_file():
        raise FileNotFoundError(f"--compare {str(path)!r} does not exist: {fix}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"--compare {str(path)!r} is not JSON: {fix}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict):
        raise ValueError(f"--compare {str(path)!r} has no 'tasks' mapping: it is not an ows eval results file")
    for task, entry in doc["tasks"].items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict) or not isinstance(entry.get("n_by_category", {}), dict):
            shown = json.dumps(entry, default=str)[:40]
            raise ValueError(f"--compare {str(path)!r}: task {task!r} is {shown}, not an entry with a 'metrics' "
                             f"mapping: it is not an ows eval results file; {fix}")
    return doc


def run_labels(paths: Sequence[str | Path]) -> list[str]:
    """Column headers: file names without .json, with the parent folder when two names collide."""
    stems = [Path(p).stem for p in paths]
    return [f"{Path(p).parent.name}/{s}" if stems.count(s) > 1 else s for p, s in zip(paths, stems)]


def compare_table(docs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """Rows task/metric, one column per run; a note below for tasks evaluated on different item counts."""
    order: list[tuple[str, str]] = []
    for doc in docs:
        for task, entry in doc["tasks"].items():
            order.extend((task, m) for m in entry.get("metrics", {}) if (task, m) not in order)
    lines = ["| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for task, metric in order:
        cells = [format_value(metric, doc["tasks"][task]["metrics"][metric])
                 if metric in doc["tasks"].get(task, {}).get("metrics", {}) else MISSING for doc in docs]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    for task in dict.fromkeys(t for t, _ in order):
        counts = [doc["tasks"].get(task, {}).get("n") for doc in docs]
        if len({c for c in counts if c is not None}) > 1:
            lines.append(f"(n differs for {task}: " + ", ".join(f"{l}={c}" for l, c in zip(labels, counts)) + ")")
    models = ", ".join(f"{l}: {doc.get('model') or '?'} ({doc.get('backend', '?')})" for l, doc in zip(labels, docs))
    lines.append(f"({models})")
    return "\n".join(lines)
