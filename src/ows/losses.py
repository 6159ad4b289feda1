"""Cross-entropy over a large vocabulary without materialising the full logits.

A causal LM's loss normally builds a (tokens, vocab) logits tensor, an fp32 copy of it, its
log-softmax and its gradient: for 8 x 512 tokens and a 128k vocabulary that is 2 GiB each in fp32.
:func:`chunked_cross_entropy` computes the same loss chunk by chunk of tokens; each chunk's logits
are dropped after its forward and recomputed during backward (activation checkpointing of the
output head), so at most one chunk of logits is alive at a time. The cost is one extra matmul of
the head per chunk in backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")


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
    # Start from a zero that is part of the graph: a batch without labelled tokens still backpropagates
    # (zero gradients), like the standard loss, instead of failing or leaving other ranks waiting.
    total = (hidden.sum() * 0.0 + weight.sum() * 0.0).float()
    if bias is not None:
        total = total + bias.sum().float() * 0.0
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    for start in range(0, hidden.shape[0], chunk_size):
        part = slice(start, start + chunk_size)
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
