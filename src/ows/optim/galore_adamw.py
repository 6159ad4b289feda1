"""AdamW with optional low-rank gradient projection (GaLore) per param group.

A group with the key ``rank`` is projected (keys as in the GaLore reference optimizer: ``rank``,
``update_proj_gap``, ``scale``, ``proj_type``); other groups are plain AdamW. The arithmetic follows
``galore_torch.GaLoreAdamW`` 1.0 update for update, including its order of weight decay (applied
after the Adam step), except that the projected-back update is added into the weight in one ``addmm_``
per slice of rows (``add_projected``): the same sum, rounded once instead of three times in bf16, and no
full-size update tensor. State per parameter is tensors and ints only: ``step``, ``exp_avg``,
``exp_avg_sq`` and, for projected weights, ``projector``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from ..choices import PROJ_TYPES, PROJECTOR_METHODS, UPDATE_CHUNK
from .head_grad import projected_grad
from .lowbit import adam_step_8bit, uses_8bit
from .sharded import add_replicated, is_dtensor
from .projector import (add_projected, compute_projector, gram_projector, project, project_back, projection_side,
                        randomized_projector, slices)

logger = logging.getLogger(__name__)


def adam_direction(
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    beta1: float,
    beta2: float,
    eps: float,
    correct_bias: bool = True,
) -> torch.Tensor:
    """Update the moments in place with ``grad`` and return the bias-corrected Adam direction.

    ``step`` counts from 1 (the step being taken). The parameter update is ``-lr * direction``.
    """
    exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = exp_avg_sq.sqrt().add_(eps)
    direction = exp_avg / denom
    if correct_bias:
        direction.mul_(math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step))
    return direction


def _robust_projector(
    grad: torch.Tensor, rank: int, side: str, previous: torch.Tensor | None, method: str = "exact"
) -> torch.Tensor:
    """The projector by ``method`` (exact, randomized or gram); if an exact SVD or the Gram matrix's
    eigendecomposition fails, keep the previous projector or fall back to a randomized SVD."""
    if method == "randomized":
        return randomized_projector(grad, rank, side)  # type: ignore[arg-type]
    try:
        if method == "gram":
            return gram_projector(grad, rank, side)  # type: ignore[arg-type]
        return compute_projector(grad, rank, side)  # type: ignore[arg-type]
    except RuntimeError as err:  # torch.linalg.LinAlgError is a RuntimeError
        what = "eigendecomposition of the Gram matrix" if method == "gram" else "SVD"
        if previous is not None:
            logger.warning("%s of a %s gradient failed (%s): keeping its previous projector", what, tuple(grad.shape),
                           err)
            return previous
        logger.warning("%s of a %s gradient failed (%s): using a randomized SVD", what, tuple(grad.shape), err)
        return randomized_projector(grad, rank, side)  # type: ignore[arg-type]


def _next_step(state: dict[str, Any], grad: torch.Tensor) -> None:
    """Count one more Adam step of a parameter, creating its moments (shaped like ``grad``) on the first: the one
    place Adam state is created."""
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
    state["step"] = state.get("step", 0) + 1


def _chunked_adam(target: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """The plain AdamW step of a large tensor in slices of rows, so that its temporaries (the denominator and the
    direction) are a slice's size, not the tensor's: the same elementwise arithmetic, so the same result."""
    _next_step(state, grad)
    beta1, beta2 = group["betas"]
    for part in slices(grad.shape[0], grad[0].numel() if grad.dim() > 1 else 1, UPDATE_CHUNK):
        direction = adam_direction(grad[part], state["exp_avg"][part], state["exp_avg_sq"][part], state["step"],
                                   beta1, beta2, group["eps"], group["correct_bias"])
        target[part].add_(direction, alpha=-group["lr"])


def _decay(target: torch.Tensor, group: dict[str, Any]) -> None:
    """Decoupled weight decay, applied after the Adam step (as galore-torch does): the one place it is applied."""
    if group["weight_decay"] > 0.0:
        target.add_(target, alpha=-group["lr"] * group["weight_decay"])


def _master(p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> torch.Tensor | None:
    """The fp32 master copy of a low-precision parameter of a ``master`` group (made on its first update)."""
    if not group.get("master") or p.dtype == torch.float32:
        return None
    if "master" not in state:
        state["master"] = p.detach().float().clone()
    return state["master"]


class GaLoreAdamW(Optimizer):
    """AdamW whose groups with a ``rank`` key run Adam on low-rank projected gradients.

    Args:
        params: parameters or param groups. GaLore groups hold 2-D weights and the keys
            ``rank`` (int), ``update_proj_gap`` (steps between SVDs), ``scale`` (alpha),
            ``proj_type`` (std / reverse_std / left / right) and ``svd`` (exact, the default;
            randomized: a seeded randomized SVD with 2 power iterations, faster on large matrices; gram:
            the eigenvectors of the smaller Gram matrix).
        lr, betas, eps, weight_decay: as in AdamW (weight decay decoupled, applied after the step).
        correct_bias: Adam bias correction (on by default).

    Two more group keys: ``master`` (True: a bf16/fp16 parameter keeps an fp32 master copy and fp32
    moments; every update goes to the master, which is then rounded into the parameter) and
    ``state_bits`` (8: plain-AdamW parameters of the group keep 8-bit blockwise moments, see
    :mod:`ows.optim.lowbit`). ``fused`` (a :class:`ows.optim.fused.FusedStep`, set by
    :func:`ows.optim.enable_fused_step`) moves the decoder-layer updates into the backward pass.

    Removing a parameter's entry from ``self.state`` (see ``OWSController``) resets it: the next
    gradient starts new moments and computes a new projector.
    """

    fused: Any = None
    svd_seconds: float = 0.0  # wall time spent computing projectors (SVDs), for the logs and trackers
    svd_calls: int = 0  # projectors computed (one SVD each)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr={lr!r} is invalid: must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas={betas!r} is invalid: both must be in [0, 1)")
        if not eps >= 0.0:
            raise ValueError(f"eps={eps!r} is invalid: must be >= 0")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay={weight_decay!r} is invalid: must be >= 0")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "correct_bias": correct_bias}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if "rank" not in group:
            return
        group.setdefault("update_proj_gap", 200)
        group.setdefault("scale", 1.0)
        group.setdefault("proj_type", "std")
        group.setdefault("svd", "exact")
        if isinstance(group["rank"], bool) or not isinstance(group["rank"], int) or group["rank"] < 1:
            raise ValueError(f"param group rank={group['rank']!r} is invalid: must be an integer >= 1")
        if not isinstance(group["update_proj_gap"], int) or group["update_proj_gap"] < 1:
            raise ValueError(f"param group update_proj_gap={group['update_proj_gap']!r} is invalid: must be an integer >= 1")
        if group["svd"] not in PROJECTOR_METHODS:
            raise ValueError(f"param group svd={group['svd']!r} is unknown: use one of {', '.join(PROJECTOR_METHODS)}")
        if group["proj_type"] not in PROJ_TYPES:
            raise ValueError(f"param group proj_type={group['proj_type']!r} is unknown: use one of {', '.join(PROJ_TYPES)}")
        for p in group["params"]:
            if p.dim() != 2:
                raise ValueError(
                    f"a GaLore param group (with 'rank') holds a tensor of shape {tuple(p.shape)}: "
                    "put only 2-D weights there and other parameters in a group without 'rank'"
                )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one optimizer step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.fused is not None:  # the decoder layers were updated in backward: the rest now, clipped alike
            self.fused.current_grad_norm()
            self.fused.clip_outside()
        for group in self.param_groups:
            for p in group["params"]:
                head = projected_grad(p)
                low = head.take() if head is not None else None
                if low is not None:
                    self._projected_update(p, low, group)
                elif p.grad is not None:
                    self.update_parameter(p, group)
        if self.fused is not None:
            self.fused.end_step()
        return loss

    def update_parameter(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """One AdamW (or GaLore) step of ``p`` from ``p.grad``, then its decoupled weight decay.

        A GaLore weight sharded as a DTensor (FSDP2) gathers its full gradient, computes the same
        update on every rank and applies its local shard (see :mod:`ows.optim.sharded`).
        """
        if p.grad.is_sparse:
            raise RuntimeError("GaLoreAdamW does not support sparse gradients")
        state = self.state[p]
        if group.get("state_bits") == 8 and "rank" not in group and uses_8bit(p) and not is_dtensor(p):
            adam_step_8bit(p, p.grad, state, group)
            _decay(p, group)
            return
        master = _master(p, state, group)
        target = p if master is None else master
        grad = p.grad if master is None else p.grad.float()
        if "rank" in group and is_dtensor(p):  # FSDP2: the SVD needs the whole gradient
            add_replicated(target, self._direction(state, grad.full_tensor(), p.shape, group), -group["lr"])
        elif "rank" in group:  # the low-rank direction goes back into the weight slice by slice
            low = self._low_rank_direction(state, grad, p.shape, group)
            side = projection_side(p.shape, group["proj_type"])
            add_projected(target, low, state["projector"], side, -group["lr"] * group["scale"])
        elif p.numel() > UPDATE_CHUNK and not is_dtensor(p):
            _chunked_adam(target, grad, state, group)
        else:
            target.add_(self._direction(state, grad, p.shape, group), alpha=-group["lr"])
        _decay(target, group)
        if master is not None:
            p.copy_(master)  # rounded to the parameter's dtype

    def _projected_update(self, p: torch.Tensor, low_grad: torch.Tensor, group: dict[str, Any]) -> None:
        """The GaLore step of ``p`` from its gradient already projected (:mod:`ows.optim.head_grad`), with the
        projector in its state: the same arithmetic as from ``p.grad``."""
        state = self.state[p]
        low = self._adam(state, low_grad, group)
        add_projected(p, low, state["projector"], projection_side(p.shape, group["proj_type"]),
                      -group["lr"] * group["scale"])
        _decay(p, group)

    def new_projector(self, grad: torch.Tensor, group: dict[str, Any], side: str,
                      previous: torch.Tensor | None) -> torch.Tensor:
        """A projector of ``grad`` by the group's ``svd`` method (timed and counted)."""
        started = time.perf_counter()
        projector = _robust_projector(grad, group["rank"], side, previous, group["svd"])
        self.svd_seconds += time.perf_counter() - started
        self.svd_calls += 1
        return projector

    def _direction(self, state: dict[str, Any], grad: torch.Tensor, shape: torch.Size, group: dict[str, Any]) -> torch.Tensor:
        """The full-size Adam direction of one parameter (its step is ``-lr`` times it); updates ``state`` in place."""
        if "rank" not in group:
            return self._adam(state, grad, group)
        low = self._low_rank_direction(state, grad, shape, group)
        return project_back(low, state["projector"], projection_side(shape, group["proj_type"]), group["scale"])

    def _low_rank_direction(self, state: dict[str, Any], grad: torch.Tensor, shape: torch.Size,
                            group: dict[str, Any]) -> torch.Tensor:
        """The Adam direction of a GaLore weight in its projected space; computes the projector when due."""
        side = projection_side(shape, group["proj_type"])
        if "projector" not in state or state["step"] % group["update_proj_gap"] == 0:
            state["projector"] = self.new_projector(grad, group, side, state.get("projector"))
        return self._adam(state, project(grad, state["projector"], side), group)

    @staticmethod
    def _adam(state: dict[str, Any], grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        _next_step(state, grad)
        beta1, beta2 = group["betas"]
        return adam_direction(grad, state["exp_avg"], state["exp_avg_sq"], state["step"], beta1, beta2, group["eps"],
                              group["correct_bias"])

    def state_dict(self) -> dict[str, Any]:
        """The torch state dict, plus the fused step's clipping coefficient (``ows_fused``) when it is on."""
        state = super().state_dict()
        if self.fused is not None:
            state["ows_fused"] = self.fused.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict; tensors saved in another dtype than their parameter's come back as saved.

        torch casts every floating-point state tensor to its parameter's dtype when loading; the fp32
        masters and moments of a bf16 parameter, and the uint8 codes of 8-bit moments, must not be (a
        bf16 round trip would lose the masters' precision and break an exact resume), so the saved
        tensors themselves are put back, on the parameter's device.
        """
        state_dict = dict(state_dict)
        fused = state_dict.pop("ows_fused", None)
        saved = state_dict.get("state", {})
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for index, entry in saved.items():
            if not isinstance(index, int) or index >= len(params) or params[index] not in self.state:
                continue
            param, state = params[index], self.state[params[index]]
            for key, value in entry.items():
                if torch.is_tensor(value) and key != "step" and value.dtype != param.dtype:
                    state[key] = value.to(param.device)
        if fused is not None and self.fused is not None:
            self.fused.load_state_dict(fused)
