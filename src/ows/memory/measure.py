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


def peak_memory() -> dict[str, float]:
    """The peak memory a user can see, in GiB: on CUDA the allocator's peak allocated and reserved bytes
    (``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``, what ``nvidia-smi`` grows to), else
    the process's peak resident memory."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
                "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3)}
    return {"peak_rss_gib": round(peak_rss_bytes() / 2**30, 3)}


def peak_memory_text() -> str:
    """``peak_memory()`` as a short label: ``5.21GiB alloc / 6.00GiB reserved`` on CUDA, ``3.65GiB RSS`` on CPU."""
    peak = peak_memory()
    if "peak_allocated_gib" in peak:
        return f"{peak['peak_allocated_gib']:.2f}GiB alloc/{peak['peak_reserved_gib']:.2f}GiB reserved"
    return f"{peak['peak_rss_gib']:.2f}GiB RSS"
