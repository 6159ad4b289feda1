"""Tokens the model never learned: the training data uses tokens whose embedding rows were never trained.

A base model's tokenizer often holds special tokens (a chat template's ``<|im_start|>``, Llama-3's
reserved tokens) whose rows stayed at or near zero in pretraining. Frozen, such a row carries no
information, and a frozen head row can never predict its token. When the training data uses them and
the embeddings are frozen, the run trains the embeddings (and, when such a token is a label, the head)
and says so in the log; a frozen setting the user chose is kept, with a warning.

A row counts as never trained when its norm is below ``UNTRAINED_SHARE`` of the median row norm: trained
rows sit within a small factor of each other, untrained ones at (or near) zero.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable

logger = logging.getLogger(__name__)
UNTRAINED_SHARE = 0.1


def untrained_rows(weight: Any, used: Iterable[int]) -> list[int]:
    """The ids in ``used`` whose rows of ``weight`` (vocab x hidden) have a norm below ``UNTRAINED_SHARE`` of the
    median row norm, sorted."""
    import torch

    norms = weight.detach().float().norm(dim=1)
    threshold = UNTRAINED_SHARE * float(torch.median(norms))
    ids = sorted({int(i) for i in used if 0 <= int(i) < norms.numel()})
    return [i for i in ids if float(norms[i]) < threshold]


def _token_ids(examples: list[dict], key: str) -> set[int]:
    return {int(t) for example in examples for t in example.get(key, []) if int(t) >= 0}


def learn_untrained_tokens(model: Any, examples: list[dict], config: Any, given: frozenset[str],
                           tokenizer: Any = None) -> Any:
    """``config`` with the embeddings (and head) trained when the data uses never-trained rows of a frozen
    embedding; unchanged otherwise, or when the user froze them on purpose (then a warning)."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embedding is None or config.train_embeddings or not examples or embedding.weight.numel() == 0:
        return config
    rows = untrained_rows(embedding.weight, _token_ids(examples, "input_ids"))
    if not rows:
        return config
    shown = ", ".join(f"{tokenizer.convert_ids_to_tokens(i) if tokenizer is not None else i!r} (id {i})"
                      for i in rows[:3]) + (", ..." if len(rows) > 3 else "")
    if "train_embeddings" in given:
        logger.warning("%d token(s) of the training data have embedding rows that were never trained (%s) and "
                       "train_embeddings=false keeps them frozen: the model cannot learn them", len(rows), shown)
        return config
    labelled = set(rows) & _token_ids(examples, "labels")
    head = bool(labelled) and not config.train_lm_head and "train_lm_head" not in given
    logger.info("%d token(s) of the training data have embedding rows that were never trained (%s): training the "
                "input embeddings%s so that the model can learn them (set train_embeddings false to keep them "
                "frozen)", len(rows), shown, " and the output head (they are labels too)" if head else "")
    return dataclasses.replace(config, train_embeddings=True, train_lm_head=config.train_lm_head or head)
