"""Run tasks through lm-evaluation-harness in-process (``pip install 'ows[eval]'``).

The model object is wrapped as ``lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=tok)``,
so a model fresh from training needs no saving. Built-in tasks (mmlu, gsm8k, mc:FILE) are handed to
lm-eval as local task configs (``dataset_path: json`` over a temporary JSON-lines file) whose docs
carry the exact prompts the built-in evaluator builds, so both backends score the same prompts and
lm-eval does its own tokenization, batching, log-likelihoods, generation, filters and metrics. Such
runs need no network (``ows eval`` sets ``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1`` for a local model
when they are unset). ``hub:NAME`` tasks are lm-eval's own registry tasks and download their data.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .gsm8k import STOP
from .multiple_choice import aggregate, category_counts
from .settings import EvalSettings, Prepared, new_results

logger = logging.getLogger(__name__)

INSTALL = "pip install 'lm-eval==0.4.13'"
_MEAN = {"aggregation": "mean", "higher_is_better": True}
GSM8K_METRIC = {"metric": "exact_match", **_MEAN, "ignore_case": True, "ignore_punctuation": False,
                "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}
GSM8K_FILTERS = [
    {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                        {"function": "take_first"}]},
    {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                             "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                            {"function": "take_first"}]},
]
RENAME = {"exact_match,flexible-extract": "exact_match", "exact_match,strict-match": "exact_match_strict"}


def _task_id(name: str) -> str:
    return "ows_" + re.sub(r"[^A-Za-z0-9_]+", "_", name)


def _write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def task_config(task: Prepared, folder: Path, settings: EvalSettings) -> dict[str, Any]:
    """An lm-eval task dict over the task's prepared prompts, written as JSON lines into ``folder``."""
    task_id = _task_id(task.spec.name)
    base = {"task": task_id, "dataset_path": "json", "test_split": "test", "num_fewshot": 0,
            "doc_to_text": "prompt", "metadata": {"version": 1.0}}
    if task.spec.kind in ("mmlu", "multiple_choice"):
        rows = [{"doc_id": i.doc_id, "prompt": i.context, "choices": list(i.choices), "gold": i.gold,
                 "category": i.category or ""} for i in task.payload]
        extra = {"output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "gold",
                 "target_delimiter": " ", "metric_list": [{"metric": "acc", **_MEAN}, {"metric": "acc_norm", **_MEAN}]}
    elif task.spec.kind == "gsm8k":
        rows = [{"doc_id": i["doc_id"], "prompt": i["prompt"], "target": i["target"]} for i in task.payload]
        extra = {"output_type": "generate_until", "doc_to_target": "target", "metric_list": [GSM8K_METRIC],
                 "generation_kwargs": {"until": list(STOP), "do_sample": False, "temperature": 0.0,
                                       "max_gen_toks": settings.max_new_tokens},
                 "filter_list": GSM8K_FILTERS}
    else:
        raise ValueError(f"task {task.spec.name!r} ({task.spec.kind}) has no lm-eval form")
    data = _write_jsonl(rows, folder / f"{task_id}.jsonl")
    return {**base, **extra, "dataset_kwargs": {"data_files": {"test": data}, "cache_dir": str(folder / "cache")}}


def convert_metrics(task_results: dict[str, Any]) -> dict[str, float]:
    """lm-eval's ``{"acc,none": x, "acc_stderr,none": s, ...}`` -> ``{"acc": x}`` (stderr dropped)."""
    out = {}
    for key, value in task_results.items():
        if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
            continue
        metric, _, filt = key.partition(",")
        out[RENAME.get(key, metric if filt == "none" else f"{metric}_{filt}")] = float(value)
    return out


def convert_samples(kind: str, samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval's logged samples -> ours (doc_id, prompt, per-choice log-likelihoods or the generation)."""
    out = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        doc = s["doc"]
        if kind == "gsm8k":
            if s.get("filter") not in (None, "flexible-extract"):
                continue
            out.append({"doc_id": doc["doc_id"], "prompt": doc["prompt"], "target": doc["target"],
                        "generation": s["resps"][0][0], "exact_match": float(s.get("exact_match", 0.0))})
        else:
            lls = [float(r[0][0]) for r in s["resps"]]
            out.append({"doc_id": doc["doc_id"], "prompt": doc["prompt"], "gold": doc["gold"], "loglikelihoods": lls,
                        "acc": float(s["acc"]), "acc_norm": float(s["acc_norm"]), "category": doc["category"] or None})
    return out


def _import_lm_eval() -> tuple[Any, Any, Any]:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise FileNotFoundError(f"--backend lm-eval needs lm-evaluation-harness: {INSTALL} (or pip install 'ows[eval]')") from None
    return lm_eval, HFLM, TaskManager


def task_manager(prepared: Sequence[Prepared]) -> Any:
    """lm-eval's task index: empty for local tasks only (instant), else the full registry (~10 s), with
    every ``hub:NAME`` checked against it (an unknown name is a ``ValueError``)."""
    lm_eval, _, TaskManager = _import_lm_eval()
    names = [t.spec.argument for t in prepared if t.spec.kind == "lm-eval"]
    if not names:
        return TaskManager(include_defaults=False)
    manager = TaskManager()
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            raise ValueError(f"task 'hub:{name}': lm-eval {getattr(lm_eval, '__version__', '')} has no "
                             "task or group of that name: list them with `lm-eval ls tasks`")
    return manager


def _run_one(lm_eval: Any, lm: Any, manager: Any, task: Prepared, settings: EvalSettings, folder: Path) -> dict:
    from unittest import mock

    import lm_eval.evaluator as evaluator

    # lm-eval records `git describe` of the working folder, printing "fatal: not a git repository" outside one
    with mock.patch.object(evaluator, "get_git_commit_hash", lambda: None):
        return _simple_evaluate(lm_eval, lm, manager, task, settings, folder)


def _simple_evaluate(lm_eval: Any, lm: Any, manager: Any, task: Prepared, settings: EvalSettings, folder: Path) -> dict:
    if task.spec.kind == "lm-eval":
        shots = task.spec.num_fewshot if task.spec.num_fewshot is not None else settings.num_fewshot
        return lm_eval.simple_evaluate(model=lm, tasks=[task.spec.argument], num_fewshot=shots, limit=settings.limit,
                                       log_samples=True, task_manager=manager, bootstrap_iters=0)
    config = task_config(task, folder, settings)
    return lm_eval.simple_evaluate(model=lm, tasks=[config], log_samples=True, task_manager=manager, bootstrap_iters=0)


def _entry(task: Prepared, output: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Our results entry and samples for one task from lm-eval's output."""
    key = task.spec.argument if task.spec.kind == "lm-eval" else _task_id(task.spec.name)
    results = output["results"]
    if task.spec.kind == "lm-eval":
        entry = {"kind": "lm-eval", "metrics": convert_metrics(results.get(key, {})),
                 "n": output.get("n-samples", {}).get(key, {}).get("effective"), "num_fewshot": task.num_fewshot}
        for sub in output.get("groups", {}):
            if sub != key:
                entry["metrics"].update({f"{m}_{sub}": v for m, v in convert_metrics(results.get(sub, {})).items()})
        return entry, []
    samples = convert_samples(task.spec.kind, output.get("samples", {}).get(key, []))
    metrics = convert_metrics(results[key])
    entry = {"kind": task.spec.kind, "metrics": metrics, "n": len(task.payload), "num_fewshot": task.num_fewshot}
    counts = category_counts(samples) if task.spec.kind != "gsm8k" else {}
    if counts:
        metrics.update({k: v for k, v in aggregate(samples, ("acc",)).items() if k != "acc"})
        entry["n_by_category"] = counts
    return entry, samples


def run_lm_eval(model: Any, tokenizer: Any, prepared: Sequence[Prepared], settings: EvalSettings,
                log_samples: bool = False, manager: Any = None) -> dict[str, Any]:
    """Evaluate the prepared tasks with lm-eval on an in-memory model; our results document.

    ``manager`` is a ``task_manager(prepared)`` made earlier (e.g. to check hub names before loading a model).
    """
    lm_eval, HFLM, _ = _import_lm_eval()
    manager = manager if manager is not None else task_manager(prepared)
    quiet = logging.getLogger("ows").getEffectiveLevel() > logging.DEBUG
    lm_logger, level = logging.getLogger("lm_eval"), logging.getLogger("lm_eval").level
    if quiet:
        lm_logger.setLevel(logging.WARNING)
    results, start = new_results("lm-eval", settings), time.perf_counter()
    was_training = model.training
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.per_device_eval_batch_size)
        with tempfile.TemporaryDirectory(prefix="ows-lm-eval-") as tmp:
            for task in prepared:
                began = time.perf_counter()
                logger.info("lm-eval: evaluating %s", task.spec.name)
                entry, samples = _entry(task, _run_one(lm_eval, lm, manager, task, settings, Path(tmp)))
                entry["seconds"] = round(time.perf_counter() - began, 2)
                results["tasks"][task.spec.name] = entry
                if log_samples:
                    results.setdefault("samples", {})[task.spec.name] = samples
    finally:
        lm_logger.setLevel(level)
        model.train(was_training)
    results["seconds"] = round(time.perf_counter() - start, 2)
    results["lm_eval_version"] = getattr(lm_eval, "__version__", None)
    return results
