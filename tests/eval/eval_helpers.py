"""Helpers shared by the evaluation tests: fixture paths and a bigram LM whose log-probabilities are known."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"


class BigramLM(torch.nn.Module):
    """A causal LM whose next-token logits depend only on the current token: ``table[token]``."""

    def __init__(self, vocab: int, table: torch.Tensor | None = None, max_positions: int = 512):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone() if table is not None else torch.zeros(vocab, vocab))
        self.config = SimpleNamespace(max_position_embeddings=max_positions)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.table[input_ids])

    def loglik(self, context_ids: list[int], continuation_ids: list[int]) -> float:
        """Log-probability of the continuation after the context, computed token by token."""
        logprobs = torch.log_softmax(self.table.detach().double(), dim=-1)
        tokens = context_ids + continuation_ids
        start = len(context_ids)
        return float(sum(logprobs[tokens[i - 1], tokens[i]] for i in range(start, len(tokens))))


def random_bigram(vocab: int, seed: int = 0, max_positions: int = 512) -> BigramLM:
    """A bigram LM with a random (seeded) table."""
    generator = torch.Generator().manual_seed(seed)
    return BigramLM(vocab, torch.randn(vocab, vocab, generator=generator) * 2, max_positions)
