"""Run evaluation tasks on a model: prepare every task's data (no model needed), then score.

``evaluate(model, tokenizer, ["mmlu", "gsm8k"], limit=100)`` works on an in-memory model, e.g. right
after training, and returns the same results document that ``ows eval`` writes as JSON.
"""

from __future__ import annotations

import logging
import time
from dataclasses import fields
from typing import Any, Callable, Sequence

from .settings import EvalSettings, Prepared, fewshot_for, new_results
from .tasks import TaskSpec, check_unique, parse_task, parse_tasks

logger = logging.getLogger(__name__)

def _prepare_payload(spec: TaskSpec, k: int | None, s: EvalSettings) -> Any:
    if spec.kind == "mmlu":
        from .mmlu import mmlu_items

        return mmlu_items(s.limit, k or 0, s.fewshot_seed, spec.path, spec.fewshot_path, spec.name)
    if spec.kind == "multiple_choice":
        from .multiple_choice import build_items, read_choice_file

        docs = read_choice_file(str(spec.path))
        shots = read_choice_file(spec.fewshot_path) if spec.fewshot_path else None
        selected = range(len(docs) if s.limit is None else min(s.limit, len(docs)))
        return build_items(docs, list(selected), k or 0, s.fewshot_seed, spec.name, shots)
    if spec.kind == "gsm8k":
        from .gsm8k import gsm8k_items

        return gsm8k_items(s.limit, k or 0, s.fewshot_seed, spec.path, spec.fewshot_path, spec.name)
    if spec.kind == "perplexity":
        from ..data.calibration import builtin_calibration_texts, read_texts

        texts = read_texts(spec.path) if spec.path else builtin_calibration_texts()
        return texts if s.limit is None else texts[: s.limit]
    if spec.kind == "reasoning-gym":
        from ..data.tasks import make_records

        return make_records([str(spec.argument)], s.limit or s.reasoning_items, s.heldout_seed)
    if spec.kind == "mt-bench":
        from .mt_bench import read_questions

        questions = read_questions(str(spec.path))
        return questions if s.limit is None else questions[: s.limit]
    if spec.kind == "lm-eval":
        return None  # an lm-eval registry task: only the lm-eval backend runs it
    raise ValueError(f"task {spec.name!r} has unknown kind {spec.kind!r}")


def prepare(specs: Sequence[TaskSpec], settings: EvalSettings, backend: str = "builtin") -> list[Prepared]:
    """Read every task's data and build its prompts; bad input fails here, before a model is needed."""
    settings.validate()
    check_unique(list(specs))
    for spec in specs:
        if spec.kind == "lm-eval" and backend != "lm-eval":
            raise ValueError(f"task 'hub:{spec.argument}' is an lm-eval registry task: add --backend lm-eval")
        if backend == "lm-eval" and spec.kind in ("perplexity", "reasoning-gym", "mt-bench"):
            raise ValueError(f"task {spec.name!r} runs on the built-in backend only: drop --backend lm-eval for it")
    prepared = []
    for spec in specs:
        shots = fewshot_for(spec, settings)
        prepared.append(Prepared(spec, shots, _prepare_payload(spec, shots, settings)))
    return prepared


def _run_choice(model: Any, tokenizer: Any, task: Prepared, s: EvalSettings) -> tuple[dict, list, dict]:
    from .multiple_choice import category_counts, score_items

    metrics, samples = score_items(model, tokenizer, task.payload, s.per_device_eval_batch_size, task.spec.name)
    counts = category_counts(samples)
    return metrics, samples, ({"n_by_category": counts} if counts else {})


def _run_gsm8k(model: Any, tokenizer: Any, task: Prepared, s: EvalSettings) -> tuple[dict, list, dict]:
    from .gsm8k import evaluate_gsm8k

    metrics, samples = evaluate_gsm8k(model, tokenizer, task.payload, s.per_device_eval_batch_size, s.max_new_tokens)
    return metrics, samples, {}


def _run_perplexity(model: Any, tokenizer: Any, task: Prepared, s: EvalSettings) -> tuple[dict, list, dict]:
    from .perplexity import perplexity

    out = perplexity(model, tokenizer, task.payload, s.perplexity_seq_len, s.perplexity_stride, s.per_device_eval_batch_size)
    return {"perplexity": out["perplexity"], "nll": out["nll"]}, [], {"tokens": out["tokens"]}


def _run_reasoning(model: Any, tokenizer: Any, task: Prepared, s: EvalSettings) -> tuple[dict, list, dict]:
    from .heldout import answer_loss, generate_answers
    from ..data.tasks import score

    records = task.payload
    loss = answer_loss(model, tokenizer, records, s.per_device_eval_batch_size)
    longest = max(len(tokenizer(str(r["completion"]), add_special_tokens=False)["input_ids"]) for r in records)
    answers = generate_answers(model, tokenizer, [r["prompt"] for r in records], longest + 2, s.per_device_eval_batch_size)
    samples = [{"doc_id": i, "prompt": r["prompt"], "target": r["answer"], "generation": a,
                "exact_match": float(score(r, a) >= 1.0)} for i, (r, a) in enumerate(zip(records, answers))]
    exact = sum(x["exact_match"] for x in samples) / len(samples)
    return {"exact_match": exact, "answer_loss": loss}, samples, {"seed": s.heldout_seed}


def _run_mt_bench(model: Any, tokenizer: Any, task: Prepared, s: EvalSettings) -> tuple[dict, list, dict]:
    from .mt_bench import answer_questions, answer_rows, check_chat_template

    check_chat_template(tokenizer, s.model_id)
    answers = answer_questions(model, tokenizer, task.payload, s.max_new_tokens, s.per_device_eval_batch_size)
    turns = [t for a in answers for t in a]
    empty = sum(not t for t in turns)
    metrics = {"questions": float(len(answers)), "turns": float(len(turns)), "empty_answers": float(empty)}
    return metrics, [], {"answers": answer_rows(task.payload, answers, s.model_id)}


RUNNERS: dict[str, Callable[[Any, Any, Prepared, EvalSettings], tuple[dict, list, dict]]] = {
    "mmlu": _run_choice, "multiple_choice": _run_choice, "gsm8k": _run_gsm8k,
    "perplexity": _run_perplexity, "reasoning-gym": _run_reasoning, "mt-bench": _run_mt_bench,
}


def _count(task: Prepared) -> int:
    return len(task.payload) if task.payload is not None else 0


def run_builtin(model: Any, tokenizer: Any, prepared: Sequence[Prepared], settings: EvalSettings,
                log_samples: bool = False) -> dict[str, Any]:
    """Score every prepared task with the built-in evaluators; the results document."""
    results, start = new_results("builtin", settings), time.perf_counter()
    for task in prepared:
        began = time.perf_counter()
        logger.info("evaluating %s (%d items)", task.spec.name, _count(task))
        metrics, samples, extra = RUNNERS[task.spec.kind](model, tokenizer, task, settings)
        results["tasks"][task.spec.name] = {"kind": task.spec.kind, "metrics": metrics, "n": _count(task),
                                            "num_fewshot": task.num_fewshot, **extra,
                                            "seconds": round(time.perf_counter() - began, 2)}
        if log_samples:
            results.setdefault("samples", {})[task.spec.name] = samples
    results["seconds"] = round(time.perf_counter() - start, 2)
    return results


def as_specs(tasks: str | Sequence[str | TaskSpec]) -> list[TaskSpec]:
    """Task specs from a comma-separated string or a list of spec strings / ``TaskSpec``s."""
    if isinstance(tasks, str):
        return parse_tasks(tasks)
    return [t if isinstance(t, TaskSpec) else parse_task(t) for t in tasks]


def evaluate(model: Any, tokenizer: Any, tasks: str | Sequence[str | TaskSpec], backend: str = "builtin",
             log_samples: bool = False, **settings: Any) -> dict[str, Any]:
    """Evaluate an in-memory model and tokenizer; ``settings`` are ``EvalSettings`` fields (limit, ...)."""
    unknown = sorted(set(settings) - {f.name for f in fields(EvalSettings)})
    if unknown:
        raise TypeError(f"evaluate() got unknown setting {unknown[0]!r}")
    if backend not in ("builtin", "lm-eval"):
        raise ValueError(f"backend={backend!r} is invalid: use 'builtin' or 'lm-eval'")
    config = EvalSettings(**settings)
    prepared = prepare(as_specs(tasks), config, backend)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if backend == "lm-eval":
        from .lm_eval_bridge import run_lm_eval

        return run_lm_eval(model, tokenizer, prepared, config, log_samples)
    return run_builtin(model, tokenizer, prepared, config, log_samples)
