"""Chunked causal-LM loss for Hugging Face ``*ForCausalLM`` models (see :mod:`ows.losses`).

:func:`enable_chunked_loss` replaces the model's ``forward`` for training calls that pass
``labels``: it runs the decoder, then :func:`ows.losses.chunked_cross_entropy` over the tokens that
have a label, and returns the loss with ``logits=None``. Other calls (generation, evaluation, no
labels) use the original forward. Before switching, it checks on a few tokens that the chunked
loss equals the model's own loss; architectures whose head does more than a linear layer (logit
soft-capping, logit scaling) fail that check and keep their standard loss, with a log line.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import nn

from ..losses import IGNORE_INDEX, chunked_cross_entropy, shift_for_causal_lm
from ..layers import eval_mode

logger = logging.getLogger(__name__)
_PATCHED = "_ows_chunked_loss"


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if not callable(get_decoder) or not callable(get_head):
        return None
    try:
        decoder, head = get_decoder(), get_head()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if not isinstance(decoder, nn.Module) or not isinstance(head, nn.Linear) or decoder is model:
        return None
    return decoder, head


def chunked_lm_loss(model: nn.Module, labels: torch.Tensor, chunk_size: int, **inputs: Any) -> torch.Tensor:
    """The causal-LM loss of ``model`` on ``inputs`` computed with chunked cross-entropy.

    ``num_items_in_batch`` (the Trainer's token count under gradient accumulation) divides the sum
    when given, as in the Hugging Face loss; otherwise the mean over labelled tokens is returned.
    """
    parts = _parts(model)
    if parts is None:
        raise ValueError(f"{type(model).__name__} has no decoder and linear output head for the chunked loss: "
                         "use loss_chunk_size=0 (the model's standard loss)")
    decoder, head = parts
    num_items = inputs.pop("num_items_in_batch", None)
    shift_labels = inputs.pop("shift_labels", None)
    inputs.pop("logits_to_keep", None)
    inputs["use_cache"] = False
    hidden = decoder(**inputs)[0]
    targets = shift_labels.reshape(-1) if shift_labels is not None else shift_for_causal_lm(labels)
    total = chunked_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.to(hidden.device),
                                  head.bias, chunk_size)
    if num_items is None:
        return total / (targets != IGNORE_INDEX).sum().clamp(min=1)
    return total / (num_items.to(total.device) if torch.is_tensor(num_items) else num_items)


# Config fields of architectures whose logits are more than ``lm_head(hidden)``.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _matches_standard_loss(model: nn.Module, chunk_size: int) -> bool:
    config = getattr(model, "config", None)
    get_text = getattr(config, "get_text_config", None)
    text = get_text() if callable(get_text) else config
    if any(getattr(text, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return False
    decoder, head = _parts(model)  # type: ignore[misc]
    ids = torch.arange(1, 13, device=head.weight.device).remainder(head.weight.shape[0]).unsqueeze(0)
    with eval_mode(model), torch.no_grad():
        out = model(input_ids=ids, labels=ids)
        logits = head(decoder(input_ids=ids, use_cache=False)[0])
        chunked = chunked_lm_loss(model, ids, chunk_size, input_ids=ids)
    same_logits = torch.allclose(out.logits.float(), logits.float(), rtol=1e-5, atol=1e-6)
    return same_logits and bool(torch.allclose(out.loss.float(), chunked.float(), rtol=1e-4, atol=1e-5))


def enable_chunked_loss(model: nn.Module, chunk_size: int = 1024) -> bool:
    """Make training forwards of ``model`` compute the loss chunk by chunk; True when enabled.

    Returns False (and logs why) when the model has no decoder / linear head, or when the chunked
    loss differs from the model's own loss on a probe input. Idempotent.
    """
    if chunk_size < 1:
        raise ValueError(f"loss_chunk_size={chunk_size} is invalid: use a positive number of tokens, e.g. 1024")
    if getattr(model, _PATCHED, False):
        return True
    if _parts(model) is None:
        logger.info("chunked loss not available for %s (no decoder / linear output head): standard loss",
                    type(model).__name__)
        return False
    if not _matches_standard_loss(model, chunk_size):
        logger.warning("chunked loss differs from %s's own loss (its head is more than a linear layer): "
                       "keeping the standard loss", type(model).__name__)
        return False
    original = model.forward

    @functools.wraps(original)
    def forward(*args: Any, **kwargs: Any) -> Any:
        labels = kwargs.get("labels")
        if args or labels is None or not model.training or kwargs.get("return_dict") is False:
            return original(*args, **kwargs)
        kwargs.pop("labels")
        loss = chunked_lm_loss(model, labels, chunk_size, **kwargs)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return CausalLMOutputWithPast(loss=loss, logits=None)

    model.forward = forward  # type: ignore[method-assign]
    setattr(model, _PATCHED, True)
    logger.info("chunked loss enabled (%d tokens per chunk): full logits are never materialised in training",
                chunk_size)
    return True
