"""Evaluation: benchmarks (MMLU, GSM8K, perplexity, local multiple choice), reasoning-gym tasks with their
own checkers, held-out answer loss and exact match, and a bridge to lm-evaluation-harness.

``ows.eval.evaluate(model, tokenizer, ["mmlu", "gsm8k"], limit=100)`` scores an in-memory model (e.g.
right after training, without saving it) and returns the document ``ows eval`` writes as JSON.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "evaluate":  # imported on first use: the evaluators need transformers
        from .runner import evaluate

        return evaluate
    raise AttributeError(f"module 'ows.eval' has no attribute {name!r}")
