"""8-bit blockwise Adam moments for one parameter at a time, with bitsandbytes' kernel.

bitsandbytes (``bnb.functional.optimizer_update_8bit_blockwise``) keeps each moment as uint8 codes
of a dynamic quantization map, one fp32 absmax per block of 256 values: about 1/4 of fp32 moments.
Using the per-parameter kernel, instead of ``bnb.optim.AdamW8bit`` as a separate optimizer, keeps the
state in :class:`ows.GaLoreAdamW` (so the controller's state release and the fused step work alike)
and runs on CPU and CUDA. Tensors smaller than ``MIN_8BIT_SIZE`` keep full moments, as in bitsandbytes.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from ..choices import EIGHT_BIT_BLOCK as BLOCK_SIZE
from ..choices import EIGHT_BIT_MIN_SIZE as MIN_8BIT_SIZE
INSTALL = "pip install 'ows[memory]' (bitsandbytes)"


@functools.lru_cache(maxsize=None)
def _functional() -> Any:
    try:
        import bitsandbytes.functional as functional
    except ImportError:
        raise FileNotFoundError(f"outside_optimizer='adamw8bit' needs bitsandbytes: {INSTALL}") from None
    return functional


def available() -> bool:
    """Whether bitsandbytes can be imported."""
    try:
        _functional()
    except FileNotFoundError:
        return False
    return True


def uses_8bit(p: torch.Tensor) -> bool:
    """Whether a parameter gets 8-bit moments (large enough; bitsandbytes' own rule)."""
    return p.numel() >= MIN_8BIT_SIZE


def _maps(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    functional = _functional()
    return (functional.create_dynamic_map(signed=True).to(device),
            functional.create_dynamic_map(signed=False).to(device))


def init_state(p: torch.Tensor, state: dict[str, Any]) -> None:
    """Fill ``state`` with zero 8-bit moments for ``p`` (codes, quantization maps, block maxima)."""
    blocks = -(-p.numel() // BLOCK_SIZE)
    signed, unsigned = _maps(p.device)
    state.update(step=0, state1=torch.zeros_like(p, dtype=torch.uint8), state2=torch.zeros_like(p, dtype=torch.uint8),
                 qmap1=signed, qmap2=unsigned,
                 absmax1=torch.zeros(blocks, dtype=torch.float32, device=p.device),
                 absmax2=torch.zeros(blocks, dtype=torch.float32, device=p.device))


def adam_step_8bit(p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """One Adam step of ``p`` (in place, no weight decay: the optimizer applies it) with 8-bit moments."""
    if "state1" not in state:
        init_state(p, state)
    state["step"] += 1
    beta1, beta2 = group["betas"]
    _functional().optimizer_update_8bit_blockwise(
        "adam", grad.to(p.dtype).contiguous(), p, state["state1"], state["state2"], beta1, beta2, 0.0, 0.0,
        group["eps"], state["step"], group["lr"], state["qmap1"], state["qmap2"], state["absmax1"], state["absmax2"],
        weight_decay=0.0,
    )
