"""A ``Trainer`` progress bar that shows loss, active layers and peak memory (CUDA allocator on a GPU, RSS on CPU)."""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from ..memory.measure import peak_memory_text

logger = logging.getLogger(__name__)


class ProgressCallback(TrainerCallback):
    """tqdm bar on stderr over optimizer steps; logs each logging step as one INFO line.

    ``controller`` (an ``OWSController``) adds the active layers to the bar when given.
    """

    def __init__(self, controller: Any | None = None, enabled: bool = True) -> None:
        self.controller = controller
        self.enabled = enabled
        self.bar: Any = None
        self.last_loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.enabled and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                            dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is None:
            return
        postfix = {}
        if self.last_loss is not None:
            postfix["loss"] = f"{self.last_loss:.3f}"
        if self.controller is not None and self.controller.active is not None:
            postfix["layers"] = ",".join(str(i) for i in self.controller.active)
        postfix["peak_mem"] = peak_memory_text()
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
        if state.is_world_process_zero and logs:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in logs.items()}
            logger.debug("step %d: %s, peak memory %s", state.global_step, shown, peak_memory_text())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
