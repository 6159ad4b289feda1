"""Training-memory estimate from a model config alone: no weights, no torch.

:func:`estimate_memory` returns the bytes of each component for one method (full / lora / galore /
lisa / ows / ows-fullrank) and the peak of one training step as the product runs it (docs/MEMORY.md
has every formula and the validation against measurements). Main assumptions:

- Weights, gradients and optimizer state are in the weights' dtype (``dtype``), as when ``ows train
  --dtype`` loads the model: ``GaLoreAdamW`` creates its moments like the gradient; ``master_weights``
  adds fp32 masters and fp32 moments for the trained layers. LoRA adapters are fp32 (peft's default)
  with ``torch.optim.AdamW``. The optimizer-state terms are in :mod:`ows.memory.state`.
- AdamW: 2 moments per trainable element. GaLore (2-D decoder-layer weights of shape m x n, rank
  r' = min(r, m, n)): 2 moments of max(m, n) x r' plus a projector of min(m, n) x r'.
- LISA / OWS: gradients and state only for ``num_active_layers`` layers plus the parts outside the
  layers that train (embeddings, head, final norm); the controller frees a leaving layer's state
  before new state is created, so two sets never coexist. ``sampling_granularity: module``: the drawn
  weights hold ``sample_budget_params`` parameters (the most a draw holds), counted as that many layers'
  worth of weights in a layer's proportions; the layers holding a drawn weight (at most as many as the
  smallest weights that fit in the budget) train their norms and biases, save a trained layer's
  activations and keep exact weights under ``frozen_quantization``.
- Activations are the tensors autograd saves in a Hugging Face Llama-style block (sdpa or eager
  attention, dropout off), per token: see :func:`layer_activation_elements`. A frozen layer still
  saves what its input gradient needs when anything below it trains (the worst case is assumed:
  every layer backpropagates).
- Peak of a step = weights + optimizer state + projectors + the largest of three moments: the start
  of backward (activations + loss temporaries), inside backward (remaining activations + gradients
  produced so far, worst case over where the active layers sit) and the optimizer step (all
  gradients + the largest per-parameter temporaries); for a tied embedding trained in both roles, the
  end of backward, when its input-embedding gradient is summed with its head gradient (three copies
  for a moment, next to the layers' gradients). With ``fused_step`` no gradient outlives its hook:
  inside backward holds the activations, the largest single gradient and its update's temporaries,
  and the optimizer step holds nothing more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..choices import (DTYPE_BYTES, FROZEN_QUANTIZATIONS, OUTSIDE_OPTIMIZERS, SAMPLING_GRANULARITIES, SVD_METHODS,
                       head_grad_kept_whole)
from ..granularity import check_budget, most_blocks, resolve_budget
from ..methods import get_method
from ..validation import check_active_layers
from .shape import ModelShape, model_shape
from .loss import loss_bytes, projected_head
from .state import optimizer_parts, outside_shapes
from .weights import embedding_held, weight_bytes

ATTENTIONS = ("sdpa", "eager")


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
    _check(attention in ATTENTIONS, "attn_implementation", attention, f"use one of {', '.join(ATTENTIONS)}")
    for name, value in ints.items():
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value,
               "must be an integer >= 1")


def layer_matrix_sizes(model_config: dict[str, Any]) -> list[list[int]] | None:
    """The 2-D weight sizes of every decoder layer from a ``config.json`` dict, for checking a module-granularity
    budget before the model loads; None for a model whose shape is not known here (the sampler checks it then)."""
    try:
        shape = model_shape(model_config)
    except (ValueError, TypeError, KeyError):
        return None
    return [[rows * cols for rows, cols in shape.layer_matrices]] * shape.layers


def module_layers(shape: ModelShape, num_active: int, budget: int | None) -> tuple[float, int, int]:
    """``sampling_granularity: module``: (the budget in layers' worth of 2-D weights, the most layers a draw
    touches, the budget in parameters); a budget that cannot serve the model is a ``ValueError``."""
    sizes = [rows * cols for rows, cols in shape.layer_matrices]
    params, name = resolve_budget(budget, num_active, [sizes] * shape.layers)
    check_budget(params, sizes * shape.layers, None, name)
    return params / sum(sizes), min(shape.layers, most_blocks(sizes * shape.layers, params)), params


def estimate_memory(
    model_config: dict[str, Any],
    method: str,
    *,
    dtype: str = "float32",
    per_device_train_batch_size: int = 1,
    max_seq_length: int = 512,
    num_active_layers: int = 5,
    rank: int = 128,
    lora_r: int = 16,
    gradient_checkpointing: bool = False,
    train_embeddings: bool = True,
    train_lm_head: bool = True,
    loss_chunk_size: int = 0,
    attn_implementation: str = "sdpa",
    device: str = "cuda",
    fused_step: bool = False,
    master_weights: bool = False,
    outside_optimizer: str | None = None,
    svd_method: str = "auto",
    frozen_quantization: str = "none",
    sampling_granularity: str | None = None,
    sample_budget_params: int | None = None,
    project_head_grad: bool = True,
    gradient_accumulation_steps: int = 1,
) -> MemoryEstimate:
    """Estimated peak bytes of one training step of ``method`` on the model of ``model_config``.

    ``model_config`` is a ``config.json`` dict. Every keyword is the run field of the same name
    (``ScriptArguments``, ``OWSConfig``, ``TrainingArguments``): ``dtype`` the weights' dtype (float32 /
    bfloat16 / float16); ``num_active_layers`` is gamma (lisa, ows, ows-fullrank); ``rank`` the GaLore rank
    (galore, ows); ``lora_r`` LoRA's r on every linear of the decoder layers (dropout on);
    ``loss_chunk_size`` tokens per chunk of the chunked loss (0: the model's standard loss).
    ``outside_optimizer`` and ``sampling_granularity`` left at None take the method's default (as ``ows train`` does).
    ``train_embeddings`` / ``train_lm_head`` apply to the layer-sampling and GaLore methods (``full`` trains everything, ``lora`` only its adapters). ``device`` ("cuda" or "cpu") only changes the size
    of LoRA's dropout masks. ``fused_step``, ``master_weights`` and ``outside_optimizer`` are the
    ``OWSConfig`` fields (see :mod:`ows.memory.state` and docs/MEMORY.md), as is
    ``frozen_quantization`` (:mod:`ows.memory.weights`), ``sampling_granularity`` and
    ``sample_budget_params`` (single weights up to a parameter budget, see above) and ``project_head_grad`` (with
    a GaLore head, the chunked loss, no fused step and an untied head; ``gradient_accumulation_steps`` decides its
    refresh steps, :func:`ows.memory.loss.projected_head`). All figures are bytes.
    """
    _check(device in ("cuda", "cpu"), "device", device, "use cuda or cpu")
    _check(outside_optimizer in (None, *OUTSIDE_OPTIMIZERS), "outside_optimizer", outside_optimizer,
           f"use one of {', '.join(OUTSIDE_OPTIMIZERS)}")
    _check(svd_method in SVD_METHODS, "svd_method", svd_method, f"use one of {', '.join(SVD_METHODS)}")
    _check(frozen_quantization in FROZEN_QUANTIZATIONS, "frozen_quantization", frozen_quantization,
           f"use one of {', '.join(FROZEN_QUANTIZATIONS)}")
    _check(sampling_granularity in (None, *SAMPLING_GRANULARITIES), "sampling_granularity", sampling_granularity,
           f"use one of {', '.join(SAMPLING_GRANULARITIES)}")
    spec = get_method(method)
    defaults = spec.resolved_defaults()  # for the fields left at None, as ows train resolves them
    outside_optimizer = defaults["outside_optimizer"] if outside_optimizer is None else outside_optimizer
    sampling_granularity = defaults["sampling_granularity"] if sampling_granularity is None else sampling_granularity
    _validate(dtype, attn_implementation, dict(per_device_train_batch_size=per_device_train_batch_size,
                                               max_seq_length=max_seq_length, rank=rank, lora_r=lora_r,
                                               num_active_layers=num_active_layers,
                                               gradient_accumulation_steps=gradient_accumulation_steps))
    _check(isinstance(loss_chunk_size, int) and not isinstance(loss_chunk_size, bool) and loss_chunk_size >= 0,
           "loss_chunk_size", loss_chunk_size, "use 0 (the standard loss) or a positive number of tokens")
    chunked_loss, seq_len, lora_rank, attention = loss_chunk_size > 0, max_seq_length, lora_r, attn_implementation
    shape = model_shape(model_config)
    module = spec.samples_layers and sampling_granularity == "module"
    if spec.samples_layers and not (module and sample_budget_params is not None):
        check_active_layers(num_active_layers, shape.layers)
    nbytes, tokens = DTYPE_BYTES[dtype], per_device_train_batch_size * seq_len
    k: float = {"adapters": 0, "all": shape.layers}.get(spec.layers, num_active_layers)
    touched, budget = int(k), None  # layers holding trained weights; module: the budget in parameters
    if module:
        k, touched, budget = module_layers(shape, num_active_layers, sample_budget_params)
    outside = outside_shapes(shape, spec, train_embeddings, train_lm_head)
    master_weights = master_weights and spec.serves("master_weights")  # each option where the method serves it
    outside_optimizer = outside_optimizer if spec.serves("outside_optimizer") else "adamw"
    fused_step = fused_step and spec.serves("fused_step")
    frozen_quantization = frozen_quantization if spec.serves("frozen_quantization") else "none"
    parts = optimizer_parts(shape, spec, k, rank, lora_rank, nbytes, outside, master_weights, outside_optimizer,
                            svd_method, touched)
    head_trains = spec.outside != "none" and (train_lm_head or spec.outside == "all" or (shape.tied and train_embeddings))
    act_t, act_f, acts, recompute = _activations(shape, spec.layers == "adapters", touched, tokens, seq_len, nbytes,
                                                 attention,
                                                 gradient_checkpointing, lora_rank, head_trains,
                                                 1 if device == "cuda" else nbytes)
    loss = loss_bytes(shape, tokens, nbytes, chunked_loss, loss_chunk_size or 1, head_trains)
    vectors = shape.layer_vectors * nbytes
    grad_layers = int(k * (parts.grad_layer - vectors) + touched * vectors)  # the trained layers' gradients
    gradients = grad_layers + sum(parts.grads_outside)
    head_grad = max(parts.grads_outside, default=0) if head_trains else 0
    head = None
    kept_whole = head_grad_kept_whole(several_processes=False, grad_scaler=False, fused_step=fused_step,
                                      tied=shape.tied, head_bias=False)  # one device, bf16/fp32, no head bias
    if project_head_grad and head_trains and chunked_loss and kept_whole is None and outside_optimizer == "galore" \
            and spec.layers != "adapters":
        head = projected_head(shape, tokens, nbytes, loss_chunk_size, rank, svd_method, gradient_accumulation_steps)
        loss, gradients, head_grad = head.loss, gradients - head_grad + head.grad, head.grad
    # A tied matrix trained in both roles gets a dense input-embedding gradient at the end of backward,
    # summed with its head gradient into a new tensor: three copies of it for a moment.
    tied_sum = 3 * shape.vocab * shape.hidden * nbytes if shape.tied and spec.outside != "none" and (
        train_embeddings or spec.outside == "all") else 0
    # Frozen quantization holds every weight but the drawn ones quantized: k layers' worth stay exact.
    held = weight_bytes(shape, nbytes, parts.extra_weights, shape.layers - k, frozen_quantization,
                        qlora=spec.base_quantization is not None,
                        embedding=embedding_held(shape, frozen_quantization, train_embeddings))
    if fused_step:  # each gradient is applied and freed in its hook: one at a time, with its update's temporaries
        gradients = parts.largest_grad
        phases = {
            "backward start": acts + loss + held.dequant,
            "inside backward": (shape.layers - touched) * act_f + touched * act_t + recompute + parts.largest_grad
                               + parts.temporaries + held.dequant,
            "end of backward": tied_sum,
        }
    else:
        phases = {
            "backward start": acts + loss + held.dequant,
            "inside backward": head_grad + (shape.layers - touched) * act_f + max(touched * act_t, grad_layers)
                               + recompute + held.dequant,
            "end of backward": grad_layers + tied_sum,
            "optimizer step": gradients + parts.temporaries,
        }
        if head is not None and head.refresh:
            phases["head projector"] = acts + head.refresh + held.dequant
    peak_phase = max(phases, key=phases.__getitem__)
    weights = held.device
    total = weights + int(parts.state + parts.projectors) + phases[peak_phase]
    layer_trained = budget + touched * shape.layer_vectors if budget is not None else int(k) * shape.layer_params
    trainable = (parts.extra_weights // 4 if spec.layers == "adapters"
                 else layer_trained + sum(r * c for r, c in outside))
    settings = dict(dtype=dtype, per_device_train_batch_size=per_device_train_batch_size, max_seq_length=seq_len,
                    num_active_layers=num_active_layers if module else int(k), rank=rank, lora_r=lora_r,
                    gradient_checkpointing=gradient_checkpointing,
                    loss_chunk_size=loss_chunk_size, attn_implementation=attention, train_embeddings=train_embeddings,
                    train_lm_head=train_lm_head, device=device, fused_step=fused_step, master_weights=master_weights,
                    outside_optimizer=outside_optimizer, svd_method=svd_method,
                    frozen_quantization=frozen_quantization, host_bytes=held.host, peak_phase=peak_phase,
                    project_head_grad=head is not None)
    if module:
        settings.update(sampling_granularity="module", sample_budget_params=budget, layers_touched=touched)
    return MemoryEstimate(method, weights, gradients, int(parts.state), int(parts.projectors), acts, loss,
                          parts.temporaries, total, trainable, shape.total_params, settings)


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
