"""The fused step: each trained parameter is updated inside backward, as soon as its gradient is complete.

A post-accumulate-grad hook on every parameter of the optimizer runs that parameter's update
(``GaLoreAdamW.update_parameter``: its SVD when due, projection, Adam, weight decay) and frees the
gradient at once, so that about one weight's gradient exists at any time instead of all gradients
of the gamma sampled layers and of the embeddings and head. Autograd sums every use of a weight in
one backward (a tied embedding, a head under the chunked loss) before the hook fires, so the hook
sees the complete gradient; a weight that fires twice (shared by two segments of reentrant
checkpointing) is an error. Parameters handed to :meth:`FusedStep.step_later` (under DDP, those
DDP reduces itself) keep their gradient and are updated in ``optimizer.step()``.

- **Gradient accumulation**: the hooks update only on the last micro-batch of a step
  (``is_final_micro_batch``); earlier micro-batches accumulate gradients as usual.
- **Clipping**: exact global-norm clipping needs every gradient before the first update. Here every
  update of step t is scaled by ``min(1, max_grad_norm / ||g_{t-1}||)``, the previous step's global
  norm (step 0 is not clipped). ``grad_norm`` is the exact, unclipped global norm of the step just
  taken (from the hooks, plus the gradients still held at ``optimizer.step()``).
- **Non-finite gradients**: a parameter whose gradient holds NaN/inf is not updated and is named in
  ``nonfinite``; parameters updated earlier in the same backward keep their update.
- **DDP**: ``reduce`` (set by ``ows.distributed.setup_ddp``) averages a decoder-layer gradient across
  ranks inside its hook, before the update; DDP's own parameters are stepped later.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch


class FusedStep:
    """Runs the updates of ``params`` inside backward for ``optimizer`` (a ``GaLoreAdamW``)."""

    def __init__(self, optimizer: Any, params: Iterable[torch.Tensor], names: dict[int, str] | None = None,
                 max_grad_norm: float = 0.0) -> None:
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.is_final_micro_batch: Callable[[], bool] = lambda: True
        self.reduce: Callable[[torch.Tensor], None] | None = None
        # Called with (parameter, squared norm of the gradient it is updated with) before each update (the
        # gradient sampler's measurement: the gradient is freed right after).
        self.observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None
        self.clip_coef = 1.0
        self.grad_norm: float | None = None
        self.nonfinite: list[str] = []
        self._names = names or {}
        self._groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        self._layer_sq: torch.Tensor | None = None
        self._norm: float | None = None
        self._updated: set[int] = set()
        params = list(dict.fromkeys(p for p in params if id(p) in self._groups))
        self._handles = {id(p): _hook(p, self._on_grad) for p in params}

    def _on_grad(self, p: torch.Tensor) -> None:
        if not self.is_final_micro_batch():
            return
        if id(p) in self._updated:
            raise RuntimeError(f"fused_step: {self._names.get(id(p), 'a decoder-layer parameter')} received a second "
                               "gradient in one backward pass (a weight shared or used twice per forward): set "
                               "fused_step false for this model")
        self._updated.add(id(p))
        if self.reduce is not None:
            self.reduce(p.grad)
        square = p.grad.detach().float().pow(2).sum()
        self._layer_sq = square if self._layer_sq is None else self._layer_sq + square
        if not torch.isfinite(square):
            self.nonfinite.append(self._names.get(id(p), "?"))
        else:
            if self.clip_coef < 1.0:
                p.grad.mul_(self.clip_coef)
            if self.observe is not None:
                self.observe(p, square * self.clip_coef**2 if self.clip_coef < 1.0 else square)
            self.optimizer.update_parameter(p, self._group_of(p))
        p.grad = None

    def _group_of(self, p: torch.Tensor) -> dict[str, Any]:
        """The param group of ``p`` now: ``load_state_dict`` (accelerate calls it when it wraps the optimizer, and
        a resume does) replaces the group dicts, and the LR scheduler writes the new ones."""
        group = self._groups.get(id(p))
        if group is None or not any(group is g for g in self.optimizer.param_groups):
            self._groups = {id(q): g for g in self.optimizer.param_groups for q in g["params"]}
            group = self._groups[id(p)]
        return group

    def is_fused(self, p: torch.Tensor) -> bool:
        """Whether ``p`` is updated inside backward."""
        return id(p) in self._handles

    def step_later(self, params: Iterable[torch.Tensor]) -> None:
        """Update ``params`` in ``optimizer.step()`` instead (e.g. the parameters DDP reduces after backward)."""
        for p in params:
            handle = self._handles.pop(id(p), None)
            if handle is not None:
                handle.remove()

    def current_grad_norm(self) -> float:
        """The global, unclipped gradient norm of the step in progress: the fused updates plus the gradients
        still held (computed once per step, when the backward is over)."""
        if self._norm is None:
            total = float(self._layer_sq) if self._layer_sq is not None else 0.0
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        total += float(p.grad.detach().float().pow(2).sum())
            self._norm = math.sqrt(total) if math.isfinite(total) else float("nan")
        return self._norm

    def clip_outside(self) -> None:
        """Scale the gradients still held (outside the decoder layers) by this step's coefficient."""
        if self.clip_coef < 1.0:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(self.clip_coef)

    def end_step(self) -> None:
        """Record the step's norm, set the next step's clipping coefficient, reset the per-step tallies."""
        grad_norm = self.current_grad_norm()
        self.grad_norm = grad_norm
        if self.max_grad_norm > 0 and math.isfinite(grad_norm):
            self.clip_coef = min(1.0, self.max_grad_norm / (grad_norm + 1e-6))
        self._layer_sq = None
        self._norm = None
        self._updated.clear()
        self.nonfinite = []

    def state_dict(self) -> dict[str, float | None]:
        """What an exact resume needs: the clipping coefficient of the next step and the last norm."""
        return {"clip_coef": self.clip_coef, "grad_norm": self.grad_norm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip_coef = float(state.get("clip_coef", 1.0))
        self.grad_norm = state.get("grad_norm")

    def remove(self) -> None:
        """Remove the hooks (the optimizer then steps as usual)."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()


def _hook(p: torch.Tensor, fn: Callable[[torch.Tensor], None]) -> Any:
    """``p.register_post_accumulate_grad_hook(fn)``, also for a parameter frozen right now (the controller
    unfreezes it when its layer is sampled; the hook stays)."""
    frozen = not p.requires_grad
    p.requires_grad_(True)
    try:
        return p.register_post_accumulate_grad_hook(fn)
    finally:
        if frozen:
            p.requires_grad_(False)


def enable_fused_step(optimizer: Any, model: torch.nn.Module, max_grad_norm: float = 0.0) -> FusedStep:
    """Give ``optimizer`` (a ``GaLoreAdamW``) a :class:`FusedStep` over all its parameters; returns it.

    Refused for a model sharded with FSDP2: its gradients reach the sharded parameters after the
    backward's reduce-scatter, not through the hooks this relies on.
    """
    from .sharded import is_dtensor

    if any(is_dtensor(p) for p in model.parameters()):
        raise ValueError("fused_step=true is not supported with FSDP2 (sharded parameters): set fused_step false, or "
                         "train in one process or with DDP")
    if getattr(optimizer, "fused", None) is not None:
        optimizer.fused.remove()
    names = {id(p): name for name, p in model.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.fused = FusedStep(optimizer, params, names, max_grad_norm)
    return optimizer.fused
