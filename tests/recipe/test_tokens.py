"""Tokens the model never learned: detected from their embedding rows, then trained (or a warning)."""

import logging

import pytest
import torch

from ows import OWSConfig
from ows.recipe.tokens import learn_untrained_tokens, untrained_rows

transformers = pytest.importorskip("transformers")


def _model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.get_input_embeddings().weight[[5, 9]] = 0.0  # two rows pretraining never touched
    return model


def test_rows_near_zero_are_found_among_the_tokens_the_data_uses():
    weight = _model().get_input_embeddings().weight
    assert untrained_rows(weight, [1, 2, 5, 9, 9, 40]) == [5, 9]
    assert untrained_rows(weight, [1, 2, 40]) == []


def test_a_frozen_embedding_is_trained_when_the_data_needs_its_untrained_rows(caplog):
    model, frozen = _model(), OWSConfig(train_embeddings=False, train_lm_head=False)
    examples = [{"input_ids": [1, 5, 7], "labels": [-100, -100, 7]}, {"input_ids": [2, 9], "labels": [-100, 9]}]
    with caplog.at_level(logging.INFO, logger="ows.recipe.tokens"):
        config = learn_untrained_tokens(model, examples, frozen, frozenset())
    assert config.train_embeddings and config.train_lm_head  # id 9 is a label: the head row must learn it too
    assert "2 token(s) of the training data have embedding rows that were never trained" in caplog.text
    clean = [{"input_ids": [1, 2, 7], "labels": [-100, 2, 7]}]
    assert learn_untrained_tokens(model, clean, frozen, frozenset()) is frozen


def test_a_frozen_embedding_the_user_chose_is_kept_with_a_warning(caplog):
    frozen = OWSConfig(train_embeddings=False, train_lm_head=False)
    with caplog.at_level(logging.WARNING, logger="ows.recipe.tokens"):
        config = learn_untrained_tokens(_model(), [{"input_ids": [5], "labels": [5]}], frozen,
                                        frozenset({"train_embeddings"}))
    assert config is frozen and "the model cannot learn them" in caplog.text
