"""The output head's gradient kept in its GaLore-projected form: its full (vocab x hidden) gradient never waits.

With ``outside_optimizer: galore`` the optimizer uses the head's gradient G only projected to rank r (``G P^T``
on the usual right side). The chunked loss (:func:`ows.losses.chunked_cross_entropy`) builds G as a sum over
chunks of tokens, ``G = sum_c dlogits_c^T h_c``, so each chunk's share can be projected as it is made,
``dlogits_c^T (h_c P^T)``: a (vocab x r) sum instead of a (vocab x hidden) one next to the logits at the start
of backward and next to the decoder layers' gradients after it. On a step that computes a new projector (the
first, then every ``update_proj_gap``) the loss sums the full G with smaller chunks (:func:`refresh_chunk`, so
that the logits and G together take no more than the logits of a usual step), computes the projector from it at
the end of the loss, before the decoder layers' backward, and frees it: the same projector and the same
projected gradient as the optimizer would compute from ``p.grad``. With several micro-batches per step
(``accumulation_steps`` other than 1, or unknown) such a step keeps the full gradient in ``p.grad`` as usual.

Gradient clipping sees the head's projected gradient (what its update uses), not the full one:
:func:`ows.integrations.hf.attach_trainer` turns this on and clips and reports the norm with it (a plain loop,
which clips ``p.grad`` itself, keeps the full gradient). A tied head (the input embedding's matrix), a head with
a trained bias, the fused step, several processes and fp16's grad scaler keep the full gradient too.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..choices import head_grad_kept_whole
from ..memory.logits import refresh_chunk
from .projector import project, projection_side

logger = logging.getLogger(__name__)
ATTR = "_ows_projected_grad"


class ProjectedHeadGrad:
    """The projected gradient of one 2-D parameter of a GaLore group, summed by the chunked loss.

    ``mode()`` says how this step's gradient is made: ``projected`` (summed here, projected), ``refresh`` (the
    loss sums the full gradient and calls :meth:`finish_refresh`) or ``full`` (``p.grad`` as usual).
    """

    def __init__(self, optimizer: Any, param: nn.Parameter, group: dict[str, Any], accumulation_steps: int | None):
        self.optimizer, self.param, self.group = optimizer, param, group
        self.accumulation_steps = accumulation_steps
        self.side = projection_side(param.shape, group["proj_type"])
        self.low: torch.Tensor | None = None

    def mode(self) -> str:
        """How the current step's gradient of the parameter is made (see the class)."""
        state = self.optimizer.state.get(self.param, {})
        if "projector" in state and state.get("step", 0) % self.group["update_proj_gap"] != 0:
            return "projected"
        return "refresh" if self.accumulation_steps == 1 else "full"

    def chunk_size(self, chunk: int, mode: str) -> int:
        """Tokens per loss chunk this step: smaller on a refresh step, where the full gradient is summed too."""
        if mode != "refresh":
            return chunk
        rows, cols = self.param.shape
        return refresh_chunk(chunk, cols, min(self.group["rank"], rows, cols), self.param.element_size())

    def add(self, dlogits: torch.Tensor, hidden: torch.Tensor) -> None:
        """Add the projection of ``dlogits^T @ hidden`` (one chunk's gradient) without forming it."""
        projector = self.optimizer.state[self.param]["projector"]
        if self.side == "right":
            low = dlogits.t() @ (hidden @ projector.t())
        else:
            low = (dlogits @ projector).t() @ hidden
        self._accumulate(low)

    def finish_refresh(self, grad: torch.Tensor) -> None:
        """A new projector from the step's full gradient (as the optimizer would compute it), and its projection."""
        state = self.optimizer.state[self.param]
        state["projector"] = self.optimizer.new_projector(grad, self.group, self.side, state.get("projector"))
        self._accumulate(project(grad, state["projector"], self.side))

    def _accumulate(self, low: torch.Tensor) -> None:
        self.low = low if self.low is None else self.low.add_(low)

    def take(self) -> torch.Tensor | None:
        """The summed projected gradient, handed over once (the optimizer's step takes it)."""
        low, self.low = self.low, None
        return low


def projected_grad(param: torch.Tensor) -> ProjectedHeadGrad | None:
    """The :class:`ProjectedHeadGrad` of ``param``, or None when its gradient is kept whole."""
    return getattr(param, ATTR, None)


def projected_grads(model: nn.Module) -> list[ProjectedHeadGrad]:
    """Every :class:`ProjectedHeadGrad` of ``model``'s parameters."""
    return [g for p in model.parameters() if (g := projected_grad(p)) is not None]


def _head_group(optimizer: Any, head: nn.Parameter) -> dict[str, Any] | None:
    for group in optimizer.param_groups:
        if any(p is head for p in group["params"]):
            return group if "rank" in group and group.get("project_head_grad") else None
    return None


def enable_projected_head_grad(optimizer: Any, model: nn.Module, accumulation_steps: int | None,
                               distributed: bool = False, grad_scaler: bool = False) -> ProjectedHeadGrad | None:
    """Keep the output head's gradient projected (module docstring) when this run can; None (and a log line
    saying why, when the group asked for it) when it cannot. ``accumulation_steps``: micro-batches per step;
    ``grad_scaler``: fp16 training, whose scaler unscales ``p.grad`` only."""
    get_head, get_inputs = getattr(model, "get_output_embeddings", None), getattr(model, "get_input_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Linear) or not head.weight.requires_grad:
        return None
    group = _head_group(optimizer, head.weight)
    if group is None:
        return None
    inputs = get_inputs() if callable(get_inputs) else None
    why = head_grad_kept_whole(several_processes=distributed, grad_scaler=grad_scaler,
                               fused_step=getattr(optimizer, "fused", None) is not None,
                               tied=inputs is not None and getattr(inputs, "weight", None) is head.weight,
                               head_bias=head.bias is not None and head.bias.requires_grad)
    if why is not None:
        logger.info("project_head_grad: the head's full gradient is kept (%s)", why)
        return None
    projected = ProjectedHeadGrad(optimizer, head.weight, group, accumulation_steps)
    setattr(head.weight, ATTR, projected)
    logger.info("project_head_grad: the head's gradient is summed projected (rank %d) by the chunked loss",
                group["rank"])
    return projected
