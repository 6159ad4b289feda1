"""train_embeddings=False: the backward stops at the lowest sampled layer; a tied head still trains."""

from __future__ import annotations

import pytest
import torch

import ows
from ows import OWSConfig
from tests.conftest import random_batch, tiny_config


def tied_llama(seed: int = 0):
    transformers = pytest.importorskip("transformers")
    config = tiny_config("llama")
    config.tie_word_embeddings = True
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).float()


def _freeze_all_layers_but(model, active: int) -> None:
    for i, layer in enumerate(ows.find_decoder_layers(model)):
        layer.requires_grad_(i == active)


def _needs_grad_at_layer0(model) -> bool:
    """Train-mode forward + backward; whether layer 0's output took part in autograd."""
    seen = []
    handle = model.model.layers[0].register_forward_hook(
        lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).requires_grad))
    model.train()
    model(**random_batch()).loss.backward()
    handle.remove()
    return seen == [True]


def test_lower_frozen_layers_get_no_graph_and_the_tied_matrix_trains_through_the_head():
    model = tied_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ows.build_param_groups(model, OWSConfig(train_embeddings=False, train_lm_head=True))
    _freeze_all_layers_but(model, 3)
    needs_grad = {}
    for i, layer in enumerate(ows.find_decoder_layers(model)):
        layer.register_forward_hook(lambda m, a, out, i=i: needs_grad.__setitem__(i, out[0].requires_grad
                                                                                  if isinstance(out, tuple) else out.requires_grad))
    batch = random_batch()
    model(**batch).loss.backward()
    assert [needs_grad[i] for i in range(6)] == [False, False, False, True, True, True]

    reference = tied_llama()
    _freeze_all_layers_but(reference, 3)
    embeds = reference.model.embed_tokens(batch["input_ids"]).detach()
    reference(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
    torch.testing.assert_close(model.lm_head.weight.grad, reference.lm_head.weight.grad)
    torch.testing.assert_close(model.model.layers[3].mlp.up_proj.weight.grad, reference.model.layers[3].mlp.up_proj.weight.grad)


def test_with_trained_embeddings_the_gradient_reaches_the_input_lookup():
    model = tied_llama()
    ows.build_param_groups(model, OWSConfig(train_embeddings=True))
    _freeze_all_layers_but(model, 3)
    assert _needs_grad_at_layer0(model)


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_training_still_updates_the_sampled_layers(tmp_path, reentrant):
    transformers = pytest.importorskip("transformers")
    model = tied_llama()
    config = OWSConfig(num_active_layers=2, sample_interval=2, sampling_strategy="uniform", rank=4,
                       train_embeddings=False, sampling_granularity="layer")  # every weight of a visited layer trains
    optimizer, callback = ows.prepare_for_trainer(model, config, lr=1e-2)
    before = [layer.mlp.up_proj.weight.detach().clone() for layer in model.model.layers]
    data = [{k: v[0] for k, v in random_batch(batch=1, seq=12, seed=i).items()} for i in range(8)]
    args = transformers.TrainingArguments(str(tmp_path), per_device_train_batch_size=2, max_steps=4, report_to="none",
                                          save_strategy="no", use_cpu=True, disable_tqdm=True,
                                          gradient_checkpointing=True,
                                          gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    transformers.Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None),
                         callbacks=[callback]).train()
    assert model.is_gradient_checkpointing
    visited = {i for _, active in callback.controller.schedule for i in active}
    changed = {i for i, layer in enumerate(model.model.layers) if not torch.equal(before[i], layer.mlp.up_proj.weight)}
    assert visited and changed == visited
    if not reentrant:  # the input-embedding output stays cut off, so nothing under layer 3 backpropagates
        _freeze_all_layers_but(model, 3)
        assert not _needs_grad_at_layer0(model)


def test_building_again_with_trained_embeddings_removes_the_cut():
    model = tied_llama()
    ows.build_param_groups(model, OWSConfig(train_embeddings=False))
    ows.build_param_groups(model, OWSConfig(train_embeddings=True))
    _freeze_all_layers_but(model, 3)
    assert _needs_grad_at_layer0(model)
