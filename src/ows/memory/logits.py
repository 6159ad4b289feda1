"""The loss's bytes per logit and the loss chunk of a step that sums a head's full gradient (no torch, no ows
imports: the estimate and the optimizer both read it)."""

from __future__ import annotations

LOSS_BYTES_PER_LOGIT = 12  # fp32 log-softmax output, its gradient and the loss gradient at backward start


def refresh_chunk(chunk: int, hidden: int, rank: int, nbytes: int) -> int:
    """Tokens per loss chunk on a step where the chunked loss sums a head's full gradient (hidden x vocab, ``nbytes``
    per element) next to its logits (:mod:`ows.optim.head_grad`): chunks smaller by about the gradient's bytes, so
    that both together take no more than a usual step's logits and projected gradient (rank ``rank``); at least an
    eighth of ``chunk``."""
    fewer = -(-(hidden - rank) * nbytes // LOSS_BYTES_PER_LOGIT)
    return max(chunk - fewer, chunk // 8, 1)
