import json

import pytest

from ows import OWSConfig


def test_defaults_follow_the_paper_except_where_measured():
    c = OWSConfig()
    assert (c.num_active_layers, c.sample_interval, c.outlier_threshold) == (5, 50, 5.0)
    assert (c.rank, c.update_proj_gap, c.galore_scale) == (128, 100, 1.0)
    # the method's own defaults: ows's measured ones, the paper's for ows-fullrank (configs/paper.yaml for ows)
    assert (c.sampling_strategy, c.sampling_granularity, c.outside_optimizer) == (None, None, None)
    ows = c.with_defaults()
    assert (ows.sampling_strategy, ows.sampling_granularity, ows.outside_optimizer) == ("uniform", "module", "galore")
    from ows.methods import get_method

    paper = get_method("ows-fullrank").config_for(c)
    assert (paper.sampling_strategy, paper.sampling_granularity) == ("owl", "layer")


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_active_layers", 0),
        ("num_active_layers", 2.5),
        ("sample_interval", -1),
        ("sampling_strategy", "random"),
        ("outlier_threshold", 0),
        ("outlier_threshold", float("nan")),
        ("rank", True),
        ("proj_type", "full"),
        ("svd_method", "fast"),
        ("train_embeddings", "yes"),
        ("target_modules", []),
        ("sampling_weights", [1.0, -1.0]),
        ("seed", -3),
    ],
)
def test_bad_values_name_field_and_value(field, value):
    with pytest.raises(ValueError) as err:
        OWSConfig(**{field: value})
    message = str(err.value)
    assert field in message and repr(value) in message
    assert "\n" not in message


def test_weights_strategy_needs_weights():
    with pytest.raises(ValueError, match="sampling_weights"):
        OWSConfig(sampling_strategy="weights")


def test_json_round_trip(tmp_path):
    c = OWSConfig(num_active_layers=2, sampling_strategy="weights", sampling_weights=[1, 2, 3], target_modules=["q_proj"])
    path = tmp_path / "ows.json"
    c.to_json(path)
    assert OWSConfig.from_json(path) == c
    assert OWSConfig.from_json(c.to_json()) == c


def test_unknown_key_lists_valid_fields():
    with pytest.raises(ValueError, match="no field 'gamma'.*num_active_layers"):
        OWSConfig.from_dict({"gamma": 5})


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        OWSConfig.from_json(tmp_path / "does-not-exist.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        OWSConfig.from_json(bad)


def test_every_field_has_help():
    helps = OWSConfig.field_help()
    assert set(helps) == set(json.loads(OWSConfig().to_json()))
    assert all(len(text) > 10 for text in helps.values())


@pytest.mark.parametrize("kwargs, ratios, needle", [
    (dict(num_active_layers=5), None, "num_active_layers=5 is larger than the model's 4 decoder layers"),
    (dict(sampling_strategy="weights", sampling_weights=[1.0, 1.0, 1.0]), None, "sampling_weights has 3 values"),
    (dict(sampling_strategy="weights", sampling_weights=[0.0] * 4), None, "sampling_weights are all zero"),
    (dict(sampling_strategy="weights", sampling_weights=[1.0, 0.0, 0.0, 0.0], num_active_layers=2), None,
     "only 1 layers have a non-zero probability"),
    (dict(sampling_strategy="owl"), [0.0] * 4, "ratios are all zero"),
    (dict(num_active_layers=3, sampling_strategy="owl"), [0.1, 0.0, 0.2, 0.0], "only 2 layers have a non-zero probability"),
    (dict(sampling_strategy="owl"), [0.1] * 5, "the outlier profile has 5 layers but the model has 4"),
])
def test_check_for_refuses_settings_the_model_cannot_run(kwargs, ratios, needle):
    config = OWSConfig(**{"num_active_layers": 1, "sampling_granularity": "layer", **kwargs})
    with pytest.raises(ValueError, match=needle):
        config.check_for(4, ratios)


def test_check_for_accepts_what_can_be_drawn():
    OWSConfig(num_active_layers=2).check_for(4, [0.1, 0.0, 0.2, 0.0])
    OWSConfig(num_active_layers=4, sampling_temperature=0.0).check_for(4, [0.1, 0.0, 0.2, 0.0])  # tau 0: uniform
    OWSConfig(num_active_layers=4, sampling_strategy="uniform").check_for(4, [0.0] * 4)  # uniform needs no ratios
