"""Preference tuning with TRL's ``DPOTrainer``: OWS's optimizer and callback in TRL's trainer (thin).

The pattern is the one of every Hugging Face trainer (``ows.prepare_for_trainer``): the optimizer goes
in ``optimizers=(optimizer, None)``, the callback in ``callbacks``, then ``ows.attach_trainer``. The
reference log-probabilities are computed once, before training, from the model as loaded
(``precompute_ref_log_probs``): no second copy of the model stays in memory (a LoRA model's reference
is its base with the adapter off, as TRL does).
"""

from __future__ import annotations

from typing import Any

DPO_OVERRIDES = {"precompute_ref_log_probs": True}  # the reference model is not kept next to the policy


def dpo_config(training: dict[str, Any], beta: float, max_length: int) -> Any:
    """TRL's ``DPOConfig`` from ``TrainingArguments`` values, the DPO ``beta`` and the token budget of a pair.

    ``bf16`` stays off unless given, as in ``TrainingArguments`` (TRL's config turns it on by default, which
    fails on a CPU); the model's dtype is ``ows train``'s ``dtype``."""
    from trl import DPOConfig

    return DPOConfig(**{"bf16": False, **training}, beta=beta, max_length=max_length, **DPO_OVERRIDES)


def make_dpo_trainer(model: Any, tokenizer: Any, args: Any, train_rows: list[dict], eval_rows: list[dict],
                     optimizer: Any, callbacks: list[Any]) -> Any:
    """A ``trl.DPOTrainer`` over prompt/chosen/rejected rows with ``optimizer`` (None: the Trainer builds one)."""
    from datasets import Dataset
    from trl import DPOTrainer

    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(train_rows),
                      eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None, processing_class=tokenizer,
                      optimizers=(optimizer, None), callbacks=callbacks)
