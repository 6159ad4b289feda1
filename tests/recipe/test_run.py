"""``ows.train`` from Python: the same run as ``ows train``, callbacks instead of patches, checks before any work."""

import json

import pytest

pytest.importorskip("transformers")
import ows  # noqa: E402
from ows.cli import main  # noqa: E402

FAST = dict(dataset="reasoning-gym:chain_sum", num_train_examples=64, max_seq_length=128, heldout_generate=2,
            num_heldout_examples=8, calibration_samples=2, calibration_seq_len=32)
TRAINING = dict(max_steps=3, per_device_train_batch_size=4, learning_rate=3e-4, logging_steps=1, save_strategy="no",
                report_to="none", seed=0)


def _flags(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def test_python_and_the_command_line_train_the_same_model(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    config = ows.OWSConfig(num_active_layers=2, sample_interval=2, rank=4, seed=0)
    result = ows.train(ows.ScriptArguments(model=str(tiny_model_dir), **FAST), config,
                       dict(TRAINING, output_dir=str(tmp_path / "py")))
    assert result.status == "finished" and result.exit_code == 0 and result.steps == 3
    assert result.method == "ows" and result.after["heldout_answer_loss"] > 0
    assert json.loads((tmp_path / "py" / "results.json").read_text())["after"] == result.after
    argv = ["train", "--model", str(tiny_model_dir), *_flags(FAST), *_flags(TRAINING), "--num_active_layers", "2",
            "--sample_interval", "2", "--rank", "4", "--output_dir", str(tmp_path / "cli")]
    assert main(argv) == 0
    py, cli = load_file(tmp_path / "py" / "model.safetensors"), load_file(tmp_path / "cli" / "model.safetensors")
    assert py.keys() == cli.keys() and all(py[k].equal(cli[k]) for k in py)


def test_callbacks_hear_setup_training_and_the_end_and_keep_weights_false_writes_no_model(tiny_model_dir, tmp_path):
    heard = []

    class Listener(ows.RunCallback):
        def on_datasets(self, datasets):
            heard.append(("datasets", len(datasets.train), len(datasets.heldout)))

        def on_setup(self, setup, trainer, tokenizer):
            heard.append(("setup", setup.name, setup.controller is not None))
            assert setup.model.config._attn_implementation == "eager"  # attn_implementation reaches the loader

        def on_step_end(self, args, state, control, **kwargs):
            heard.append(("step", state.global_step))

        def on_trained(self, setup, trainer, tokenizer):
            heard.append(("trained", trainer.state.global_step))

    result = ows.train(ows.ScriptArguments(model=str(tiny_model_dir), method="lisa", attn_implementation="eager", **FAST),
                       ows.OWSConfig(num_active_layers=1, sample_interval=2),
                       dict(TRAINING, output_dir=str(tmp_path / "out")), callbacks=[Listener()],
                       keep_weights=False, heldout_before=False)
    assert heard[0] == ("datasets", FAST["num_train_examples"], FAST["num_heldout_examples"])
    assert heard[1:] == [("setup", "lisa", True), ("step", 1), ("step", 2), ("step", 3), ("trained", 3)]
    assert result.before == {} and "heldout_answer_loss" in result.after
    assert not list((tmp_path / "out").glob("*.safetensors")) and (tmp_path / "out" / "results.json").is_file()


def test_bad_input_is_refused_before_any_file_is_written(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ows.UsageError, match="num_active_layers=9 is larger than the model's 4 decoder layers"):
        ows.train(ows.ScriptArguments(model=str(tiny_model_dir), **FAST), ows.OWSConfig(num_active_layers=9),
                  dict(TRAINING, output_dir=str(out)))
    with pytest.raises(ows.UsageError, match="output_dir is not set"):
        ows.train(ows.ScriptArguments(model=str(tiny_model_dir), **FAST))
    with pytest.raises(ows.UsageError, match="learning_rate=-1"):
        ows.train(ows.ScriptArguments(model=str(tiny_model_dir), **FAST), None,
                  dict(TRAINING, learning_rate=-1, output_dir=str(out)))
    assert not out.exists()


def test_fields_a_python_caller_set_are_kept_by_the_memory_plan():
    from ows.recipe.run import prepare

    script, config, training = prepare(ows.ScriptArguments(model="m", dataset="d", max_seq_length=64),
                                       ows.OWSConfig(rank=8), {"output_dir": "o", "per_device_train_batch_size": 2})
    assert {"max_seq_length", "rank", "per_device_train_batch_size", "model", "dataset"} <= script.given
    assert "num_active_layers" not in script.given


@pytest.mark.parametrize("stored, gpu, bf16, expected", [
    ("bfloat16", False, False, "float32"), ("bfloat16", True, True, "bfloat16"), ("float16", True, True, "bfloat16"),
    ("float16", True, False, "float32"), ("float32", True, True, "float32"), (None, True, True, "float32")])
def test_dtype_auto_is_the_checkpoints_own_on_a_gpu_and_float32_on_the_cpu(stored, gpu, bf16, expected):
    from ows.recipe.arguments import resolve_dtype

    config = {"model_type": "llama", **({"dtype": stored} if stored else {})}
    dtype, why = resolve_dtype("auto", config, gpu=gpu, gpu_bf16=bf16)
    assert dtype == expected and why.startswith("auto: ") and (("no GPU" in why) == (not gpu))
    assert resolve_dtype("float16", config, gpu, bf16) == ("float16", "dtype set")
    assert resolve_dtype("auto", {"torch_dtype": "bfloat16"}, gpu=True, gpu_bf16=True)[0] == "bfloat16"  # transformers 4


def test_dtype_is_auto_by_default_and_still_checked():
    assert ows.ScriptArguments().dtype == "auto"
    ows.ScriptArguments(dtype="auto").validate()
    with pytest.raises(ValueError, match="dtype='int8' is unknown: use one of auto, float32, bfloat16, float16"):
        ows.ScriptArguments(dtype="int8").validate()


def test_on_a_bf16_gpu_the_run_and_its_memory_plan_get_bfloat16_with_bf16_mixed_precision(tiny_model_dir, tmp_path,
                                                                                          monkeypatch):
    import shutil

    import torch

    from ows.recipe import budget

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    seen = {}

    def plan(model_config, method, budget_text, settings, given, headroom):
        seen.update(settings)
        raise ows.UsageError("stop here: the plan was made")

    monkeypatch.setattr(budget, "plan", plan)
    with pytest.raises(ows.UsageError, match="stop here"):
        ows.train(ows.ScriptArguments(model=str(model), max_memory="8GiB", **FAST), ows.OWSConfig(num_active_layers=2),
                  dict(TRAINING, output_dir=str(tmp_path / "out")))
    assert seen["dtype"] == "bfloat16"
    from ows.recipe.trainer import resolve_precision

    script, training, line = resolve_precision(ows.ScriptArguments(model="m"), {}, {"dtype": "bfloat16"})
    assert (script.dtype, training) == ("bfloat16", {"bf16": True})
    assert line == "dtype bfloat16 (auto: the checkpoint's dtype is bfloat16 and this GPU has bfloat16); mixed " \
                   "precision: bf16 true"
    script, training, _ = resolve_precision(ows.ScriptArguments(model="m"), {"bf16": False}, {"dtype": "bfloat16"})
    assert script.dtype == "bfloat16" and training == {"bf16": False}  # a flag the user gave is kept
    assert not (tmp_path / "out").exists()
