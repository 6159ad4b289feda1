import pytest
import torch

from ows import OWSConfig, OWSController, create_ows, find_decoder_layers, optimizer_state_bytes, set_trainable
from ows.controller import layer_list
from conftest import random_batch, tiny_model

LAYERS = 8


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train(model, optimizer, controller, steps, batch_seed=0, on_step=None):
    for step in range(steps):
        controller.begin_step(step)
        batch = random_batch(seed=batch_seed + step)
        model(**batch).loss.backward()
        optimizer.step()
        if on_step:
            on_step(step)
        optimizer.zero_grad(set_to_none=True)


def make(config, **kw):
    model = tiny_model("llama", layers=LAYERS)
    optimizer, controller = create_ows(model, config, lr=1e-2, **kw)
    return model, optimizer, controller


def test_sampled_layers_change_and_never_sampled_layers_are_bit_identical():
    weights = [1.0] * 6 + [0.0, 0.0]  # layers 6 and 7 are never sampled
    config = OWSConfig(sampling_granularity="layer", num_active_layers=2, sample_interval=2, sampling_strategy="weights",
                       sampling_weights=weights, rank=4, update_proj_gap=3)
    model, optimizer, controller = make(config)
    layers = find_decoder_layers(model)
    before = [snapshot(layer) for layer in layers]
    train(model, optimizer, controller, steps=24)
    visited = set(controller.visits)
    assert visited == set(range(6))
    for i, layer in enumerate(layers):
        after = snapshot(layer)
        changed = any(not torch.equal(before[i][k], after[k]) for k in after)
        assert changed == (i in visited), f"layer {i}"


def test_optimizer_state_stays_bounded_over_many_periods():
    config = OWSConfig(sampling_granularity="layer", num_active_layers=2, sample_interval=1, sampling_strategy="uniform", rank=4)
    model, optimizer, controller = make(config)
    sizes = []
    train(model, optimizer, controller, steps=24, on_step=lambda s: sizes.append(optimizer_state_bytes(optimizer)))
    assert len(controller.visits) == LAYERS  # every layer was visited at some point (24 periods)
    # Same-shaped blocks: the state of gamma layers plus the always-trained params, never more.
    assert max(sizes) == sizes[0]
    states_with_moments = [p for p in optimizer.state if "exp_avg" in optimizer.state[p]]
    layer_params = {id(p) for layer in find_decoder_layers(model) for p in layer.parameters()}
    active_params = {id(p) for i in controller.active for p in find_decoder_layers(model)[i].parameters()}
    assert {id(p) for p in states_with_moments if id(p) in layer_params} == active_params


def test_leaving_layer_releases_grads_and_state_and_restarts_fresh():
    config = OWSConfig(sampling_granularity="layer", num_active_layers=1, sample_interval=1, sampling_strategy="uniform", rank=4, update_proj_gap=50)
    model, optimizer, controller = make(config)
    layers = find_decoder_layers(model)
    history = {}

    def record(step):
        layer = layers[controller.active[0]]
        weight = layer.self_attn.q_proj.weight
        history[step] = (controller.active[0], optimizer.state[weight]["step"], weight.grad.clone(),
                         optimizer.state[weight]["projector"].clone())

    train(model, optimizer, controller, steps=30, on_step=record)
    fresh_starts = 0
    for step in range(1, 30):
        layer_id, state_step, grad, projector = history[step]
        if layer_id != history[step - 1][0]:  # newly sampled: fresh state, projector from this gradient
            assert state_step == 1
            fresh_starts += 1
            vh = torch.linalg.svd(grad, full_matrices=False)[2][:4]  # q_proj is square: std -> right
            torch.testing.assert_close(projector.abs(), vh.abs(), rtol=1e-4, atol=1e-5)
    assert fresh_starts > 10
    inactive = [i for i in range(LAYERS) if i not in controller.active]
    for i in inactive:
        for p in layers[i].parameters():
            assert p.grad is None and not p.requires_grad and p not in optimizer.state


def test_layers_frozen_before_the_optimizer_is_built_still_train():
    model = tiny_model("llama", layers=LAYERS)
    layers = find_decoder_layers(model)
    set_trainable(layers, False)  # what LISA-style scripts do before building the optimizer
    before = [snapshot(layer) for layer in layers]
    config = OWSConfig(sampling_granularity="layer", num_active_layers=2, sample_interval=3, sampling_strategy="uniform", rank=4)
    optimizer, controller = create_ows(model, config, lr=1e-2)
    train(model, optimizer, controller, steps=6)
    for i in controller.visits:
        after = snapshot(layers[i])
        assert any(not torch.equal(before[i][k], after[k]) for k in after)


@pytest.mark.parametrize("train_outside", [True, False])
def test_embeddings_head_and_final_norm(train_outside):
    config = OWSConfig(sampling_granularity="layer", num_active_layers=1, sample_interval=5, sampling_strategy="uniform", rank=4,
                       train_embeddings=train_outside, train_lm_head=train_outside, train_final_norm=train_outside,
                       outside_optimizer="adamw")
    model, optimizer, controller = make(config)
    outside = {"embed": model.model.embed_tokens.weight, "head": model.lm_head.weight, "norm": model.model.norm.weight}
    before = {k: v.detach().clone() for k, v in outside.items()}
    train(model, optimizer, controller, steps=3)
    for name, param in outside.items():
        assert (not torch.equal(before[name], param)) == train_outside, name
        if train_outside:
            group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
            assert "rank" not in group  # plain AdamW, not projected
            assert optimizer.state[param]["exp_avg"].shape == param.shape


def test_inactive_layers_compute_no_weight_gradients():
    config = OWSConfig(sampling_granularity="layer", num_active_layers=2, sample_interval=5, sampling_strategy="uniform", rank=4)
    model, optimizer, controller = make(config)
    controller.begin_step(0)
    model(**random_batch()).loss.backward()
    layers = find_decoder_layers(model)
    for i, layer in enumerate(layers):
        has_grad = all(p.grad is not None for p in layer.parameters())
        assert has_grad == (i in controller.active)


def test_guard_rails():
    model = tiny_model("llama", layers=4)
    with pytest.raises(ValueError, match="num_active_layers=5 is larger than the model's 4"):
        create_ows(model, OWSConfig(sampling_granularity="layer", num_active_layers=5, sampling_strategy="uniform"))
    with pytest.raises(ValueError, match="needs an outlier profile"):
        create_ows(model, OWSConfig(sampling_granularity="layer", num_active_layers=2, sampling_strategy="owl"))
    from ows import OutlierProfile

    with pytest.raises(ValueError, match="has 3 layers but the model has 4"):
        create_ows(model, OWSConfig(sampling_granularity="layer", num_active_layers=2, sampling_strategy="owl"),
                   OutlierProfile([0.1, 0.2, 0.3]))
    optimizer = torch.optim.AdamW([model.lm_head.weight])
    from ows import LayerSampler

    with pytest.raises(ValueError, match="does not hold"):
        OWSController(model, optimizer, LayerSampler([0.25] * 4, 2, 5))


def test_works_with_plain_torch_adamw():
    """LISA-style: any torch optimizer, state released all the same."""
    config = OWSConfig(sampling_granularity="layer", num_active_layers=1, sample_interval=1, sampling_strategy="uniform", use_galore=False)
    model = tiny_model("llama", layers=LAYERS)
    from ows import LayerSampler, build_param_groups

    groups = [{k: v for k, v in g.items() if k != "ows_group"} for g in build_param_groups(model, config)]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    controller = OWSController(model, optimizer, LayerSampler([1 / LAYERS] * LAYERS, 1, 1, seed=1))
    sizes = []
    train(model, optimizer, controller, steps=20, on_step=lambda s: sizes.append(optimizer_state_bytes(optimizer)))
    assert len(controller.visits) > 3 and max(sizes) == sizes[0]


@pytest.mark.parametrize("arch", ["mistral", "qwen2", "gpt2"])
def test_trains_other_architectures(arch):
    model = tiny_model(arch, layers=4)
    config = OWSConfig(sampling_granularity="layer", num_active_layers=2, sample_interval=2, sampling_strategy="uniform", rank=4)
    optimizer, controller = create_ows(model, config, lr=1e-2)
    layers = find_decoder_layers(model)
    before = [snapshot(layer) for layer in layers]
    losses = []
    for step in range(8):
        controller.begin_step(step)
        loss = model(**random_batch(seed=step % 2)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    projected = [p for g in optimizer.param_groups if "rank" in g for p in g["params"]]
    assert len(projected) >= 4 * 4  # q/k/v/o-like and MLP matrices of every layer (Conv1D for GPT-2)
    for i in controller.visits:
        assert any(not torch.equal(v, snapshot(layers[i])[k]) for k, v in before[i].items())


def test_the_controller_records_the_schedule_it_ran():
    model = tiny_model("llama", layers=4)
    optimizer, controller = create_ows(model, OWSConfig(sampling_granularity="layer", num_active_layers=2, sample_interval=3, rank=4,
                                                        sampling_strategy="uniform"))
    for step in range(7):
        controller.begin_step(step)
    record = controller.schedule_record()
    assert [s for s, _ in record["schedule"]] == [0, 3, 6]
    assert [tuple(a) for _, a in record["schedule"]] == [controller.sampler.active_layers(s) for s in (0, 3, 6)]
    assert sum(record["visits"].values()) == 6


def test_by_default_the_weights_outside_the_layers_train_with_galore_moments_and_the_baselines_with_adamw():
    from ows.methods import build_method

    model, optimizer, _ = make(OWSConfig(sampling_granularity="layer", num_active_layers=1, sample_interval=5, sampling_strategy="uniform", rank=4))
    head = next(g for g in optimizer.param_groups if any(p is model.lm_head.weight for p in g["params"]))
    assert head["rank"] == 4 and head["svd"] == "gram"  # ows's default (docs/RESULTS.md); svd_method auto
    lisa = build_method("lisa", tiny_model("llama", layers=4), OWSConfig(sampling_granularity="layer", num_active_layers=1))
    assert lisa.config.outside_optimizer == "adamw" and not any("rank" in g for g in lisa.optimizer.param_groups)


@pytest.mark.parametrize("layers, text", [((3, 7, 12), "3,7,12"), ((12, 3, 7, 8), "3,7,8,12"),
                                          ((0, 2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14), "0,2-8,10,12-14"),
                                          ((), ""), ((29, 28, 27), "27-29")])
def test_layer_lists_in_log_lines_show_runs_of_three_or_more_as_ranges(layers, text):
    assert layer_list(layers) == text
