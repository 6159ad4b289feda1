"""Measured memory: bytes held by tensors in models and optimizers, and the process peak."""

from __future__ import annotations

import resource
import sys
from typing import Any, Iterable

import torch
from torch import nn
from torch.optim import Optimizer


def tensor_bytes(values: Iterable[Any]) -> int:
    """Bytes of the tensors among ``values`` (other values are ignored)."""
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes held by tensors in ``optimizer.state`` (Adam moments, projectors, ...)."""
    return sum(tensor_bytes(state.values()) for state in optimizer.state.values())


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of the ``.grad`` tensors currently held by ``model``'s parameters."""
    return tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
