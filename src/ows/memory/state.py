"""Gradient, optimizer-state and update-temporary bytes of one method (no torch): the terms of the estimate.

Every figure follows what ``GaLoreAdamW`` holds for a parameter (see :mod:`ows.optim.galore_adamw`):

- plain AdamW: 2 moments in the weights' dtype; with ``master`` (bf16/fp16 weights, decoder layers
  only) an fp32 master copy and fp32 moments;
- GaLore (2-D weight m x n, r' = min(r, m, n)): 2 moments of max(m, n) x r' and a projector of
  min(m, n) x r', fp32 with ``master``;
- 8-bit moments (``outside_optimizer: adamw8bit``, tensors of at least 4096 elements): 2 uint8 codes
  per element, one fp32 absmax per block of 256 for each moment and the two 256-entry maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..choices import EIGHT_BIT_BLOCK, EIGHT_BIT_MIN_SIZE, UPDATE_CHUNK, svd_for
from ..methods import Method
from .shape import ModelShape


@dataclass
class Parts:
    """Per-layer and outside figures in bytes, before the phases of a step are combined."""

    grad_layer: int = 0
    grads_outside: list[int] = field(default_factory=list)
    largest_grad: int = 0
    state: int = 0
    projectors: int = 0
    temporaries: int = 0
    extra_weights: int = 0


def outside_shapes(shape: ModelShape, method: Method, train_embeddings: bool, train_lm_head: bool) -> list[tuple[int, int]]:
    """(rows, cols) of the trainable parameters outside the decoder layers; a vector of n is (n, 1)."""
    if method.outside == "none":
        return []
    if method.outside == "all":
        train_embeddings = train_lm_head = True
    shapes = [(shape.final_norm_params, 1)]
    if train_embeddings or (shape.tied and train_lm_head):
        shapes.append((shape.vocab, shape.hidden))
    if train_embeddings and shape.position_params:
        shapes.append((shape.position_params // shape.hidden, shape.hidden))
    if train_lm_head and not shape.tied:
        shapes.append((shape.vocab, shape.hidden))
    return shapes


def galore_sizes(rows: int, cols: int, rank: int) -> tuple[int, int]:
    """(moment elements, projector elements) of one GaLore weight: max(m, n) x r' and min(m, n) x r'."""
    r = min(rank, rows, cols)
    return max(rows, cols) * r, min(rows, cols) * r


def svd_temporaries(rows: int, cols: int, rank: int, nbytes: int, method: str = "exact") -> int:
    """Transient bytes of computing one projector (fp32 work on an m x n gradient, k = min(m, n)).

    exact: the fp32 copy of a low-precision gradient and the SVD factors U (m x k), S, Vh (k x n).
    randomized: the fp32 copy and torch.svd_lowrank's bases of r + 8 columns on both sides.
    gram: the k x k Gram matrix, its eigenvectors and the eigensolver's work, plus one fp32 slice.
    """
    k, r = min(rows, cols), min(rank, rows, cols)
    copy = rows * cols * 4 if nbytes != 4 else 0
    if method == "gram":
        return 3 * k * k * 4 + min(UPDATE_CHUNK, rows * cols) * 4 + k * r * nbytes
    if method == "randomized":
        return copy + 3 * (rows + cols) * min(r + 8, k) * 4 + k * r * nbytes
    return (rows * k + k * cols + k) * 4 + k * r * nbytes + copy


def galore_temporaries(rows: int, cols: int, rank: int, nbytes: int, method: str = "exact") -> int:
    """Largest transient bytes of one GaLore update: computing the projector, or the projected update (the
    projected gradient, Adam's denominator and direction; the update goes back into the weight slice by slice
    in place, ``ows.optim.projector.add_projected``, so no full-size update exists)."""
    r = min(rank, rows, cols)
    update = 3 * max(rows, cols) * r * nbytes
    return max(svd_temporaries(rows, cols, rank, nbytes, method), update)


def adam_temporaries(elements: int, nbytes: int) -> int:
    """Transient bytes of a plain AdamW update (its denominator and direction), sliced above UPDATE_CHUNK."""
    return 2 * min(elements, UPDATE_CHUNK) * nbytes


def eight_bit_state(elements: int, nbytes: int) -> int:
    """Bytes of 8-bit blockwise Adam moments for a tensor (full moments below the size threshold)."""
    if elements < EIGHT_BIT_MIN_SIZE:
        return 2 * elements * nbytes
    blocks = -(-elements // EIGHT_BIT_BLOCK)
    return 2 * elements + 2 * blocks * 4 + 2 * 256 * 4


def _lora_parts(shape: ModelShape, lora_rank: int) -> Parts:
    adapters = sum(lora_rank * (o + i) for o, i in shape.out_in) * shape.layers
    largest = max(lora_rank * max(o, i) for o, i in shape.out_in)
    steps = 2 * len(shape.layer_matrices) * shape.layers * 4  # torch AdamW keeps a 0-d fp32 step per tensor
    return Parts(grads_outside=[adapters * 4], largest_grad=largest * 4, state=2 * adapters * 4 + steps,
                 temporaries=2 * largest * 4, extra_weights=adapters * 4)


def _outside_terms(parts: Parts, outside: list[tuple[int, int]], rank: int, nbytes: int, optimizer: str,
                   svd: str) -> None:
    for rows, cols in outside:
        if optimizer == "galore" and cols > 1:
            moments, projector = galore_sizes(rows, cols, rank)
            parts.state += 2 * moments * nbytes
            parts.projectors += projector * nbytes
            parts.temporaries = max(parts.temporaries, galore_temporaries(rows, cols, rank, nbytes, svd_for(svd, True)))
        elif optimizer == "adamw8bit":
            parts.state += eight_bit_state(rows * cols, nbytes)
        else:
            parts.state += 2 * rows * cols * nbytes
            parts.temporaries = max(parts.temporaries, adam_temporaries(rows * cols, nbytes))


def optimizer_parts(shape: ModelShape, method: Method, k: float, rank: int, lora_rank: int, nbytes: int,
                    outside: list[tuple[int, int]], master: bool = False, outside_optimizer: str = "adamw",
                    svd: str = "auto", vector_layers: int | None = None) -> Parts:
    """Gradients, moments, projectors and step temporaries for ``k`` trained layers plus ``outside``.

    ``sampling_granularity: module`` trains single weights: ``k`` is then the budget in layers' worth of 2-D
    weights (a fraction allowed; the weights in a layer's proportions) and ``vector_layers`` the layers whose
    norms and biases train (those holding a drawn weight); None: ``k``.
    """
    vector_layers = k if vector_layers is None else vector_layers
    if method.layers == "adapters":
        return _lora_parts(shape, lora_rank)
    grads = [rows * cols * nbytes for rows, cols in outside]
    parts = Parts(grads_outside=grads, grad_layer=shape.layer_params * nbytes)
    parts.largest_grad = max([r * c * nbytes for r, c in shape.layer_matrices] * bool(k) + grads, default=0)
    state_bytes = 4 if master and nbytes != 4 else nbytes  # fp32 masters come with fp32 moments
    copy = state_bytes != nbytes  # a master's update reads an fp32 copy of its gradient, alive through the update
    if state_bytes != nbytes:
        masters = (shape.layer_params - shape.layer_vectors) * k + shape.layer_vectors * vector_layers
        parts.state += 4 * masters  # the master copies
    for rows, cols in shape.layer_matrices:
        if method.galore:
            moments, projector = galore_sizes(rows, cols, rank)
            parts.state += 2 * moments * state_bytes * k
            parts.projectors += projector * state_bytes * k
            parts.temporaries = max(parts.temporaries, galore_temporaries(rows, cols, rank, state_bytes,
                                                                          svd_for(svd, False)) + copy * rows * cols * 4)
        else:
            parts.state += 2 * rows * cols * state_bytes * k
            parts.temporaries = max(parts.temporaries, adam_temporaries(rows * cols, state_bytes)
                                    + copy * rows * cols * 4)
    parts.state += 2 * shape.layer_vectors * vector_layers * state_bytes
    _outside_terms(parts, outside, rank, nbytes, outside_optimizer, svd)
    return parts
