"""The loss's bytes at the start of backward, and the head gradient's when it is summed projected (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import svd_for
from .shape import ModelShape
from .logits import LOSS_BYTES_PER_LOGIT, refresh_chunk
from .state import galore_temporaries


def loss_bytes(shape: ModelShape, tokens: int, nbytes: int, chunked: bool, chunk: int, head_trains: bool) -> int:
    """Transient bytes of the loss at the start of backward (fp32 log-softmax, its and the loss's gradient).

    Chunked: only one chunk of logits exists, plus a copy of the final hidden states and, when the
    head trains, one chunk's head-weight gradient next to the accumulated one.
    """
    if not chunked:
        return LOSS_BYTES_PER_LOGIT * tokens * shape.vocab
    head = shape.vocab * shape.hidden * nbytes if head_trains else 0
    return LOSS_BYTES_PER_LOGIT * min(chunk, tokens) * shape.vocab + tokens * shape.hidden * nbytes + head


@dataclass
class HeadBytes:
    """The loss's and the head gradient's bytes when the head's gradient is summed projected
    (``project_head_grad``, :mod:`ows.optim.head_grad`): a usual step holds its projection (vocab x r), a step that
    computes a new projector holds the full gradient with smaller loss chunks and projects it at the end of the
    loss; with several micro-batches per step that step keeps the full gradient to the optimizer step."""

    loss: int
    grad: int  # the head's gradient bytes after the loss (inside backward, at the optimizer step)
    refresh: int  # the end of the loss on a refresh step (added to the activations), 0 when none


def projected_head(shape: ModelShape, tokens: int, nbytes: int, chunk: int, rank: int, svd: str,
                   accumulation: int) -> HeadBytes:
    """:class:`HeadBytes` of an untied head (vocab x hidden) whose gradient the chunked loss sums projected to rank
    ``rank`` (its std side), with ``accumulation`` micro-batches per step and the head's projector by ``svd``."""
    full, r = shape.vocab * shape.hidden * nbytes, min(rank, shape.vocab, shape.hidden)
    low = max(shape.vocab, shape.hidden) * r * nbytes  # the projected gradient, shaped like a moment
    usual = loss_bytes(shape, tokens, nbytes, True, chunk, False) + low
    if accumulation > 1:
        return HeadBytes(max(usual, loss_bytes(shape, tokens, nbytes, True, chunk, True)), full, 0)
    refresh = loss_bytes(shape, tokens, nbytes, True, refresh_chunk(chunk, shape.hidden, r, nbytes), True)
    hidden = tokens * shape.hidden * nbytes
    projector = 2 * hidden + full + galore_temporaries(shape.vocab, shape.hidden, rank, nbytes, svd_for(svd, True))
    return HeadBytes(max(usual, refresh), low, projector)
