"""GaLore on weights sharded by FSDP2 (DTensor parameters): the SVD needs the whole gradient.

A sharded GaLore weight gathers its full gradient (one all-gather, the weight's full size as a
temporary), every rank computes the same low-rank update (the SVD and the moments, rank x side, are
held on every rank) and each applies the slice of it that its shard holds.
"""

from __future__ import annotations

import functools
from typing import Any

import torch


@functools.lru_cache(maxsize=None)
def _dtensor_type() -> type | None:
    if not torch.distributed.is_available():
        return None
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch < 2.5, or built without distributed support
        return None
    return DTensor


def is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (False where torch has none)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def add_replicated(param: torch.Tensor, update: torch.Tensor, alpha: float) -> None:
    """``param += alpha * update`` for a DTensor ``param`` and a full (unsharded) ``update`` held by every rank."""
    from torch.distributed.tensor import DTensor, Replicate

    mesh = param.device_mesh
    replicated = DTensor.from_local(update.to(param.dtype), mesh, [Replicate()] * mesh.ndim, run_check=False)
    param.add_(replicated.redistribute(mesh, param.placements), alpha=alpha)
