"""The fused step: same weights as the unfused step, one weight's gradient at a time, clipping, NaN, resume."""

import io

import pytest
import torch

import ows
import ows.methods
from ows import OWSConfig
from conftest import random_batch, tiny_model


def _run(fused, steps=6, clip=0.0, gas=1, strategy="uniform", nan_at=None, seed=0):
    """A plain loop: returns the model, the per-step global gradient norms and the optimizer."""
    model = tiny_model("llama", layers=4, seed=seed)
    config = OWSConfig(num_active_layers=2, sample_interval=3, rank=4, update_proj_gap=2, sampling_strategy=strategy,
                       fused_step=fused)
    optimizer, controller = ows.create_ows(model, config, lr=1e-2, max_grad_norm=clip)
    norms = []
    for step in range(steps):
        controller.begin_step(step)
        for micro in range(gas):
            if fused:
                optimizer.fused.is_final_micro_batch = lambda m=micro: m == gas - 1
            loss = model(**random_batch(seed=step * 10 + micro)).loss / gas
            if nan_at == step:
                loss = loss * float("nan")
            loss.backward()
        if not fused:
            grads = [p for p in model.parameters() if p.grad is not None]
            norms.append(float(torch.nn.utils.clip_grad_norm_(grads, clip if clip > 0 else float("inf"))))
        optimizer.step()
        if fused:
            norms.append(optimizer.fused.grad_norm)
        optimizer.zero_grad(set_to_none=True)
    return model, norms, optimizer


def _max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("gas", [1, 2])
def test_without_clipping_the_fused_step_gives_the_unfused_weights_and_norms(gas):
    unfused, norms_u, _ = _run(False, gas=gas)
    fused, norms_f, _ = _run(True, gas=gas)
    assert _max_diff(unfused, fused) < 1e-6
    assert norms_f == pytest.approx(norms_u, rel=1e-5)  # the logged norm is the real, global one


def test_at_most_one_weight_gradient_exists_at_a_time():
    model = tiny_model("llama", layers=4)
    optimizer, controller = ows.create_ows(model, OWSConfig(num_active_layers=3, rank=4, sampling_strategy="uniform",
                                                            fused_step=True))
    controller.begin_step(0)
    live = []
    update = optimizer.update_parameter

    def measured(p, group):  # runs inside the hook, while this one gradient is alive
        live.append(sum(q.grad.numel() * q.grad.element_size() for q in model.parameters() if q.grad is not None))
        update(p, group)

    optimizer.update_parameter = measured
    model(**random_batch()).loss.backward()
    largest = max(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    assert len(live) == sum(p.requires_grad for p in model.parameters())  # every trained parameter, in backward
    assert 0 < max(live) <= largest
    assert all(p.grad is None for p in model.parameters())


def test_clipping_scales_each_step_by_the_previous_steps_norm():
    _, norms, optimizer = _run(True, clip=0.5, steps=3)
    assert optimizer.fused.clip_coef == pytest.approx(min(1.0, 0.5 / (norms[-1] + 1e-6)))
    unfused, _, _ = _run(False, clip=0.5, steps=3)
    fused, _, _ = _run(True, clip=0.5, steps=3)
    assert _max_diff(unfused, fused) > 1e-5  # a different clipping rule (step 0 unclipped), not the exact one
    unclipped, _, _ = _run(True, clip=0.0, steps=3)
    assert _max_diff(unclipped, fused) > 1e-5


def test_a_non_finite_gradient_updates_no_layer_and_is_named():
    model, _, optimizer = _run(True, steps=1, nan_at=0)
    reference = tiny_model("llama", layers=4)
    layers, ref_layers = ows.find_decoder_layers(model), ows.find_decoder_layers(reference)
    assert all(torch.equal(p, q) for p, q in zip(layers.parameters(), ref_layers.parameters()))
    assert all(torch.isfinite(p).all() for p in layers.parameters())


def test_the_clipping_coefficient_is_resumed():
    _, _, optimizer = _run(True, clip=0.5, steps=2)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    _, _, fresh = _run(True, clip=0.5, steps=1, seed=1)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.fused.clip_coef == optimizer.fused.clip_coef < 1.0


def test_a_weight_whose_gradient_arrives_twice_in_one_backward_is_refused():
    model = tiny_model("llama", layers=4)
    layers = ows.find_decoder_layers(model)
    layers[1].mlp.down_proj.weight = layers[0].mlp.down_proj.weight  # shared by two layers ...
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})  # ... two segments
    model.enable_input_require_grads()
    model.train()
    optimizer, controller = ows.create_ows(model, OWSConfig(num_active_layers=4, rank=4, sampling_strategy="uniform",
                                                            fused_step=True))
    controller.begin_step(0)
    with pytest.raises(RuntimeError, match="second gradient in one backward pass.*fused_step false"):
        model(**random_batch()).loss.backward()


def test_a_tied_embedding_used_twice_is_updated_once_with_its_whole_gradient():
    from ows.integrations.chunked_loss import enable_chunked_loss

    models = []
    for fused in (False, True):
        model = tiny_model("llama", layers=4)
        model.config.tie_word_embeddings = True
        model.tie_weights()
        enable_chunked_loss(model, chunk_size=5)  # the head is used in several chunks too
        model.train()
        config = OWSConfig(num_active_layers=2, rank=4, sampling_strategy="uniform", fused_step=fused)
        optimizer, controller = ows.create_ows(model, config, lr=1e-2)
        for step in range(2):
            controller.begin_step(step)
            model(**random_batch(seed=step)).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        models.append(model)
    assert models[1].get_input_embeddings().weight is models[1].get_output_embeddings().weight
    assert _max_diff(*models) < 1e-6


def test_methods_that_cannot_fuse_are_refused():
    with pytest.raises(ValueError, match="fused_step=True cannot serve method=.lora."):
        ows.methods.build_method("lora", tiny_model("llama"), OWSConfig(fused_step=True))
