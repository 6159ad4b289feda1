"""``RunCallback``: a ``TrainerCallback`` that also hears the three events of :func:`ows.train` a Trainer has not."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class RunCallback(TrainerCallback):
    """Pass instances to ``ows.train(..., callbacks=[...])``; override what you need.

    Besides every ``TrainerCallback`` event: ``on_datasets(datasets)`` with the run's data (the
    :class:`ows.recipe.data.Datasets`: train and evaluation sets, held-out records), just before
    ``on_setup(setup, trainer, tokenizer)`` once the method is built and the
    Trainer made (``setup`` is the :class:`ows.methods.MethodSetup`: model, optimizer, controller), before
    training; ``on_trained(setup, trainer, tokenizer)`` after training, on the final exact weights, before
    the held-out evaluation and the outputs."""

    def on_datasets(self, datasets: Any) -> None:
        """The run's data: ``datasets.train``, ``datasets.evaluation``, ``datasets.heldout`` (prompt/completion records)."""

    def on_setup(self, setup: Any, trainer: Any, tokenizer: Any) -> None:
        """The method is built and the Trainer made; nothing has trained yet."""

    def on_trained(self, setup: Any, trainer: Any, tokenizer: Any) -> None:
        """Training is over; ``setup.model`` holds the final weights."""
