"""The early checks of ows train, unit by unit (the end-to-end cases are in tests/reliability/bad_inputs.py)."""

import dataclasses

import pytest

from ows.cli.common import UsageError
from ows.recipe.arguments import ScriptArguments
from ows.recipe.checks import check_profile_model, check_training_fields, same_model
from ows.outliers import OutlierProfile


@pytest.mark.parametrize("a, b, same", [
    ("smollm2-135m", "SmolLM2-135M-Instruct", True), ("/models/llama-2-7b/", "meta/llama-2-7b", True),
    ("Llama-2-7b-hf", "Mistral-7B-v0.1", False), (None, "anything", True),
])
def test_same_model_compares_the_last_part_of_the_names(a, b, same):
    assert same_model(a, b) is same


def test_a_profile_of_another_model_is_refused_unless_allowed():
    profile = OutlierProfile([0.1] * 4, model_name="Llama-2-7b-hf")
    with pytest.raises(UsageError, match="--allow_other_profile true"):
        check_profile_model(profile, "p.json", "tiny-llama", allow_other=False)
    check_profile_model(profile, "p.json", "tiny-llama", allow_other=True)
    check_profile_model(OutlierProfile([0.1] * 4, model_name=None), "p.json", "tiny-llama", allow_other=False)


@pytest.mark.parametrize("field, value", [
    ("learning_rate", -1e-4), ("seed", 2**32), ("data_seed", -1), ("per_device_train_batch_size", 0),
    ("gradient_accumulation_steps", 0), ("warmup_ratio", 1.5), ("adam_beta2", 1.0), ("max_steps", 0),
    ("max_steps", -2), ("save_steps", 0), ("logging_steps", 0), ("lr_scheduler_kwargs", 5),
    ("lr_scheduler_kwargs", "[1, 2]"), ("num_train_epochs", 0),
])
def test_out_of_range_training_values_name_the_field(field, value):
    with pytest.raises(UsageError, match=f"^{field}="):
        check_training_fields({field: value})


def test_values_in_range_pass():
    check_training_fields({"learning_rate": 0.0, "seed": 2**32 - 1, "max_steps": -1, "warmup_ratio": 1.0,
                           "lr_scheduler_kwargs": '{"num_cycles": 2}', "save_steps": 0.5})


def test_ows_samples_whole_layers_under_fsdp_unless_told_and_says_so(monkeypatch, caplog):
    from ows import OWSConfig
    from ows.recipe.checks import method_defaults

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert method_defaults("ows", OWSConfig(), {})["sampling_granularity"] == "module"
    with caplog.at_level("INFO"):
        assert method_defaults("ows", OWSConfig(), {"fsdp": "full_shard"})["sampling_granularity"] == "layer"
    assert "FSDP cannot shard single weights" in caplog.text
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert method_defaults("ows", OWSConfig(), {})["sampling_granularity"] == "layer"
    assert method_defaults("lisa", OWSConfig(), {})["sampling_granularity"] == "layer"
    explicit = OWSConfig(sampling_granularity="module")  # the user's choice is kept (the controller refuses it)
    assert explicit.with_defaults(method_defaults("ows", explicit, {})).sampling_granularity == "module"


def test_ows_runs_at_its_measured_defaults_and_needs_no_profile_for_them():
    import ows
    from ows.methods import get_method
    from ows.recipe.run import prepare

    script = ows.ScriptArguments(model="smollm2-135m", dataset="reasoning-gym:chain_sum")
    for method, expected in (("ows", ("uniform", "module", "galore")), ("ows-fullrank", ("owl", "layer", "adamw")),
                             ("lisa", ("uniform", "layer", "adamw"))):
        _, config, _ = prepare(dataclasses.replace(script, method=method), ows.OWSConfig(), {"output_dir": "o"})
        assert (config.sampling_strategy, config.sampling_granularity, config.outside_optimizer) == expected, method
        assert get_method(method).needs_profile(config) == (expected[0] == "owl")


def test_ows_train_on_an_unreachable_hub_id_fails_without_downloading(monkeypatch):
    import transformers

    from ows.recipe import checks

    monkeypatch.setattr(checks, "cached_hub_config", lambda model: None)
    monkeypatch.setattr(checks, "hub_unreachable", lambda: "huggingface.co cannot be reached: no DNS")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(UsageError, match="^model='some-org/some-model' is not a local path .*no DNS.*local model"):
        checks.read_model_config("some-org/some-model", ScriptArguments(model="some-org/some-model"))
