"""Bad sampling settings (gradient strategy, module granularity, budget): one line naming the field and the fix,
before any work, from the Python API, `ows train` and `ows memory`."""

import sys
from pathlib import Path

import pytest

from ows import OWSConfig

sys.path.insert(0, str(Path(__file__).parent / "reliability"))
from bad_inputs import Case, run_case  # noqa: E402


@pytest.mark.parametrize("kwargs, needle", [
    (dict(sampling_granularity="block"), "OWSConfig.sampling_granularity='block' is invalid: use one of layer, module"),
    (dict(sampling_strategy="gradients"), "OWSConfig.sampling_strategy='gradients' is invalid: use one of owl, "
                                          "uniform, owl_reverse, increase, decrease, weights, gradient"),
    (dict(sampling_granularity="module", sample_budget_params=0), "OWSConfig.sample_budget_params=0 is invalid: "
                                                                  "must be an integer >= 1 or None"),
    (dict(sampling_granularity="layer", sample_budget_params=5000), "OWSConfig.sample_budget_params=5000 only applies to sampling_granularity="
                                      "'module': remove it, or set sampling_granularity module"),
    (dict(sampling_prior="owl"), "OWSConfig.sampling_prior='owl' only applies to sampling_strategy='gradient'"),
    (dict(sampling_prior="outliers", sampling_strategy="gradient"), "OWSConfig.sampling_prior='outliers' is invalid"),
    (dict(sampling_strategy="gradient", sampling_ema=1.0), "OWSConfig.sampling_ema=1.0 is invalid: must be >= 0 "
                                                           "and < 1"),
])
def test_bad_sampling_settings_are_one_line_naming_the_field(kwargs, needle):
    with pytest.raises(ValueError) as err:
        OWSConfig(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_module_budget_is_checked_against_the_model_without_torch():
    sizes = [[1024, 512, 512, 1024, 2048, 2048, 2048]] * 4
    config = OWSConfig(sampling_granularity="module", num_active_layers=2)
    config.check_for(4, None, sizes)  # the default budget: 2 layers' worth
    gamma_too_large = OWSConfig(sampling_granularity="module", num_active_layers=5)
    with pytest.raises(ValueError, match="num_active_layers=5 is larger than the model's 4 decoder layers"):
        gamma_too_large.check_for(4, None, sizes)
    OWSConfig(sampling_granularity="module", num_active_layers=5, sample_budget_params=4096).check_for(4, None, sizes)
    weights = OWSConfig(sampling_granularity="module", sampling_strategy="weights", sampling_weights=[1, 0, 0, 0],
                        num_active_layers=2)
    with pytest.raises(ValueError, match=r"sample_budget_params=18432 \(the default: num_active_layers=2 x the mean "
                                         r"layer's weights\) but the weights with a non-zero probability hold only "
                                         r"9216 parameters"):
        weights.check_for(4, None, sizes)


def cases(model: Path, tmp: Path) -> list[Case]:
    import json

    data = tmp / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a} + 1 =", "completion": f" {a + 1}"}) + "\n" for a in range(16)))
    base = ["train", "--model", str(model), "--dataset", str(data), "--output_dir", str(tmp / "out"), "--max_steps",
            "2", "--per_device_train_batch_size", "4", "--num_active_layers", "2", "--rank", "4", "--report_to",
            "none", "--save_strategy", "no", "--heldout_generate", "0"]
    module = [*base, "--sampling_granularity", "module"]
    return [
        Case("config", "unknown granularity", [*base, "--sampling_granularity", "block"],
             "sampling_granularity='block' is invalid: use one of layer, module"),
        Case("config", "unknown strategy", [*base, "--sampling_strategy", "gradients"],
             "sampling_strategy='gradients' is invalid: use one of"),
        Case("config", "budget below the largest weight", [*module, "--sample_budget_params", "100"],
             "sample_budget_params=100 is smaller than the largest decoder-layer weight"),
        Case("config", "budget above the model", [*module, "--sample_budget_params", "1000000"],
             "sample_budget_params=1000000 is larger than the model's"),
        Case("config", "budget with whole layers", [*base, "--sampling_granularity", "layer", "--sample_budget_params",
                                                    "5000"],
             "sample_budget_params=5000 only applies to sampling_granularity='module'"),
        Case("config", "gamma above the model with the default budget", [*module, "--num_active_layers", "5"],
             "num_active_layers=5 is larger than the model's 4 decoder layers"),
        Case("memory", "estimate with a budget below the largest weight",
             ["memory", "--model", str(model), "--sampling_granularity", "module", "--sample_budget_params", "100"],
             "--sample_budget_params 100 is smaller than the largest decoder-layer weight"),
    ]


@pytest.mark.parametrize("index", range(7))
def test_bad_sampling_input_on_the_command_line(tiny_model_dir, tmp_path, index):
    case = cases(tiny_model_dir, tmp_path)[index]
    code, lines, _ = run_case(case)
    assert code == case.code and len(lines) == 1, (case.what, lines)
    assert case.expect in lines[0], (case.what, lines[0])
    assert not (tmp_path / "out").exists()
