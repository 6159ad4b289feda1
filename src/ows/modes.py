"""Module modes: run code with a model in eval mode and restore its training mode afterwards."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block; the previous training mode comes back even on errors."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
