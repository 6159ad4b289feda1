"""Cross-entropy over a large vocabulary without materialising the full logits.

A causal LM's loss normally builds a (tokens, vocab) logits tensor, an fp32 copy of it, its
log-softmax and its gradient: for 8 x 512 tokens and a 128k vocabulary that is 2 GiB each in fp32.
:func:`chunked_cross_entropy` computes the same loss chunk by chunk of tokens; each chunk's logits
are dropped after its forward and recomputed during backward (activation checkpointing of the
output head), so at most one chunk of logits is alive at a time. The cost is one extra matmul of
the head per chunk in backward. When the head's gradient is kept projected (:mod:`ows.optim.head_grad`), each
chunk's share of it is projected as it is made and ``weight.grad`` is not written.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .optim.head_grad import projected_grad

IGNORE_INDEX = -100


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")


def _chunks(count: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, count, size)]


class _ProjectedHeadLoss(torch.autograd.Function):
    """The summed chunked loss whose head-weight gradient goes to a :class:`ows.optim.head_grad.ProjectedHeadGrad`
    (projected chunk by chunk, or summed whole on a refresh step) instead of ``weight.grad``. Backward recomputes
    each chunk's logits, as the checkpointed path does, and returns the hidden states' gradient only."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int,
                ignore_index: int, sink: Any, mode: str) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for part in _chunks(hidden.shape[0], chunk_size):
            total += _chunk_loss_sum(hidden[part], weight, None, targets[part], ignore_index)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.settings = (sink.chunk_size(chunk_size, mode), ignore_index, sink, mode)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[Any, ...]:
        hidden, weight, targets = ctx.saved_tensors
        chunk_size, ignore_index, sink, mode = ctx.settings
        d_hidden = torch.empty_like(hidden)
        full = torch.zeros_like(weight) if mode == "refresh" else None
        for part in _chunks(hidden.shape[0], chunk_size):
            seen: list[torch.Tensor] = []  # the logits' gradient, caught in flight: the logits themselves are
            with torch.enable_grad():        # not kept, so that no more than the checkpointed path's bytes exist
                h = hidden[part].detach().requires_grad_(True)
                logits = F.linear(h, weight.detach())
                logits.register_hook(seen.append)
                loss = F.cross_entropy(logits.float(), targets[part], ignore_index=ignore_index, reduction="sum")
                del logits
                d_hidden[part] = torch.autograd.grad(loss, h, grad_total)[0]
            if full is not None:
                full.addmm_(seen[0].t(), h.detach())
            else:
                sink.add(seen[0], h.detach())
            del loss, seen
        if full is not None:
            sink.finish_refresh(full)
        return d_hidden, None, None, None, None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``targets``, chunk by chunk.

    Args:
        hidden: (N, H) final hidden states, one row per token.
        weight: (V, H) output-head weight; ``bias``: (V,) or None.
        targets: (N,) token ids; positions equal to ``ignore_index`` do not count.
        chunk_size: tokens per chunk; peak extra memory is about ``chunk_size * V`` fp32 values x 3.

    Returns the sum (fp32 scalar) over counted tokens; divide by the token count for the mean.
    Logits are computed in the weight's dtype and upcast to fp32 for the softmax, like the Hugging
    Face causal-LM loss. Gradients flow to ``hidden``, ``weight`` and ``bias``.
    """
    if hidden.dim() != 2 or targets.dim() != 1 or hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} must be (N, H) and (N,)")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is invalid: use a positive number of tokens")
    keep = (targets != ignore_index).nonzero().squeeze(1)
    hidden, targets = hidden.index_select(0, keep), targets.index_select(0, keep)
    sink = projected_grad(weight) if torch.is_grad_enabled() and weight.requires_grad and bias is None else None
    mode = sink.mode() if sink is not None else "full"
    if mode != "full":  # the head's gradient goes to its projection (ows.optim.head_grad), not to weight.grad
        return _ProjectedHeadLoss.apply(hidden, weight, targets, chunk_size, ignore_index, sink, mode)
    # Start from a zero that is part of the graph: a batch without labelled tokens still backpropagates
    # (zero gradients), like the standard loss, instead of failing or leaving other ranks waiting.
    total = (hidden.sum() * 0.0 + weight.sum() * 0.0).float()
    if bias is not None:
        total = total + bias.sum().float() * 0.0
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    for part in _chunks(hidden.shape[0], chunk_size):
        if needs_grad:
            chunk = checkpoint(_chunk_loss_sum, hidden[part], weight, bias, targets[part], ignore_index,
                               use_reentrant=False)
        else:
            chunk = _chunk_loss_sum(hidden[part], weight, bias, targets[part], ignore_index)
        total = total + chunk
    return total


def shift_for_causal_lm(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Labels shifted so position t predicts token t+1 (the last position ignored), flattened to (N,)."""
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return shifted.reshape(-1)
