"""Frozen decoder layers held in NF4 / int8: exact weights for the sampled ones and in every state dict."""

import pytest
import torch

import ows
import ows.methods
from ows import OWSConfig
from ows.memory.estimate import estimate_memory
from conftest import random_batch, tiny_config, tiny_model

pytest.importorskip("bitsandbytes")


def _train(mode, steps=6, active=1, source=None, seed=0):
    model = tiny_model("llama", layers=4, seed=seed)
    config = OWSConfig(sampling_granularity="layer", num_active_layers=active, sample_interval=2, rank=4, sampling_strategy="uniform",
                       frozen_quantization=mode)
    optimizer, controller = ows.create_ows(model, config, lr=1e-2, weights_source=source)
    losses = []
    for step in range(steps):
        controller.begin_step(step)
        loss = model(**random_batch(seed=0)).loss  # one batch: the loss must fall
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, controller, losses


@pytest.mark.parametrize("mode, ratio", [("nf4", 0.16), ("int8", 0.3)])
def test_frozen_layers_hold_a_fraction_of_their_bytes_and_never_sampled_ones_stay_exact(mode, ratio):
    original = {k: v.clone() for k, v in tiny_model("llama", layers=4).state_dict().items()}
    model, controller, losses = _train(mode)
    frozen = [i for i in range(4) if i not in controller.active]
    layers = ows.find_decoder_layers(model)
    fp32 = sum(m.out_features * m.in_features * 4 for i in frozen for m in layers[i].modules()
               if isinstance(m, torch.nn.Linear))
    assert 0 < controller.residency.frozen_weight_bytes() <= ratio * fp32
    assert all(m.weight.numel() == 0 for i in frozen for m in layers[i].modules() if isinstance(m, torch.nn.Linear))
    state = model.state_dict()  # exact: the frozen layers' weights come from their exact copies
    assert state.keys() == original.keys()
    for i in range(4):
        same = all(torch.equal(state[k], original[k]) for k in original if f"layers.{i}." in k)
        assert same == (i not in controller.visits), i
    assert losses[-1] < losses[0] and all(x == x for x in losses)
    assert len(controller.swaps) == 3 and all(seconds >= 0 for _, seconds in controller.swaps)


def test_a_trained_layer_comes_back_with_its_exact_trained_weights():
    model, controller, _ = _train("nf4", steps=2)  # period 0 only
    first = controller.active[0]
    trained = {n: p.detach().clone() for n, p in ows.find_decoder_layers(model)[first].named_parameters()}
    controller.residency.leave(first)
    controller.residency.enter(first)
    for name, p in ows.find_decoder_layers(model)[first].named_parameters():
        assert torch.equal(p, trained[name]), name


def test_materialize_gives_the_model_a_plain_forward_with_the_state_dicts_weights():
    model, controller, _ = _train("int8")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch = random_batch(seed=99)
    controller.residency.materialize()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    reference = tiny_model("llama", layers=4)
    reference.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=1e-6)


def test_loading_a_state_dict_into_frozen_layers_keeps_it_exact():
    model, controller, _ = _train("nf4", steps=2)
    donor = tiny_model("llama", layers=4, seed=5).state_dict()
    model.load_state_dict(donor, strict=True)  # frozen layers take it into their exact copies
    assert all(torch.equal(v, donor[k]) for k, v in model.state_dict().items())


def test_weights_read_back_from_the_model_files_need_no_host_copy(tiny_model_dir):
    from ows.loading import load_model

    model = load_model(str(tiny_model_dir))
    config = OWSConfig(sampling_granularity="layer", num_active_layers=1, rank=4, sampling_strategy="uniform", frozen_quantization="nf4")
    _, controller = ows.create_ows(model, config, weights_source=str(tiny_model_dir))
    controller.begin_step(0)
    assert not controller.residency.host  # never-trained frozen layers come from the safetensors files
    state = model.state_dict()
    fresh = load_model(str(tiny_model_dir)).state_dict()
    assert all(torch.equal(state[k], fresh[k]) for k in fresh)


def test_the_estimate_counts_the_quantized_weights_the_model_holds():
    model, controller, _ = _train("nf4", steps=1)
    held = sum(p.numel() * p.element_size() for p in model.parameters()) + controller.residency.frozen_weight_bytes()
    est = estimate_memory(tiny_config("llama", layers=4).to_dict(), "ows", num_active_layers=1,
                          frozen_quantization="nf4", sampling_granularity="layer")
    assert est.weights == held
    plain = estimate_memory(tiny_config("llama", layers=4).to_dict(), "ows", num_active_layers=1,
                            sampling_granularity="layer")
    assert est.weights < plain.weights and est.settings["host_bytes"] > 0


def test_unsupported_combinations_are_refused():
    with pytest.raises(ValueError, match="frozen_quantization='nf4' cannot serve method='galore'"):
        ows.methods.build_method("galore", tiny_model("llama"), OWSConfig(sampling_granularity="layer", frozen_quantization="nf4"))
    gpt2 = tiny_model("gpt2", layers=4)
    with pytest.raises(ValueError, match="needs nn.Linear modules"):
        ows.create_ows(gpt2, OWSConfig(sampling_granularity="layer", num_active_layers=1, frozen_quantization="nf4", sampling_strategy="uniform"))


def test_a_layer_sampled_first_keeps_its_trained_weights_when_it_leaves(tiny_model_dir):
    from ows.loading import load_model

    model = load_model(str(tiny_model_dir))
    config = OWSConfig(sampling_granularity="layer", num_active_layers=1, sample_interval=1, rank=4, sampling_strategy="uniform",
                       frozen_quantization="nf4")
    optimizer, controller = ows.create_ows(model, config, lr=1e-2, weights_source=str(tiny_model_dir))
    controller.begin_step(0)
    first = controller.active[0]
    model(**random_batch(vocab=model.config.vocab_size)).loss.backward()
    optimizer.step()
    trained = ows.find_decoder_layers(model)[first].self_attn.q_proj.weight.detach().clone()
    step = next(s for s in range(1, 50) if first not in controller.sampler.active_layers(s))
    controller.begin_step(step)  # the first layer leaves: its trained weights, not the file's, are kept
    name = next(n for n in model.state_dict() if f"layers.{first}.self_attn.q_proj.weight" in n)
    assert torch.equal(model.state_dict()[name], trained)
