import math
from collections import Counter

import pytest

from ows import LayerSampler, sampling_probabilities


def test_owl_is_proportional_to_ratios_and_temperature():
    ratios = [0.01, 0.03, 0.06]
    assert sampling_probabilities(ratios, "owl") == pytest.approx([0.1, 0.3, 0.6])
    assert sampling_probabilities(ratios, "owl", temperature=0.0) == pytest.approx([1 / 3] * 3)
    sharp = sampling_probabilities(ratios, "owl", temperature=2.0)
    assert sharp[2] > 0.6


def test_other_strategies():
    ratios = [0.01, 0.03, 0.06]
    assert sampling_probabilities(ratios, "uniform") == pytest.approx([1 / 3] * 3)
    assert sampling_probabilities(ratios, "owl_reverse") == pytest.approx([0.6, 0.3, 0.1])
    assert sampling_probabilities(None, "increase", num_layers=4) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert sampling_probabilities(None, "decrease", num_layers=4) == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert sampling_probabilities(None, "weights", weights=[1, 0, 3]) == pytest.approx([0.25, 0, 0.75])


@pytest.mark.parametrize(
    "ratios, match",
    [([0.0, 0.0], "all zero"), ([float("nan"), 0.1], "NaN"), ([-0.1, 0.2], "NaN, inf or negative")],
)
def test_bad_ratios(ratios, match):
    with pytest.raises(ValueError, match=match):
        sampling_probabilities(ratios, "owl")


def test_profile_layer_count_must_match():
    with pytest.raises(ValueError, match="has 3 layers but the model has 4"):
        sampling_probabilities([0.1, 0.2, 0.3], "owl", num_layers=4)


def test_owl_without_profile_is_an_error():
    with pytest.raises(ValueError, match="needs an outlier profile"):
        sampling_probabilities(None, "owl", num_layers=4)


def test_sampler_is_pure_function_of_seed_and_period():
    probs = sampling_probabilities(None, "increase", num_layers=12)
    a = LayerSampler(probs, num_active=3, interval=5, seed=7)
    b = LayerSampler(probs, num_active=3, interval=5, seed=7)
    # same period -> same set, from any step, in any order of calls
    assert a.active_layers(13) == a.active_layers(10) == b.active_layers(14)
    assert [b.active_layers(s) for s in (49, 0, 22)] == [a.active_layers(s) for s in (45, 4, 20)]
    for step in range(0, 200, 5):
        layers = a.active_layers(step)
        assert len(set(layers)) == 3 and list(layers) == sorted(layers)
    other_seed = LayerSampler(probs, num_active=3, interval=5, seed=8)
    assert a.schedule(100) != other_seed.schedule(100)


def test_sampler_frequencies_follow_probabilities():
    probs = [0.05, 0.05, 0.1, 0.2, 0.6]
    sampler = LayerSampler(probs, num_active=1, interval=1, seed=0)
    counts = Counter(sampler.active_layers(s)[0] for s in range(4000))
    for layer, p in enumerate(probs):
        assert counts[layer] / 4000 == pytest.approx(p, abs=0.03)


def test_zero_probability_layers_never_drawn():
    sampler = LayerSampler([0.0, 0.5, 0.0, 0.5, 0.0], num_active=2, interval=1, seed=3)
    assert all(sampler.active_layers(s) == (1, 3) for s in range(50))


@pytest.mark.parametrize("gamma", [0, 6, 2.0])
def test_gamma_guard_rails(gamma):
    with pytest.raises(ValueError, match="num_active_layers"):
        LayerSampler([0.2] * 5, num_active=gamma, interval=1)


def test_too_few_nonzero_layers():
    with pytest.raises(ValueError, match="only 2 layers have a non-zero probability"):
        LayerSampler([0.5, 0.5, 0.0], num_active=3, interval=1)


def test_schedule_length():
    sampler = LayerSampler([0.25] * 4, num_active=2, interval=10)
    assert len(sampler.schedule(101)) == math.ceil(101 / 10)
