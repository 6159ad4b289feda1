"""Training-memory estimate from a model config alone: no weights, no torch.

:func:`estimate_memory` returns the bytes of each component for one method (full / lora / galore /
lisa / ows / ows-fullrank) and the peak of one training step as the product runs it (docs/MEMORY.md
has every formula and the validation against measurements). Main assumptions:

- Weights, gradients and optimizer state are in the weights' dtype (``dtype``), as when ``ows train
  --dtype`` loads the model: ``GaLoreAdamW`` creates its moments like the gradient, and there is no
  fp32 master copy. LoRA adapters are fp32 (peft's default) with ``torch.optim.AdamW``.
- AdamW: 2 moments per trainable element. GaLore (2-D decoder-layer weights of shape m x n, rank
  r' = min(r, m, n)): 2 moments of max(m, n) x r' plus a projector of min(m, n) x r'.
- LISA / OWS: gradients and state only for ``num_active_layers`` layers plus the parts outside the
  layers that train (embeddings, head, final norm); the controller frees a leaving layer's state
  before new state is created, so two sets never coexist.
- Activations are the tensors autograd saves in a Hugging Face Llama-style block (sdpa or eager
  attention, dropout off), per token: see :func:`layer_activation_elements`. A frozen layer still
  saves what its input gradient needs when anything below it trains (the worst case is assumed:
  every layer backpropagates).
- Peak of a step = weights + optimizer state + projectors + the largest of three moments: the start
  of backward (activations + loss temporaries), inside backward (remaining activations + gradients
  produced so far, worst case over where the active layers sit) and the optimizer step (all
  gradients + the largest per-parameter temporaries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import DTYPE_BYTES, check_active_layers
from ..methods import Method, get_method
from .shape import ModelShape, model_shape

ATTENTIONS = ("sdpa", "eager")
LOSS_BYTES_PER_LOGIT = 12  # fp32 log-softmax output, its gradient and the loss gradient at backward start


def layer_activation_elements(shape: ModelShape, trainable: bool, seq_len: int, attention: str = "sdpa") -> float:
    """Elements autograd saves per token in one decoder layer (multiply by the dtype's bytes).

    With h hidden, q = heads x head_dim, kv = kv_heads x head_dim, i intermediate (Llama-style block):
    every layer keeps its input and mid-block residual (2h), the rotated query and key and the value
    (q + 2kv), the attention output (q), the MLP's gate, up and activation (3i; 1i for a plain MLP)
    and 2 per-token norm scalars plus one log-sum-exp per head (sdpa). A trainable layer also keeps
    the normalised inputs of both norms and both norm outputs (4h, for the weight gradients) and the
    down projection's input (i). ``eager`` attention keeps the softmax probabilities
    (heads x seq_len per token) and expands key and value to q each instead of kv.
    """
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    attn = q + 2 * kv + q + shape.heads if attention == "sdpa" else 3 * q + q + shape.heads * seq_len
    mlp = (3 * i if shape.gated_mlp else i) + (i if trainable else 0)
    norms = 2 * h + 2 + (4 * h if trainable else 0)
    return norms + attn + mlp


def lora_extra_elements(shape: ModelShape, lora_rank: int) -> tuple[int, int]:
    """Per token per layer: (activation elements, dropout-mask elements) that LoRA adds.

    peft applies dropout to the input of every adapted linear separately (a copy and a mask each)
    and saves the adapter's A output (r elements) for B's gradient. The mask is 1 byte per element
    on CUDA (fused dropout) and in the activation dtype on CPU (``input * noise``).
    """
    inputs = sum(fan_in for _, fan_in in shape.out_in)
    return inputs + lora_rank * len(shape.layer_matrices), inputs


@dataclass
class MemoryEstimate:
    """Estimated bytes of one training step's peak and its components (all in bytes)."""

    method: str
    weights: int
    gradients: int
    optimizer_state: int
    projectors: int
    activations: int
    logits: int
    step_temporaries: int
    total: int
    trainable_params: int
    total_params: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict."""
        return asdict(self)


def _check(ok: bool, name: str, value: Any, fix: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {fix}")


def _validate(dtype: str, attention: str, ints: dict[str, int]) -> None:
    _check(dtype in DTYPE_BYTES, "dtype", dtype, f"use one of {', '.join(DTYPE_BYTES)}")
    _check(attention in ATTENTIONS, "attention", attention, f"use one of {', '.join(ATTENTIONS)}")
    for name, value in ints.items():
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value,
               "must be an integer >= 1")


def _outside_trainable(shape: ModelShape, method: Method, train_embeddings: bool, train_lm_head: bool) -> list[int]:
    """Element counts of the trainable parameters outside the decoder layers (one entry per tensor)."""
    if method.outside == "none":
        return []
    if method.outside == "all":
        train_embeddings = train_lm_head = True
    sizes = [shape.final_norm_params]
    if train_embeddings or (shape.tied and train_lm_head):
        sizes.append(shape.vocab * shape.hidden)
    if train_embeddings and shape.position_params:
        sizes.append(shape.position_params)
    if train_lm_head and not shape.tied:
        sizes.append(shape.head_params)
    return sizes


def _galore_sizes(rows: int, cols: int, rank: int) -> tuple[int, int]:
    """(moment elements, projector elements) of one GaLore weight: max(m, n) x r' and min(m, n) x r'."""
    r = min(rank, rows, cols)
    return max(rows, cols) * r, min(rows, cols) * r


def _galore_temporaries(rows: int, cols: int, rank: int, nbytes: int) -> int:
    """Largest transient bytes of one GaLore update: the fp32 SVD factors, or the projected update."""
    k, r = min(rows, cols), min(rank, rows, cols)
    svd = (rows * k + k * cols + k) * 4 + k * r * nbytes + (rows * cols * 4 if nbytes != 4 else 0)
    update = 3 * max(rows, cols) * r * nbytes + rows * cols * nbytes
    return max(svd, update)


@dataclass
class _Parts:
    """Per-layer and outside figures in bytes, before the phases are combined."""

    grad_layer: int = 0
    grads_outside: list[int] = field(default_factory=list)
    state: int = 0
    projectors: int = 0
    temporaries: int = 0
    extra_weights: int = 0


def _optimizer_parts(shape: ModelShape, method: Method, k: int, rank: int, lora_rank: int, nbytes: int,
                     outside: list[int]) -> _Parts:
    """Gradients, moments, projectors and step temporaries for ``k`` trained layers plus ``outside``."""
    parts = _Parts(grads_outside=[n * nbytes for n in outside])
    if method.layers == "adapters":
        adapters = sum(lora_rank * (o + i) for o, i in shape.out_in) * shape.layers
        largest = max(lora_rank * max(o, i) for o, i in shape.out_in)
        parts.extra_weights, parts.grads_outside = adapters * 4, [adapters * 4]
        steps = 2 * len(shape.layer_matrices) * shape.layers * 4  # torch AdamW keeps a 0-d fp32 step per tensor
        parts.state, parts.temporaries = 2 * adapters * 4 + steps, 2 * largest * 4
        return parts
    plain = list(outside)
    parts.grad_layer = shape.layer_params * nbytes
    for rows, cols in shape.layer_matrices:
        if method.galore:
            moments, projector = _galore_sizes(rows, cols, rank)
            parts.state += 2 * moments * nbytes * k
            parts.projectors += projector * nbytes * k
            parts.temporaries = max(parts.temporaries, _galore_temporaries(rows, cols, rank, nbytes))
        else:
            plain.append(rows * cols)
            parts.state += 2 * rows * cols * nbytes * k
    parts.state += 2 * (shape.layer_vectors * k + sum(outside)) * nbytes
    parts.temporaries = max(parts.temporaries, 2 * max(plain, default=0) * nbytes)
    return parts


def _loss_bytes(shape: ModelShape, tokens: int, nbytes: int, chunked: bool, chunk: int, head_trains: bool) -> int:
    """Transient bytes of the loss at the start of backward (fp32 log-softmax, its and the loss's gradient).

    Chunked: only one chunk of logits exists, plus a copy of the final hidden states and, when the
    head trains, one chunk's head-weight gradient next to the accumulated one.
    """
    if not chunked:
        return LOSS_BYTES_PER_LOGIT * tokens * shape.vocab
    head = shape.vocab * shape.hidden * nbytes if head_trains else 0
    return LOSS_BYTES_PER_LOGIT * min(chunk, tokens) * shape.vocab + tokens * shape.hidden * nbytes + head


def estimate_memory(
    model_config: dict[str, Any],
    method: str,
    *,
    dtype: str = "float32",
    batch_size: int = 1,
    seq_len: int = 512,
    num_active_layers: int = 5,
    rank: int = 128,
    lora_rank: int = 16,
    gradient_checkpointing: bool = False,
    train_embeddings: bool = True,
    train_lm_head: bool = True,
    chunked_loss: bool = False,
    loss_chunk_size: int = 1024,
    attention: str = "sdpa",
    device: str = "cuda",
) -> MemoryEstimate:
    """Estimated peak bytes of one training step of ``method`` on the model of ``model_config``.

    ``model_config`` is a ``config.json`` dict; ``dtype`` the weights' dtype (float32 / bfloat16 /
    float16); ``num_active_layers`` is gamma (lisa, ows, ows-fullrank); ``rank`` the GaLore rank
    (galore, ows); ``lora_rank`` LoRA's r on every linear of the decoder layers (dropout on).
    ``train_embeddings`` / ``train_lm_head`` apply to the layer-sampling and GaLore methods (``full``
    trains everything, ``lora`` only its adapters). ``device`` ("cuda" or "cpu") only changes the size
    of LoRA's dropout masks. All figures are bytes.
    """
    _check(device in ("cuda", "cpu"), "device", device, "use cuda or cpu")
    spec = get_method(method)
    _validate(dtype, attention, dict(batch_size=batch_size, seq_len=seq_len, rank=rank, lora_rank=lora_rank,
                                     num_active_layers=num_active_layers, loss_chunk_size=loss_chunk_size))
    shape = model_shape(model_config)
    if spec.samples_layers:
        check_active_layers(num_active_layers, shape.layers)
    nbytes, tokens = DTYPE_BYTES[dtype], batch_size * seq_len
    k = {"adapters": 0, "all": shape.layers}.get(spec.layers, num_active_layers)
    outside = _outside_trainable(shape, spec, train_embeddings, train_lm_head)
    parts = _optimizer_parts(shape, spec, k, rank, lora_rank, nbytes, outside)
    head_trains = spec.outside != "none" and (train_lm_head or spec.outside == "all" or (shape.tied and train_embeddings))
    act_t, act_f, acts, recompute = _activations(shape, spec.layers == "adapters", k, tokens, seq_len, nbytes, attention,
                                                 gradient_checkpointing, lora_rank, head_trains,
                                                 1 if device == "cuda" else nbytes)
    loss = _loss_bytes(shape, tokens, nbytes, chunked_loss, loss_chunk_size, head_trains)
    gradients = k * parts.grad_layer + sum(parts.grads_outside)
    head_grad = max(parts.grads_outside, default=0) if head_trains else 0
    phases = {
        "backward start": acts + loss,
        "inside backward": head_grad + (shape.layers - k) * act_f + k * max(act_t, parts.grad_layer) + recompute,
        "optimizer step": gradients + parts.temporaries,
    }
    peak_phase = max(phases, key=phases.__getitem__)
    weights = shape.total_params * nbytes + parts.extra_weights
    total = weights + parts.state + parts.projectors + phases[peak_phase]
    trainable = (parts.extra_weights // 4 if spec.layers == "adapters"
                 else k * shape.layer_params + sum(outside))
    settings = dict(dtype=dtype, batch_size=batch_size, seq_len=seq_len, num_active_layers=k, rank=rank,
                    lora_rank=lora_rank, gradient_checkpointing=gradient_checkpointing, chunked_loss=chunked_loss,
                    loss_chunk_size=loss_chunk_size, attention=attention, train_embeddings=train_embeddings,
                    train_lm_head=train_lm_head, device=device, peak_phase=peak_phase)
    return MemoryEstimate(method, weights, gradients, parts.state, parts.projectors, acts, loss, parts.temporaries,
                          total, trainable, shape.total_params, settings)


def _activations(shape: ModelShape, adapters: bool, k: int, tokens: int, seq_len: int, nbytes: int, attention: str,
                 checkpointing: bool, lora_rank: int, head_trains: bool, mask_bytes: int) -> tuple[int, int, int, int]:
    """(trained layer, other layer, all saved activations, recomputed layer) in bytes for the batch.

    Outside the layers: the final norm's input (h) and, when the head trains, the norm's output (h)
    and normalised input (h, RMSNorm). With checkpointing a layer keeps only its input (h) and one
    layer's activations exist again while it is recomputed in backward.
    """
    def layer(trainable: bool) -> int:
        per_token = layer_activation_elements(shape, trainable, seq_len, attention) * nbytes
        if attention == "eager" and nbytes != 4:
            per_token += shape.heads * seq_len * 4  # the softmax runs in fp32 and is cast back
        if adapters:
            extra, masks = lora_extra_elements(shape, lora_rank)
            per_token += extra * nbytes + masks * mask_bytes
        return int(per_token * tokens)

    other = layer(False)
    trained = other if adapters else layer(True)
    h = shape.hidden * nbytes * tokens
    outside = h + (2 * h if head_trains else 0) - (h if head_trains and not shape.rms_norm else 0)
    if checkpointing:
        return h, h, shape.layers * h + outside, trained
    return trained, other, k * trained + (shape.layers - k) * other + outside, 0
