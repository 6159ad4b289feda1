"""The option fields of every ``ows`` command, beside ``OWSConfig`` and ``TrainingArguments``; the demo.

One name per setting across commands: a YAML file written for ``ows train`` is read by ``ows analyze``,
``ows memory`` and ``ows eval`` too (each takes the fields it knows and ignores the other ``ows train``
fields). This module imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..recipe.arguments import DEMO, TASKS, TRAINING_ARGUMENT_FIELDS, ScriptArguments, help_field as _h

__all__ = ["AnalyzeArguments", "DEMO", "EvalArguments", "MemoryArguments", "ScriptArguments", "TASKS",
           "TRAINING_ARGUMENT_FIELDS"]

@dataclass
class AnalyzeArguments:
    """``ows analyze``'s own fields (it also takes the calibration and outlier fields of ``ows train``)."""

    profile_dir: str | None = _h("Folder for profile.json and profile.png (default ./ows-analyze-<model folder name>).",
                                 None)
    json: bool = _h("Print one JSON document (profile, probabilities, written files) instead of the table.", False)


# TrainingArguments' default per_device_train_batch_size (tests/cli/test_memory.py checks they agree).
TRAINER_BATCH_SIZE = 8


@dataclass
class MemoryArguments:
    """``ows memory``'s own fields (it also takes the model, dtype, loss and OWS fields of ``ows train``)."""

    methods: str = _h("'all' or a comma-separated subset of the methods.", "all")
    per_device_train_batch_size: int = _h("Sequences per step (TrainingArguments' field; ows memory without a config "
                                          "file: 1).", TRAINER_BATCH_SIZE)
    gradient_checkpointing: bool = _h("Recompute each layer in backward (TrainingArguments' field).", False)
    gradient_accumulation_steps: int = _h("Micro-batches per optimizer step (TrainingArguments' field): with more "
                                          "than one, a step that computes the head's projector keeps its full "
                                          "gradient (project_head_grad).", 1)
    attn_implementation: str = _h("Attention implementation: sdpa or eager.",
                                  "sdpa")
    json: bool = _h("Print one JSON document (bytes) instead of the table.", False)


# `ows memory` with no config file estimates one sequence with the model's standard loss (a plain
# Trainer or PyTorch loop); with a config file it estimates the run `ows train` would make of it.
MEMORY_WITHOUT_FILE = {"per_device_train_batch_size": 1, "loss_chunk_size": 0}


@dataclass
class EvalArguments:
    """``ows eval``'s own fields (it also takes ``model`` and ``heldout_seed`` of ``ows train``)."""

    tasks: str | None = _h("Comma-separated tasks, e.g. mmlu,gsm8k,reasoning-gym:chain_sum.", None)
    task_file: list[str] | None = _h("YAML/JSON list of {task, name?, fewshot_path?, num_fewshot?} (repeatable).", None)
    limit: int | None = _h("Items per task (texts for perplexity; default all, reasoning-gym 100).", None)
    num_fewshot: int | None = _h("Shots for mmlu/gsm8k/mc tasks (default: mmlu 5, gsm8k 5, mc 0).", None)
    per_device_eval_batch_size: int = _h("Sequences per forward pass / generate call.", 8)
    fewshot_seed: int = _h("Seed of the few-shot example draw.", 0)
    perplexity_seq_len: int = _h("Perplexity window in tokens.", 512)
    perplexity_stride: int | None = _h("Perplexity: tokens scored per window (default perplexity_seq_len - 1).", None)
    max_new_tokens: int = _h("gsm8k and mt-bench: generation budget in tokens (per turn for mt-bench).", 256)
    backend: str = _h("builtin evaluators, or lm-eval (lm-evaluation-harness in-process, pip install 'ows[eval]').",
                      "builtin")
    device: str = _h("auto (cuda when available), cpu, cuda, cuda:1, ...", "auto")
    dtype: str = _h("Weights dtype: auto (bfloat16 on a GPU that has it, else float32), float32, bfloat16, float16.",
                    "auto")
    results_file: str | None = _h("Results JSON (default ./ows-eval-<model folder name>.json).", None)
    model_id: str | None = _h("mt-bench: the model_id of the answers (default: the model's folder name).", None)
    answers_dir: str | None = _h("mt-bench: folder of the answers file <answers_dir>/<model_id>.jsonl (default: "
                                 "mt_bench/model_answer next to the results file, FastChat's layout).", None)
    json: bool = _h("Print the results JSON instead of the markdown table.", False)
    log_samples: bool = _h("Store every item's prompt and prediction in the JSON.", False)
    compare: list[str] | None = field(default=None, metadata={
        "help": "Results files to print side by side (rows metrics, columns runs), then exit.", "nargs": "+"})
