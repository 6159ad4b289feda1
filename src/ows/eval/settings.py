"""The settings of one evaluation (``ows eval`` and ``ows.eval.evaluate``), a prepared task, an empty results document.

The fields keep the names ``ows eval`` gives them (``per_device_eval_batch_size``, ``fewshot_seed``, ...),
so one name means one setting from the YAML key to the evaluator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from .tasks import TaskSpec

FORMAT = "ows-eval/1"
DEFAULT_FEWSHOT = {"mmlu": 5, "gsm8k": 5, "multiple_choice": 0}


@dataclass
class EvalSettings:
    """Settings shared by all tasks of one run (recorded in the results)."""

    limit: int | None = None  # items per task (texts for perplexity); None = all
    num_fewshot: int | None = None  # None = each task's default (mmlu 5, gsm8k 5, mc 0)
    per_device_eval_batch_size: int = 8
    fewshot_seed: int = 0  # few-shot example draw
    perplexity_seq_len: int = 512  # perplexity window
    perplexity_stride: int | None = None  # perplexity: tokens scored per window (None = perplexity_seq_len - 1)
    max_new_tokens: int = 256  # gsm8k and mt-bench generation budget
    heldout_seed: int = 100000  # reasoning-gym items (the demo's held-out seed)
    reasoning_items: int = 100  # reasoning-gym items when limit is None
    model_id: str = "ows-model"  # mt-bench: the model_id of FastChat's answer rows

    def validate(self) -> "EvalSettings":
        """Self, or a ``ValueError`` naming the bad setting."""
        for name in ("limit", "num_fewshot", "perplexity_stride"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name == "num_fewshot" else 1)):
                raise ValueError(f"{name}={value!r} is invalid: must be an integer >= {0 if name == 'num_fewshot' else 1}")
        for name in ("per_device_eval_batch_size", "max_new_tokens", "reasoning_items"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be an integer >= 1")
        seq_len, stride = self.perplexity_seq_len, self.perplexity_stride
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"perplexity_seq_len={seq_len!r} is invalid: must be an integer >= 2")
        if stride is not None and stride > seq_len - 1:
            raise ValueError(f"perplexity_stride={stride} is invalid: must be at most perplexity_seq_len - 1 = "
                             f"{seq_len - 1}")
        return self


@dataclass
class Prepared:
    """A task with its data read and its prompts built."""

    spec: TaskSpec
    num_fewshot: int | None
    payload: Any


def fewshot_for(spec: TaskSpec, settings: EvalSettings) -> int | None:
    """Shots of a task: its own setting, else --num-fewshot, else the task default (None: no shots apply)."""
    if spec.kind not in DEFAULT_FEWSHOT:
        return None
    for value in (spec.num_fewshot, settings.num_fewshot):
        if value is not None:
            return value
    return DEFAULT_FEWSHOT[spec.kind]


def new_results(backend: str, settings: EvalSettings) -> dict[str, Any]:
    """An empty results document."""
    return {"format": FORMAT, "backend": backend, "model": None, "settings": asdict(settings), "tasks": {},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
