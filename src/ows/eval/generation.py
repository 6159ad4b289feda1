"""Greedy generation that stops at stop strings, batched with left padding."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from .loglik import max_length, model_device, progress
from ..layers import eval_mode

logger = logging.getLogger(__name__)


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


@torch.no_grad()
def generate_until(
    model: Any, tokenizer: Any, prompts: Sequence[str], stop: Sequence[str], max_new_tokens: int = 256,
    batch_size: int = 8, desc: str = "generate", add_special_tokens: bool = True,
) -> list[str]:
    """Greedy continuations of ``prompts`` cut at the first stop string (none: the whole continuation).

    Prompts are encoded as lm-eval does (the tokenizer's special tokens added) unless
    ``add_special_tokens`` is off; batches group prompts of similar length, left-padded.
    """
    room = max(max_length(model, tokenizer) - max_new_tokens, 1)
    encoded = [list(tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]) for p in prompts]
    truncated = sum(len(e) > room for e in encoded)
    if truncated:
        logger.warning("%s: %d of %d prompts exceed %d tokens (model length minus the generation budget) and "
                       "lose tokens on the left", desc, truncated, len(prompts), room)
    encoded = [e[-room:] for e in encoded]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model_device(model)
    outputs: dict[int, str] = {}
    with eval_mode(model):
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for batch in progress(batches, desc):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, index in enumerate(batch):
                ids[row, width - len(encoded[index]):] = torch.tensor(encoded[index], dtype=torch.long)
                mask[row, width - len(encoded[index]):] = 1
            kwargs = {"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}
            new = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                                 **kwargs)[:, width:]
            for row, index in enumerate(batch):
                outputs[index] = truncate_at_stop(tokenizer.decode(new[row], skip_special_tokens=True), stop)
    return [outputs[i] for i in range(len(prompts))]
