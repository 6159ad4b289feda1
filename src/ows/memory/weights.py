"""Weight bytes on the device: full precision, frozen decoder layers held quantized, a QLoRA base (no torch).

- ``frozen_quantization`` (OWS): the linear weights of the N - k frozen layers (with single weights: all
  but the drawn k layers' worth) as bitsandbytes holds them (``nf4``: 4 bits a value and one fp32 absmax per block of 64, plus the 16-entry code table;
  ``int8``: a byte a value and one fp32 scale per row); their norms and biases stay in the dtype. The
  exact copies of layers that trained and left live on the host: ``host_bytes`` is their worst case
  (every frozen layer trained once), not device memory.
- ``qlora`` (PEFT + bitsandbytes as users run it): every decoder linear in NF4 with double
  quantization (the absmax in 8 bits, one fp32 absmax per 256 of those), and, as
  ``peft.prepare_model_for_kbit_training`` does, every other parameter upcast to fp32; the LoRA
  adapters in fp32.
- With ``frozen_quantization`` and frozen input embeddings not tied to the head, the embedding table as
  bitsandbytes holds it too (a lookup dequantizes only its rows: no transient worth counting).
- Either way the forward dequantizes one weight at a time: ``dequant_bytes`` is the largest matrix in
  the compute dtype, a transient of the forward and of the backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from .shape import ModelShape

NF4_BLOCK = 64
DOUBLE_QUANT_BLOCK = 256


def quantized_matrix_bytes(rows: int, cols: int, mode: str, double_quant: bool = False) -> int:
    """Bytes of one rows x cols weight as bitsandbytes holds it (``nf4`` or ``int8``)."""
    elements = rows * cols
    if mode == "int8":
        return elements + rows * 4
    blocks = -(-elements // NF4_BLOCK)
    absmax = blocks + -(-blocks // DOUBLE_QUANT_BLOCK) * 4 + 256 * 4 if double_quant else blocks * 4
    return elements // 2 + absmax + 16 * 4


@dataclass
class Weights:
    """Device bytes of the weights, the worst-case host bytes of exact copies, and the dequantization transient."""

    device: int
    host: int = 0
    dequant: int = 0


def embedding_held(shape: ModelShape, mode: str, train_embeddings: bool) -> bool:
    """Whether ``frozen_quantization`` holds the input embedding quantized too (:mod:`ows.frozen_embeddings`):
    frozen, not tied to the head, and (NF4) a width that is a multiple of the block."""
    return (mode != "none" and not train_embeddings and not shape.tied and not shape.stored_in_out
            and (mode != "nf4" or shape.hidden % NF4_BLOCK == 0))


def weight_bytes(shape: ModelShape, nbytes: int, adapters: int, frozen_layers: float = 0, mode: str = "none",
                 qlora: bool = False, embedding: bool = False) -> Weights:
    """The weights of a run: ``frozen_layers`` layers' worth of linear weights quantized with ``mode`` (a
    fraction with single-weight sampling: in a layer's proportions), and the input embedding when
    ``embedding``; or a QLoRA base when ``qlora``."""
    linear = sum(r * c for r, c in shape.layer_matrices)
    largest = max(r * c for r, c in shape.layer_matrices) * nbytes
    if qlora:
        quantized = sum(quantized_matrix_bytes(r, c, "nf4", double_quant=True) for r, c in shape.layer_matrices)
        rest = shape.total_params - shape.layers * linear
        return Weights(shape.layers * quantized + rest * 4 + adapters, 0, largest)
    full = shape.total_params * nbytes + adapters
    if embedding and mode != "none":
        full -= shape.vocab * shape.hidden * nbytes - quantized_matrix_bytes(shape.vocab, shape.hidden, mode)
    if mode == "none" or frozen_layers == 0:
        return Weights(full)
    quantized = sum(quantized_matrix_bytes(r, c, mode) for r, c in shape.layer_matrices)
    return Weights(full - int(frozen_layers * (linear * nbytes - quantized)), int(frozen_layers * linear * nbytes),
                   largest)
