"""bf16 with fp32 masters for the decoder layers, 8-bit moments and GaLore outside the layers."""

import io

import pytest
import torch

import ows
from ows import OWSConfig
from ows.memory.measure import optimizer_state_bytes
from conftest import random_batch


def _model(vocab=512, dtype=torch.float32, seed=0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return transformers.AutoModelForCausalLM.from_config(config).to(dtype)


def _train(model, config, steps=3, lr=1e-2, vocab=512):
    optimizer, controller = ows.create_ows(model, config, lr=lr)
    for step in range(steps):
        controller.begin_step(step)
        model(**random_batch(vocab=vocab, seed=step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return optimizer, controller


def _reload(optimizer, model, config):
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    fresh, _ = ows.create_ows(model, config, lr=1e-2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


CONFIG = dict(num_active_layers=4, rank=4, sampling_strategy="uniform")


def test_bf16_masters_are_fp32_rounded_into_the_weights_and_survive_a_resume():
    model = _model(dtype=torch.bfloat16)
    config = OWSConfig(**CONFIG, master_weights=True)
    optimizer, _ = _train(model, config)
    layer = ows.find_decoder_layers(model)[0]
    for p in layer.parameters():
        state = optimizer.state[p]
        assert p.dtype == torch.bfloat16 and state["master"].dtype == torch.float32
        assert torch.equal(p, state["master"].to(torch.bfloat16))
        assert state["exp_avg"].dtype == torch.float32
    embedding = model.get_input_embeddings().weight
    assert "master" not in optimizer.state[embedding]  # outside the layers: plain bf16
    reloaded = _reload(optimizer, model, config)
    for p in layer.parameters():
        for key in ("master", "exp_avg", "exp_avg_sq"):
            saved, loaded = optimizer.state[p][key], reloaded.state[p][key]
            assert loaded.dtype == torch.float32 and torch.equal(saved, loaded), key


def test_masters_keep_updates_that_pure_bf16_rounds_away():
    """At lr 1e-5 most Adam steps are below half a bf16 ulp of a weight: pure bf16 drops them, masters keep them."""
    start = _model(dtype=torch.bfloat16)
    moved = {}
    for masters in (False, True):
        model = _model(dtype=torch.bfloat16)
        _train(model, OWSConfig(**CONFIG, master_weights=masters, use_galore=False), steps=8, lr=1e-5)
        before = ows.find_decoder_layers(start)[0].mlp.up_proj.weight
        after = ows.find_decoder_layers(model)[0].mlp.up_proj.weight
        moved[masters] = (after != before).float().mean().item()
    assert moved[True] > 2 * moved[False]


def test_8bit_moments_outside_the_layers_take_a_quarter_of_the_bytes_and_resume():
    pytest.importorskip("bitsandbytes")
    states = {}
    for outside in ("adamw", "adamw8bit"):
        model = _model()
        config = OWSConfig(**CONFIG, outside_optimizer=outside)
        optimizer, _ = _train(model, config)
        embedding = model.get_input_embeddings().weight
        states[outside] = optimizer_state_bytes_of(optimizer, embedding)
        if outside == "adamw8bit":
            assert optimizer.state[embedding]["state1"].dtype == torch.uint8
            reloaded = _reload(optimizer, model, config)
            assert reloaded.state[embedding]["state1"].dtype == torch.uint8
            assert torch.equal(reloaded.state[embedding]["state1"], optimizer.state[embedding]["state1"])
    assert states["adamw8bit"] < 0.3 * states["adamw"]


def optimizer_state_bytes_of(optimizer, p):
    return sum(v.numel() * v.element_size() for v in optimizer.state[p].values() if torch.is_tensor(v))


def test_galore_outside_the_layers_projects_the_embedding():
    model = _model()
    optimizer, _ = _train(model, OWSConfig(**CONFIG, outside_optimizer="galore"))
    state = optimizer.state[model.get_input_embeddings().weight]
    assert state["projector"].shape == (4, 32) and state["exp_avg"].shape == (512, 4)


def test_every_outside_option_trains():
    losses = {}
    for outside in ("adamw", "adamw8bit", "galore"):
        if outside == "adamw8bit":
            pytest.importorskip("bitsandbytes")
        model = _model()
        optimizer, controller = ows.create_ows(model, OWSConfig(**CONFIG, outside_optimizer=outside), lr=1e-2)
        batch = random_batch(vocab=512)
        first = None
        for step in range(6):
            controller.begin_step(step)
            loss = model(**batch).loss
            first = first if first is not None else loss.item()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses[outside] = (first, loss.item())
        assert optimizer_state_bytes(optimizer) > 0
    assert all(last < first for first, last in losses.values()), losses


def test_a_large_plain_update_in_slices_is_bit_identical_to_one_piece(monkeypatch):
    import ows.optim.galore_adamw as module

    results = []
    for chunk in (1 << 22, 1000):  # one piece, then slices of a few rows of the 512 x 32 embedding
        monkeypatch.setattr(module, "UPDATE_CHUNK", chunk)
        model = _model()
        _train(model, OWSConfig(**CONFIG))
        results.append(model.get_input_embeddings().weight.detach().clone())
    assert torch.equal(*results)


def test_the_gram_projector_spans_the_svds_top_space():
    from ows.optim.projector import compute_projector, gram_projector

    torch.manual_seed(0)
    grad = torch.randn(300, 40) @ torch.diag(torch.linspace(5, 0.1, 40)) @ torch.linalg.qr(torch.randn(40, 40))[0]
    for side, shape in (("right", (8, 40)), ("left", (300, 8))):
        exact, gram = compute_projector(grad, 8, side), gram_projector(grad, 8, side)
        assert gram.shape == exact.shape == shape
        span = lambda q: q.t() @ q if side == "right" else q @ q.t()  # noqa: E731 - the projection onto the span
        torch.testing.assert_close(span(gram), span(exact), atol=1e-4, rtol=0)
