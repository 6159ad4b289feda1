"""``--method qlora``: LoRA over a 4-bit NF4 base (PEFT + bitsandbytes, on CPU), its adapter saved; its memory row."""

import contextlib
import io
import json

import pytest

from ows.cli import main

pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")


def test_qlora_trains_a_4bit_base_and_saves_a_loadable_adapter(tiny_model_dir_64, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    argv = ["train", "--model", str(tiny_model_dir_64), "--dataset", "reasoning-gym:chain_sum", "--num_train_examples",
            "32", "--num_heldout_examples", "8", "--heldout_generate", "0", "--max_steps", "4",
            "--per_device_train_batch_size", "4", "--method", "qlora", "--lora_r", "4", "--learning_rate", "1e-2",
            "--report_to", "none", "--save_strategy", "no", "--output_dir", str(out)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "qlora" and results["after"]["heldout_answer_loss"] > 0
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir_64)
    adapted = PeftModel.from_pretrained(base, out)
    assert any("lora_A" in name for name, _ in adapted.named_parameters())


def test_the_qlora_row_holds_the_base_in_4_bits():
    from ows.model_facts import PRESETS
    from ows.memory.estimate import estimate_memory

    qlora = estimate_memory(PRESETS["llama-2-7b"], "qlora", dtype="bfloat16")
    lora = estimate_memory(PRESETS["llama-2-7b"], "lora", dtype="bfloat16")
    assert qlora.weights < 0.4 * lora.weights and qlora.optimizer_state == lora.optimizer_state
