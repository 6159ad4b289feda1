"""Log-likelihood of continuations given contexts, batched, with lm-evaluation-harness's tokenization.

A (context, continuation) pair is encoded as lm-eval does for causal models: trailing spaces of the
context move to the continuation, ``tokenizer.encode(context + continuation)`` is split after the
tokens of ``tokenizer.encode(context)``, and the input is left-truncated to the model's length.
Pairs that feed the model the same tokens (e.g. the choices " A".." D" after one prompt) share one
forward pass.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any, Iterable, Sequence

import torch

from ..layers import eval_mode

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048


def progress(iterable: Iterable, desc: str, total: int | None = None, unit: str = "batch") -> Iterable:
    """``iterable`` wrapped in a tqdm bar on stderr (shown on a terminal only), or as it is."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, disable=None, leave=False)


def model_device(model: Any) -> torch.device:
    """Device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def max_length(model: Any, tokenizer: Any = None) -> int:
    """Positions the model takes: ``max_position_embeddings`` / ``n_positions``, else the tokenizer's, else 2048."""
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 1_000_000 else DEFAULT_MAX_LENGTH


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``continuation`` after it, split as lm-eval's ``_encode_pair``."""
    if not context:
        raise ValueError("encode_pair needs a non-empty context")
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = list(tokenizer.encode(context + continuation))
    context_ids = list(tokenizer.encode(context))
    return context_ids, whole[len(context_ids):]


def _supports_logits_to_keep(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _forward_batch(model: Any, inputs: list[tuple[int, ...]], keep: int, pad_id: int, use_keep: bool) -> torch.Tensor:
    """Log-probabilities (float32) of the last ``keep`` positions of each right-padded input row."""
    device = model_device(model)
    width = max(len(row) for row in inputs)
    ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for i, row in enumerate(inputs):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    kwargs = {"logits_to_keep": keep} if use_keep else {}
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
    return torch.log_softmax(logits[:, -keep:].float(), dim=-1)


@torch.no_grad()
def loglikelihoods(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8, desc: str = "loglikelihood",
) -> list[float]:
    """Sum of log-probabilities (nats) of each continuation given its context, in the order of ``pairs``."""
    limit = max_length(model, tokenizer)
    requests, truncated = [], 0  # (input tokens, continuation tokens)
    for context, continuation in pairs:
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        if not continuation_ids:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens: give a non-empty answer")
        if len(continuation_ids) > limit:
            raise ValueError(f"a continuation of {len(continuation_ids)} tokens exceeds the model's {limit} positions")
        truncated += len(context_ids) + len(continuation_ids) > limit + 1
        tokens = (context_ids + continuation_ids)[-(limit + 1):]  # left-truncated, as lm-eval
        requests.append((tuple(tokens[:-1]), continuation_ids))
    if truncated:
        logger.warning("%s: %d of %d (prompt, answer) pairs exceed the model's %d positions and lose tokens on the left",
                       desc, truncated, len(pairs), limit)
    by_input: dict[tuple[int, ...], list[int]] = {}  # requests that feed the model the same tokens
    for index, (inputs, _) in enumerate(requests):
        by_input.setdefault(inputs, []).append(index)
    unique = sorted(by_input, key=lambda row: (-len(row), row))  # longest first, as lm-eval
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    use_keep = _supports_logits_to_keep(model)
    out = [0.0] * len(requests)
    with eval_mode(model):
        batches = [unique[i:i + batch_size] for i in range(0, len(unique), batch_size)]
        for batch in progress(batches, desc):
            width = max(len(row) for row in batch)
            needed = {row: max(len(requests[r][1]) for r in by_input[row]) for row in batch}
            keep = max(width - len(row) + needed[row] for row in batch)
            logprobs = _forward_batch(model, list(batch), keep, pad_id, use_keep)
            for i, row in enumerate(batch):  # row i's last real position is keep - 1 - (width - len(row))
                end = keep - (width - len(row))
                for r in by_input[row]:
                    continuation = requests[r][1]
                    block = logprobs[i, end - len(continuation): end]
                    target = torch.tensor(continuation, device=block.device).unsqueeze(1)
                    out[r] = float(block.gather(1, target).sum())
    return out
