"""The memory budget: levers from the least harmful, fields the user set kept, a clear refusal."""

import contextlib
import io
import json

import pytest

from ows.cli import main
from ows.memory.plan import parse_budget, plan_for_budget

LLAMA7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False)
START = dict(dtype="bfloat16", per_device_train_batch_size=16, max_seq_length=512, num_active_layers=5, rank=128,
             gradient_checkpointing=False, loss_chunk_size=0, fused_step=False, outside_optimizer="adamw",
             svd_method="exact", frozen_quantization="none", gradient_accumulation_steps=1)


@pytest.mark.parametrize("text, expected", [("16GiB", 16 * 2**30), ("15.5 GB", int(15.5e9)), ("12000MiB", 12000 * 2**20),
                                            ("9", 9 * 2**30)])
def test_budgets_are_read_in_any_unit(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-3GiB", "16 GiBs", "0"])
def test_a_bad_budget_names_the_field(text):
    with pytest.raises(ValueError, match=f"max_memory={text!r} is invalid"):
        parse_budget(text)


def test_the_plan_fits_and_goes_from_the_cheapest_levers():
    plan = plan_for_budget(LLAMA7B, "ows", parse_budget("9GiB"), START)
    assert plan.fits and plan.total <= 9 * 2**30
    fields = [s.field for s in plan.steps]
    assert fields[:2] == ["loss_chunk_size", "gradient_checkpointing"]  # no cost and compute first
    assert "frozen_quantization" in fields and fields.index("frozen_quantization") < fields.index("per_device_train_batch_size")
    assert [s.total for s in plan.steps] == sorted((s.total for s in plan.steps), reverse=True)
    assert plan.settings["per_device_train_batch_size"] * plan.settings["gradient_accumulation_steps"] == 16  # same effective batch


def test_a_lever_that_gained_nothing_is_tried_again_before_costlier_ones():
    # Without checkpointing the peak is the activations, where the fused step gains nothing; once checkpointing
    # moved the peak into backward, the fused step comes before quantizing the frozen layers.
    fields = [s.field for s in plan_for_budget(LLAMA7B, "ows", parse_budget("16GiB"), START).steps]
    assert fields.index("gradient_checkpointing") < fields.index("fused_step") < fields.index("frozen_quantization")


def test_fields_the_user_set_are_kept_and_nothing_fits_is_said():
    plan = plan_for_budget(LLAMA7B, "ows", parse_budget("9GiB"), START, fixed=frozenset({"per_device_train_batch_size"}))
    assert plan.settings["per_device_train_batch_size"] == 16 and plan.fits
    assert plan_for_budget(LLAMA7B, "ows", parse_budget("12GiB"), dict(START, gradient_checkpointing=True)).steps
    tiny = plan_for_budget(LLAMA7B, "ows", parse_budget("2GiB"), START)
    assert not tiny.fits and tiny.settings["num_active_layers"] == 1 and tiny.settings["per_device_train_batch_size"] == 1


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_ows_memory_prints_each_methods_plan():
    code, out, _ = _run("memory", "llama-2-7b", "--dtype", "bfloat16", "--methods", "ows,lora", "--max-memory", "10GiB",
                        "--json")
    assert code == 0
    plans = json.loads(out)["plans"]
    assert plans["ows"]["fits"] and not plans["lora"]["fits"]
    code, out, _ = _run("memory", "llama-2-7b", "--dtype", "bfloat16", "--methods", "ows", "--max-memory", "10GiB")
    assert code == 0 and "ows: memory plan for max_memory=10GiB:" in out and "fits" in out


def test_ows_train_applies_the_plan_or_refuses_before_any_work(tiny_model_dir, tmp_path):
    base = ["train", "--model", str(tiny_model_dir), "--dataset", "reasoning-gym:chain_sum", "--num_train_examples",
            "16", "--num_heldout_examples", "4", "--heldout_generate", "0", "--max_steps", "1", "--rank", "4",
            "--num_active_layers", "2", "--calibration_samples", "2", "--calibration_seq_len", "32",
            "--report_to", "none", "--save_strategy", "no", "--loss_chunk_size", "0"]
    code, out, err = _run(*base, "--output_dir", str(tmp_path / "none"), "--max_memory", "1KiB")
    assert code == 2 and "nothing fits for method='ows'" in err and "num_active_layers" in err
    assert not (tmp_path / "none").exists()
    code, out, err = _run(*base, "--output_dir", str(tmp_path / "fit"), "--max_memory", "30MiB")
    assert code == 0, err
    assert "memory plan for max_memory=30MiB" in out
    settings = json.loads((tmp_path / "fit" / "ows_run.json").read_text())["settings"]
    assert settings["num_active_layers"] == 2 and "chunked_loss" not in out  # set by the user: kept
    assert settings["gradient_checkpointing"] is True
