"""sampling_strategy gradient: the score arithmetic, exploration, the measurement, the state and its checkpoint."""

import math

import pytest
import torch

from ows import OWSConfig, create_ows, find_decoder_layers
from ows.importance import GradientSampler, score_probabilities, updated_score
from ows.sampling import draw_order
from conftest import random_batch, tiny_model


def test_score_probabilities_follow_the_scores_to_the_temperature():
    assert score_probabilities([1.0, 3.0], 1.0) == pytest.approx([0.25, 0.75])
    assert score_probabilities([1.0, 3.0], 2.0) == pytest.approx([0.1, 0.9])
    assert score_probabilities([1.0, 3.0], 0.0) == pytest.approx([0.5, 0.5])
    assert score_probabilities([1.0, None, 3.0], 1.0) == pytest.approx([1 / 6, 2 / 6, 3 / 6])  # unknown: the mean
    assert score_probabilities([0.0, 0.0], 1.0) == pytest.approx([0.5, 0.5])


def test_a_score_starts_at_its_first_mean_then_moves_by_the_moving_average():
    assert updated_score(None, 4.0, 0.5) == 4.0
    assert updated_score(4.0, 2.0, 0.5) == 3.0
    assert updated_score(4.0, 2.0, 0.0) == 2.0


def test_draw_order_puts_groups_first_and_zero_probabilities_last_or_nowhere():
    probs = [0.5, 0.0, 0.25, 0.25]
    order = draw_order(probs, seed=1, period=0, groups=[1, 1, 0, 1], include_zero=True)
    assert order[0] == 2 and order[-1] == 1 and sorted(order) == [0, 1, 2, 3]
    assert 1 not in draw_order(probs, seed=1, period=0)
    assert draw_order(probs, 1, 0) == draw_order(probs, 1, 0)


def sampler(n=6, gamma=2, ema=0.5, temperature=1.0, prior=None, seed=0):
    return GradientSampler(prior or [1.0] * n, [1] * n, gamma, interval=1, seed=seed, ema=ema,
                           temperature=temperature)


def test_every_block_is_visited_once_before_the_scores_are_used():
    s = sampler(n=7, gamma=2)
    first = [s.period_blocks(k) for k in range(4)]  # ceil(7 / 2) periods
    seen = [b for blocks in first for b in blocks]
    assert sorted(set(seen)) == list(range(7))
    assert len(seen) == 8 and len(set(seen[:6])) == 6  # no block twice until all were drawn once


def test_never_visited_blocks_follow_the_prior_and_zero_prior_blocks_still_come():
    s = sampler(n=4, gamma=1, prior=[0.0, 0.0, 0.0, 1.0])
    assert s.period_blocks(0) == (3,)
    assert sorted(b for k in range(1, 4) for b in s.period_blocks(k)) == [0, 1, 2]


def test_after_exploration_draws_follow_the_scores():
    s = sampler(n=4, gamma=1, temperature=1.0)
    for k in range(4):
        (block,) = s.period_blocks(k)
        s.observe({block: 9.0 if block == 2 else 1.0})
    counts = [0] * 4
    for k in range(4, 404):
        (block,) = s.period_blocks(k)
        counts[block] += 1
        s.observe({block: 9.0 if block == 2 else 1.0})  # the same signal every time: scores stay put
    assert counts[2] / 400 == pytest.approx(0.75, abs=0.07)  # 9 / (9 + 1 + 1 + 1)


def test_scores_fold_in_period_means_and_stale_scores_are_kept():
    s = sampler(n=2, gamma=1, ema=0.5)
    (a,) = s.period_blocks(0)
    s.observe({a: 2.0})
    s.observe({a: 4.0})
    (b,) = s.period_blocks(1)  # closes period 0: a's score is the mean of its steps
    assert s.scores[a] == 3.0 and s.scores[b] is None
    s.observe({b: 1.0})
    s.observe({b: float("nan")})  # a non-finite step is left out
    drawn = s.period_blocks(2)
    assert (s.scores[a], s.scores[b]) == (3.0, 1.0)  # a was not drawn in period 1: kept as it was
    s.observe({drawn[0]: 5.0})
    s.period_blocks(3)
    assert s.scores[drawn[0]] == pytest.approx(0.5 * (3.0 if drawn[0] == a else 1.0) + 0.5 * 5.0)


def test_the_draw_is_a_pure_function_of_seed_period_and_state():
    a = sampler(n=6, gamma=2, seed=4)
    for k in range(5):
        blocks = a.period_blocks(k)
        a.observe({b: 1.0 + b * (k + 1) for b in blocks})
    saved = a.state_dict()
    b = sampler(n=6, gamma=2, seed=4)
    b.load_state_dict(saved)
    assert [a.period_blocks(k) for k in range(5, 12)] == [b.period_blocks(k) for k in range(5, 12)]
    assert b.schedule(12) == a.schedule(12) and len(b.schedule(12)) == 12  # the periods that ran, recorded
    other_seed = sampler(n=6, gamma=2, seed=5)
    other_seed.load_state_dict(saved)
    assert [other_seed.period_blocks(k) for k in range(5, 12)] != [a.period_blocks(k) for k in range(5, 12)]
    with pytest.raises(ValueError, match="saved sampler state has 6 blocks but this run samples 5"):
        sampler(n=5).load_state_dict(saved)


def gradient_config(**kw):
    return OWSConfig(**{**dict(num_active_layers=2, sample_interval=2, sampling_strategy="gradient", rank=4,
                               update_proj_gap=3, sampling_granularity="layer"), **kw})


def train(model, optimizer, controller, steps, start=0):
    for step in range(start, steps):
        controller.begin_step(step)
        model(**random_batch(seed=step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_the_signal_is_the_rms_gradient_of_the_active_blocks_2d_weights():
    model = tiny_model("llama", layers=4)
    optimizer, controller = create_ows(model, gradient_config(sample_interval=1), lr=1e-2)
    controller.begin_step(0)
    model(**random_batch(seed=0)).loss.backward()
    layers = find_decoder_layers(model)
    expected = {}
    for i in controller.active:
        weights = [p for p in layers[i].parameters() if p.dim() == 2]
        square = sum(float(p.grad.double().pow(2).sum()) for p in weights)
        expected[i] = math.sqrt(square / sum(p.numel() for p in weights))
    optimizer.step()
    for i, value in expected.items():
        assert controller.sampler.sums[i] == pytest.approx(value, rel=1e-5) and controller.sampler.counts[i] == 1
    assert sum(controller.sampler.counts) == 2  # only the active blocks are measured


def test_the_fused_step_measures_inside_backward_what_the_plain_step_measures():
    runs = []
    for fused in (False, True):
        model = tiny_model("llama", layers=4)
        optimizer, controller = create_ows(model, gradient_config(sample_interval=1, fused_step=fused), lr=1e-2)
        train(model, optimizer, controller, 8)
        runs.append((controller.schedule_record(8), controller.sampler.scores))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == pytest.approx(runs[1][1], rel=1e-5) and None not in runs[0][1]


def test_the_state_travels_in_the_optimizer_state_dict_and_resume_is_bit_identical():
    def fresh():
        model = tiny_model("llama", layers=4)
        return (model, *create_ows(model, gradient_config(), lr=1e-2))

    model, optimizer, controller = fresh()
    train(model, optimizer, controller, 12)
    for stop in (5, 6):  # inside period 2, and on the boundary of period 3
        m1, o1, c1 = fresh()
        train(m1, o1, c1, stop)
        saved_model, saved_optimizer = m1.state_dict(), o1.state_dict()
        assert saved_optimizer["ows_sampler"]["current"] == (stop - 1) // 2
        m2, o2, c2 = fresh()
        m2.load_state_dict(saved_model)
        o2.load_state_dict(saved_optimizer)
        train(m2, o2, c2, 12, start=stop)
        assert c2.schedule_record(12) == controller.schedule_record(12)
        for name, value in model.state_dict().items():
            assert torch.equal(m2.state_dict()[name], value), (stop, name)


def test_resuming_without_the_sampler_state_is_refused():
    model = tiny_model("llama", layers=4)
    optimizer, controller = create_ows(model, gradient_config(), lr=1e-2)
    with pytest.raises(RuntimeError, match="resuming at step 4 with sampling_strategy='gradient' needs the sampler"):
        controller.begin_step(4)


def test_the_owl_prior_needs_a_profile_and_orders_the_first_visits():
    from ows import OutlierProfile

    model = tiny_model("llama", layers=4)
    config = gradient_config(num_active_layers=1, sampling_prior="owl")
    with pytest.raises(ValueError, match="sampling_prior='owl' needs an outlier profile"):
        create_ows(model, config)
    profile = OutlierProfile([0.0, 0.0, 0.5, 0.0])
    _, controller = create_ows(model, config, profile)
    assert controller.begin_step(0) == (2,)
    assert sorted(controller.begin_step(2 * k)[0] for k in range(1, 4)) == [0, 1, 3]  # zero ratios visited too
