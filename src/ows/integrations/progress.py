"""A ``Trainer`` progress bar that shows loss, active layers and peak memory (CUDA allocator on a GPU, RSS on CPU),
and one INFO log line per logging step that a person can follow without the bar."""

from __future__ import annotations

import logging
import sys
from typing import Any

from transformers import TrainerCallback

from ..controller import layer_list
from ..memory.measure import peak_memory_text

logger = logging.getLogger(__name__)


def step_line(step: int, max_steps: int, logs: dict[str, Any], active: Any = None) -> str:
    """``step 5/60: loss 2.1834, lr 2.93e-04, grad_norm 1.27, active layers 3,7,12-14, ...``: one logging step."""
    parts = [f"step {step}/{max_steps}:"]
    named = [("loss", "loss", "{:.4f}"), ("learning_rate", "lr", "{:.3g}"), ("grad_norm", "grad_norm", "{:.3g}"),
             ("eval_loss", "eval_loss", "{:.4f}")]
    parts += [f"{label} {fmt.format(logs[key])}," for key, label, fmt in named if isinstance(logs.get(key), (int, float))]
    if active is not None:
        parts.append(f"active layers {layer_list(active)},")
    parts.append(f"peak memory {peak_memory_text()}")
    return " ".join(parts)


class ProgressCallback(TrainerCallback):
    """tqdm bar on stderr over optimizer steps; logs each logging step as one INFO line (:func:`step_line`).

    ``controller`` (an ``OWSController``) adds the active layers when given. The bar is drawn only when
    ``enabled``, ``args.disable_tqdm`` is off and stderr is a terminal; the log lines are written either way.
    """

    def __init__(self, controller: Any | None = None, enabled: bool = True) -> None:
        self.controller = controller
        self.enabled = enabled
        self.bar: Any = None
        self.last_loss: float | None = None

    def _active(self) -> Any:
        return None if self.controller is None else self.controller.active

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        shown = self.enabled and not getattr(args, "disable_tqdm", False) and sys.stderr.isatty()
        if shown and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                            dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is None:
            return
        postfix = {}
        if self.last_loss is not None:
            postfix["loss"] = f"{self.last_loss:.3f}"
        if self._active() is not None:
            postfix["layers"] = layer_list(self._active())
        postfix["peak_mem"] = peak_memory_text()
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
        if not state.is_world_process_zero:
            return
        if "loss" in logs or "eval_loss" in logs:
            logger.info(step_line(state.global_step, state.max_steps, logs, self._active()))
        elif "train_loss" in logs:
            logger.info("training done: %d steps, mean training loss %.4f, %.1f s", state.global_step,
                        logs["train_loss"], logs.get("train_runtime", 0.0))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
