"""sampling_granularity module: single 2-D weights drawn to a parameter budget, for every strategy, and what
follows it (the controller's state release, GaLore, frozen quantization, the outlier profile, the estimator)."""

import pytest
import torch

from ows import OWSConfig, create_ows, find_decoder_layers, profile_outliers
from ows.granularity import default_budget, fill_budget, most_blocks
from ows.layers import layer_rest, sampling_blocks
from ows.memory.estimate import estimate_memory
from ows.sampling import BudgetSampler
from conftest import random_batch, tiny_config, tiny_model

# A tiny Llama layer: q, o 32x32; k, v 16x32 (grouped-query); gate, up 64x32; down 32x64.
SIZES = [1024, 512, 512, 1024, 2048, 2048, 2048]
LAYER = sum(SIZES)


def test_blocks_are_whole_layers_or_every_2d_weight_and_norms_are_the_rest():
    layers = find_decoder_layers(tiny_model("llama", layers=4))
    whole = sampling_blocks(layers, "layer")
    assert [b.name for b in whole] == ["0", "1", "2", "3"] and whole[0].size == LAYER
    weights = sampling_blocks(layers, "module")
    assert len(weights) == 28 and [b.size for b in weights[:7]] == SIZES
    assert weights[0].name == "0.self_attn.q_proj.weight" and weights[-1].name == "3.mlp.down_proj.weight"
    rest = layer_rest(layers, weights)
    assert all(len(r) == 2 and all(p.dim() == 1 for p in r) for r in rest)  # the two norms of each layer
    assert layer_rest(layers, whole) == [[], [], [], []]


def test_the_budget_is_filled_in_key_order_and_never_exceeded():
    assert fill_budget([2, 0, 1, 3], [5, 3, 4, 1], 8) == (1, 2, 3)  # 0 does not fit after 2: skipped
    assert fill_budget([2, 0, 1, 3], [5, 3, 4, 1], 9) == (0, 2)  # 4 + 5: full, stop
    assert fill_budget([0, 1, 2], [5, 3, 4], 8) == (0, 1)
    assert most_blocks([5, 3, 4, 1], 8) == 3 and default_budget(2, [[3, 1], [5, 3]]) == 12
    sampler = BudgetSampler([1.0] * 28, SIZES * 4, 2 * LAYER, interval=1, seed=3)
    draws = [sampler.active_blocks(k) for k in range(40)]
    assert all(sum(SIZES[b % 7] for b in d) <= 2 * LAYER for d in draws)
    assert min(sum(SIZES[b % 7] for b in d) for d in draws) > 2 * LAYER - max(SIZES)  # nothing else would fit
    assert draws == [BudgetSampler([1.0] * 28, SIZES * 4, 2 * LAYER, 1, 3).active_blocks(k) for k in range(40)]
    assert len({b for d in draws for b in d}) == 28


def test_blocks_without_probability_are_never_drawn():
    probs = [1.0 if b // 7 in (0, 2) else 0.0 for b in range(28)]
    sampler = BudgetSampler(probs, SIZES * 4, LAYER, interval=1)
    assert {b // 7 for k in range(30) for b in sampler.active_blocks(k)} == {0, 2}
    with pytest.raises(ValueError, match="sample_budget_params=30000 but the weights with a non-zero probability hold "
                                         "only 18432 parameters"):
        BudgetSampler(probs, SIZES * 4, 30000, interval=1)


def module_config(**kw):
    return OWSConfig(**{**dict(num_active_layers=2, sample_interval=2, sampling_strategy="uniform",
                               sampling_granularity="module", rank=4, update_proj_gap=3), **kw})


def train(model, optimizer, controller, steps, check=None):
    for step in range(steps):
        controller.begin_step(step)
        model(**random_batch(seed=step)).loss.backward()
        if check:
            check(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("strategy", ["uniform", "gradient"])
def test_only_the_drawn_weights_and_their_layers_norms_train_and_leaving_weights_lose_their_state(strategy):
    model = tiny_model("llama", layers=4)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    config = module_config(sampling_strategy=strategy, sample_budget_params=4096)
    optimizer, controller = create_ows(model, config, lr=1e-2)
    blocks, layers = controller.blocks, find_decoder_layers(model)
    drawn_ever = set()

    def check(step):
        drawn = set(controller.active_blocks)
        drawn_ever.update(drawn)
        touched = {blocks[b].layer for b in drawn}
        assert 2048 < sum(blocks[b].size for b in drawn) <= 4096
        assert set(controller.active) == touched
        for b, block in enumerate(blocks):
            assert block.params[0].requires_grad == (b in drawn)
            assert (block.params[0].grad is not None) == (b in drawn)
            stateful = block.params[0] in optimizer.state and "exp_avg" in optimizer.state[block.params[0]]
            assert not stateful or b in drawn  # a weight that left was released
            assert stateful or b not in drawn or step % 2 == 0  # a drawn weight keeps its state within a period
        for i, layer in enumerate(layers):
            assert all(p.requires_grad == (i in touched) for p in layer.parameters() if p.dim() == 1)

    train(model, optimizer, controller, 8, check)
    assert 4 < len(drawn_ever) < 28
    state = model.state_dict()
    for b, block in enumerate(blocks):
        key = f"model.layers.{block.name}"
        assert torch.equal(state[key], original[key]) == (b not in drawn_ever), key
    assert any("projector" in optimizer.state[blocks[b].params[0]] for b in controller.active_blocks)  # GaLore
    record = controller.schedule_record(8)
    assert record["blocks"][0] == "0.self_attn.q_proj.weight" and len(record["schedule"]) == 4


def test_owl_draws_single_weights_by_their_own_outlier_ratio():
    model = tiny_model("llama", layers=4)
    profile = profile_outliers(model, [random_batch(seed=9)["input_ids"]])
    table = profile.extra["matrix_ratios"]
    assert len(table) == 4 and set(table[0]) == {b.name.split(".", 1)[1] for b in
                                                 sampling_blocks(find_decoder_layers(model), "module")[:7]}
    for ratio, per_weight in zip(profile.ratios, table):  # the layer's ratio is its weights' size-weighted mean
        assert ratio == pytest.approx(sum(r * s for r, s in zip(per_weight.values(), SIZES)) / LAYER)
    _, controller = create_ows(model, module_config(sampling_strategy="owl"), profile)
    flat = [table[b.layer][b.name.split(".", 1)[1]] for b in controller.blocks]
    assert controller.sampler.probabilities == pytest.approx([r / sum(flat) for r in flat])
    profile.extra.pop("matrix_ratios")  # an older profile: each weight gets its layer's ratio
    _, controller = create_ows(model, module_config(sampling_strategy="owl"), profile)
    by_layer = [profile.ratios[b.layer] for b in controller.blocks]
    assert controller.sampler.probabilities == pytest.approx([r / sum(by_layer) for r in by_layer])


def test_frozen_quantization_keeps_only_the_drawn_weights_exact():
    pytest.importorskip("bitsandbytes")
    model = tiny_model("llama", layers=4)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer, controller = create_ows(model, module_config(num_active_layers=1, sample_budget_params=2048,
                                                            frozen_quantization="nf4"), lr=1e-2)
    layers = find_decoder_layers(model)

    def check(step):
        drawn = {id(p) for b in controller.active_blocks for p in controller.blocks[b].params}
        linears = [m for layer in layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        assert all((m.weight.numel() > 0) == (id(m.weight) in drawn) for m in linears)
        assert any(m.weight.numel() == 0 for i in controller.active for m in layers[i].modules()
                   if isinstance(m, torch.nn.Linear))  # a touched layer's undrawn weights are quantized too

    train(model, optimizer, controller, 6, check)
    state = model.state_dict()  # exact, and the weights never drawn are the original ones
    drawn = {controller.blocks[b].name for b in controller.visits}
    for name, value in original.items():
        if name.endswith("proj.weight") and "layers." in name:
            assert torch.equal(state[name], value) == (name.split("layers.", 1)[1] not in drawn), name


def test_the_estimate_counts_the_budget_and_the_layers_it_touches():
    config = tiny_config("llama", 4).to_dict()
    layer = estimate_memory(config, "ows", num_active_layers=2, rank=4, sampling_granularity="layer")
    module = estimate_memory(config, "ows", num_active_layers=2, rank=4, sampling_granularity="module")
    assert module.settings["sample_budget_params"] == 2 * LAYER and module.settings["layers_touched"] == 4
    assert module.trainable_params - layer.trainable_params == 2 * 64  # the norms of 2 more touched layers
    assert module.optimizer_state - layer.optimizer_state == 2 * 64 * 2 * 4  # and their 2 fp32 moments
    assert module.projectors == layer.projectors  # the default budget: 2 layers' worth of weights
    half = estimate_memory(config, "lisa", sampling_granularity="module", sample_budget_params=LAYER // 2)
    full = estimate_memory(config, "lisa", num_active_layers=1)
    assert half.gradients < full.gradients and half.settings["layers_touched"] == 4
    assert half.settings["num_active_layers"] == 5  # explicit budget: gamma is not checked against 4 layers


@pytest.mark.parametrize("kwargs, needle", [
    (dict(sample_budget_params=2000), "sample_budget_params=2000 is smaller than the largest decoder-layer weight "
                                      "(2048 parameters), which could then never be drawn: set sample_budget_params "
                                      "to at least 2048"),
    (dict(sample_budget_params=10**6), "sample_budget_params=1000000 is larger than the model's 36864 parameters in "
                                       "decoder-layer weights: set sample_budget_params to at most 36864"),
])
def test_a_budget_that_cannot_serve_the_model_is_refused_before_any_work(kwargs, needle):
    model = tiny_model("llama", layers=4)
    with pytest.raises(ValueError) as err:
        create_ows(model, module_config(**kwargs))
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen or built
    with pytest.raises(ValueError, match="sample_budget_params="):
        module_config(**kwargs).check_for(4, None, [SIZES] * 4)
    with pytest.raises(ValueError, match="sample_budget_params="):
        estimate_memory(tiny_config("llama", 4).to_dict(), "ows", sampling_granularity="module", **kwargs)


def test_ows_draws_single_weights_by_default_and_lisa_whole_layers():
    from ows.methods import build_method

    config = OWSConfig(num_active_layers=1, rank=4, sampling_strategy="uniform")
    _, controller = create_ows(tiny_model("llama", layers=4), config)
    assert controller.granularity == "module"  # ows's default (docs/RESULTS.md): single weights
    lisa = build_method("lisa", tiny_model("llama", layers=4), OWSConfig(num_active_layers=1))
    assert lisa.config.sampling_granularity == "layer" and lisa.controller.granularity == "layer"
    facts = tiny_config("llama", layers=4).to_dict()
    default = estimate_memory(facts, "ows", num_active_layers=1)
    assert default.total == estimate_memory(facts, "ows", num_active_layers=1, sampling_granularity="module").total
    assert default.total != estimate_memory(facts, "ows", num_active_layers=1, sampling_granularity="layer").total


@pytest.mark.parametrize("layers, gamma", [(4, 1), (8, 2)])
def test_the_estimate_counts_only_the_drawn_weights_exact_under_frozen_quantization(layers, gamma):
    pytest.importorskip("bitsandbytes")
    model = tiny_model("llama", layers=layers)
    _, controller = create_ows(model, module_config(num_active_layers=gamma, frozen_quantization="nf4"))
    controller.begin_step(0)
    held = sum(p.numel() * p.element_size() for p in model.parameters()) + controller.residency.frozen_weight_bytes()
    config = tiny_config("llama", layers).to_dict()
    est = estimate_memory(config, "ows", num_active_layers=gamma, rank=4, frozen_quantization="nf4",
                          sampling_granularity="module")
    assert held <= est.weights <= 1.002 * held  # the budget in a layer's proportions; a draw may fall short of it
    whole = estimate_memory(config, "ows", num_active_layers=gamma, rank=4, sampling_granularity="module")
    assert est.weights < 0.5 * whole.weights
