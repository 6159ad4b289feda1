"""Token-weighted perplexity of a text corpus with sliding windows.

The texts are tokenized and concatenated with the tokenizer's eos token between them (no bos). Every
token after the first is scored exactly once: a window of at most ``seq_len`` tokens scores its last
``stride`` tokens (default ``seq_len - 1``, i.e. windows overlap by one token; a smaller stride gives
each scored token more context). Perplexity is ``exp(total NLL / scored tokens)``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch

from ..data.calibration import token_stream
from .loglik import model_device, progress
from ..layers import eval_mode

logger = logging.getLogger(__name__)


def windows(num_tokens: int, seq_len: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """``(begin, end, first scored position)`` of each window over a stream of ``num_tokens`` tokens."""
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} is invalid: must be >= 2")
    stride = seq_len - 1 if stride is None else stride
    if not 1 <= stride <= seq_len - 1:
        raise ValueError(f"stride={stride} is invalid: must be between 1 and seq_len - 1 = {seq_len - 1}")
    out, position = [], 1
    while position < num_tokens:
        end = min(position + stride, num_tokens)
        out.append((max(0, end - seq_len), end, position))
        position = end
    return out


@torch.no_grad()
def perplexity(
    model: Any, tokenizer: Any, texts: Sequence[str], seq_len: int = 512, stride: int | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """``perplexity``, ``nll`` (nats per token) and ``tokens`` (scored) of ``texts``."""
    ids = token_stream(tokenizer, list(texts))
    if len(ids) < 2:
        raise ValueError("perplexity needs a text of at least 2 tokens")
    spans = windows(len(ids), seq_len, stride)
    stream = torch.tensor(ids, dtype=torch.long)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    total, count = 0.0, 0
    with eval_mode(model):
        batches = [spans[i:i + batch_size] for i in range(0, len(spans), batch_size)]
        for batch in progress(batches, "perplexity"):
            width = max(end - begin for begin, end, _ in batch)
            inputs = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (begin, end, first) in enumerate(batch):
                inputs[row, : end - begin] = stream[begin:end]
                mask[row, : end - begin] = 1
                labels[row, first - begin: end - begin] = stream[first:end]
            logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
            targets = labels[:, 1:].to(logits.device)
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"))
            count += int((targets != -100).sum())
    nll = total / count
    logger.debug("perplexity: %d windows, %d tokens scored", len(spans), count)
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": count}
