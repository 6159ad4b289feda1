"""The memory budget: levers from the least harmful, fields the user set kept, a clear refusal."""

import contextlib
import io
import json

import pytest

from ows.cli import main
from ows.memory.plan import plan_for_budget
from ows.memory.size import parse_budget

LLAMA7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False)
START = dict(dtype="bfloat16", per_device_train_batch_size=16, max_seq_length=512, num_active_layers=5, rank=128,
             gradient_checkpointing=False, loss_chunk_size=0, fused_step=False, outside_optimizer="adamw",
             svd_method="exact", frozen_quantization="none", gradient_accumulation_steps=1, train_embeddings=True,
             train_lm_head=True, master_weights=False, lora_r=16, attn_implementation="sdpa", device="cuda",
             sampling_granularity="layer")


def test_the_plan_fits_and_spends_no_quality_before_it_must():
    plan = plan_for_budget(LLAMA7B, "ows", parse_budget("9GiB"), START)
    assert plan.fits and plan.total <= 9 * 2**30
    fields = [s.field for s in plan.steps]
    from ows.memory.plan import LEVERS

    free_of_cost = {", ".join(lever.fields) for lever in LEVERS if lever.quality <= 0}
    assert fields[0] in free_of_cost and "loss_chunk_size" in fields
    lossy = [i for i, f in enumerate(fields) if f in ("frozen_quantization", "num_active_layers", "rank")]
    free = [i for i, f in enumerate(fields) if f in ("gradient_checkpointing", "per_device_train_batch_size",
                                                    "train_embeddings, train_lm_head")]
    assert free and lossy and max(free) < min(lossy)  # gradient accumulation before quantizing anything
    saving = [s.total for s in plan.steps if not s.spends]
    assert saving == sorted(saving, reverse=True)
    assert plan.settings["per_device_train_batch_size"] * plan.settings["gradient_accumulation_steps"] == 16


def test_the_levers_are_ordered_by_measured_quality_cost_per_gib():
    from ows.memory.plan import LEVERS

    assert all(lever.source for lever in LEVERS)
    costs = {lever.field: lever.quality for lever in LEVERS}
    assert costs["gradient_checkpointing"] == 0 and costs["train_embeddings"] > costs["frozen_quantization"] > 0
    # with checkpointing and the batch fixed, the plan quantizes the frozen layers before it gives up layers
    plan = plan_for_budget(LLAMA7B, "ows", parse_budget("9GiB"), dict(START, gradient_checkpointing=True,
                                                                      loss_chunk_size=1024),
                           fixed=frozenset({"per_device_train_batch_size", "loss_chunk_size"}))
    fields = [s.field for s in plan.steps]
    assert plan.fits and "frozen_quantization" in fields
    assert fields.index("frozen_quantization") < fields.index("num_active_layers")
    # freezing the head cost far more on the words family than a sampled layer: layers go first
    assert "train_embeddings, train_lm_head" not in fields[:fields.index("num_active_layers")]


def test_headroom_is_kept_free_and_room_to_spare_buys_more_sampled_layers():
    roomy = plan_for_budget(LLAMA7B, "ows", parse_budget("40GiB"), dict(START, gradient_checkpointing=True),
                            headroom=2**30)
    assert roomy.fits and roomy.total <= 39 * 2**30 and roomy.settings["num_active_layers"] > 5
    assert roomy.settings["frozen_quantization"] == "none" and roomy.settings["rank"] == 128
    assert roomy.settings["num_active_layers"] == 6  # the cap: a fifth of the 32 layers
    unspent = [note for note in roomy.notes if "left unspent" in note]
    assert len(unspent) == 1 and "num_active_layers stops at 6, 20% of the 32 layers" in unspent[0]
    assert unspent[0] in "\n".join(roomy.lines())
    # a model of 20 layers at gamma 5: a fifth is 4, so gamma stays where the run started and the note says so
    shallow = plan_for_budget(dict(LLAMA7B, num_hidden_layers=20), "ows", parse_budget("40GiB"),
                              dict(START, gradient_checkpointing=True), headroom=2**30)
    assert shallow.settings["num_active_layers"] == 5
    assert any("num_active_layers stays at 5, where it started (above 20% of the 20 layers)" in note
               for note in shallow.notes)
    kept = plan_for_budget(LLAMA7B, "ows", parse_budget("40GiB"), dict(START, gradient_checkpointing=True),
                           fixed=frozenset({"num_active_layers"}), headroom=2**30)
    assert kept.settings["num_active_layers"] == 5
    tight = plan_for_budget(LLAMA7B, "ows", parse_budget("12GiB"), START, headroom=2**30)
    assert tight.fits and tight.total <= 11 * 2**30 and "1.00 GiB kept free" in tight.lines()[-1]


def test_fields_the_user_set_are_kept_and_nothing_fits_is_said():
    plan = plan_for_budget(LLAMA7B, "ows", parse_budget("9GiB"), START,
                           fixed=frozenset({"per_device_train_batch_size"}))
    assert plan.settings["per_device_train_batch_size"] == 16 and plan.fits
    assert plan_for_budget(LLAMA7B, "ows", parse_budget("12GiB"), dict(START, gradient_checkpointing=True)).steps
    tiny = plan_for_budget(LLAMA7B, "ows", parse_budget("2GiB"), START)
    assert not tiny.fits and tiny.settings["num_active_layers"] == 1
    assert tiny.settings["per_device_train_batch_size"] == 1


def test_a_float32_model_on_a_gpu_goes_to_bf16_before_any_lossy_lever():
    fp32 = dict(START, dtype="float32", gradient_checkpointing=True, device="cuda")
    fields = [s.field for s in plan_for_budget(LLAMA7B, "ows", parse_budget("14GiB"), fp32).steps]
    assert "dtype" in fields and all(fields.index("dtype") < fields.index(f) for f in
                                     ("frozen_quantization", "num_active_layers", "rank") if f in fields)
    cpu = [s.field for s in plan_for_budget(LLAMA7B, "ows", parse_budget("14GiB"), dict(fp32, device="cpu")).steps]
    assert "dtype" not in cpu


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
            "--report_to", "none", "--save_strategy", "no", "--loss_chunk_size", "0", "--memory_headroom", "0"]
    code, out, err = _run(*base, "--output_dir", str(tmp_path / "none"), "--max_memory", "1KiB")
    assert code == 2 and "nothing fits for method='ows'" in err and "raise max_memory to" in err
    assert not (tmp_path / "none").exists()
    code, out, err = _run(*base, "--output_dir", str(tmp_path / "none"), "--max_memory", "1GiB",
                          "--memory_headroom", "2GiB")
    assert code == 2 and "memory_headroom='2GiB' leaves nothing of max_memory='1GiB'" in err
    code, out, err = _run(*base, "--output_dir", str(tmp_path / "fit"), "--max_memory", "30MiB")
    assert code == 0, err
    assert "memory plan for max_memory=30MiB" in out
    settings = json.loads((tmp_path / "fit" / "ows_run.json").read_text())["settings"]
    assert settings["num_active_layers"] == 2 and "loss_chunk_size" not in out  # set by the user: kept
    planned = [line.strip().split(": ")[0].split(" = ") for line in out.splitlines() if " = " in line]
    assert planned and all(str(settings[name]) == value for names, value in planned for name in names.split(", "))
    assert settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"] == 8  # same batch


def test_a_field_the_user_set_that_rules_out_every_plan_is_named():
    code, _, err = _run("memory", "llama-2-7b", "--dtype", "bfloat16", "--methods", "ows",
                        "--per_device_train_batch_size", "64", "--max_seq_length", "2048", "--max-memory", "14GiB")
    assert code == 0  # ows memory shows the plan that does not fit
    from ows.errors import UsageError
    from ows.model_facts import PRESETS
    from ows.recipe.budget import plan, refuse

    settings = dict(START, per_device_train_batch_size=64, max_seq_length=2048, device="cuda")
    given = frozenset({"per_device_train_batch_size", "max_seq_length"})
    chosen = plan(PRESETS["llama-2-7b"], "ows", "14GiB", settings, given)
    assert not chosen.fits
    with pytest.raises(UsageError, match="the fields you set rule out every plan .*per_device_train_batch_size=64"):
        refuse(chosen, "ows", given, PRESETS["llama-2-7b"])


def test_int8_frozen_layers_come_first_and_nf4_only_when_int8_is_not_enough():
    start = dict(START, gradient_checkpointing=True, loss_chunk_size=1024, sampling_granularity="module",
                 outside_optimizer="galore")
    plan = plan_for_budget(LLAMA7B, "ows", parse_budget("16GiB"), start, headroom=2**30)
    assert plan.fits and plan.settings["frozen_quantization"] == "int8" and plan.settings["num_active_layers"] > 5
    from ows.memory.plan import LEVERS

    cost = {lever.propose(dict(start, frozen_quantization=q)): lever.quality for lever in LEVERS
            for q in ("none", "int8") if lever.field == "frozen_quantization"}
    assert 0 <= cost["int8"] < cost["nf4"]  # int8 cost nothing measurable on either family, NF4 did on words


def test_sampled_layers_given_up_come_back_when_a_later_lever_made_room():
    llama70b = dict(LLAMA7B, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                    num_key_value_heads=8, vocab_size=128256)  # Llama-3.1-70B's shapes
    start = dict(START, per_device_train_batch_size=1, gradient_checkpointing=True, sampling_granularity="module",
                 outside_optimizer="galore")
    plan = plan_for_budget(llama70b, "ows", parse_budget("46GiB"), start, headroom=2**30)
    fields = [s.field for s in plan.steps]
    gammas = [s.value for s in plan.steps if s.field == "num_active_layers"]
    # the layers given up on the way (down to one) and taken back are not in the plan: only the net change is
    assert plan.fits and "train_embeddings, train_lm_head" in fields and plan.settings["frozen_quantization"] == "nf4"
    assert 1 < plan.settings["num_active_layers"] < 5 and gammas == list(range(4, plan.settings["num_active_layers"] - 1, -1))
    assert not any(s.spends for s in plan.steps)
    assert [s.value for s in plan.steps if s.field == "frozen_quantization"] == ["int8", "nf4"]
    totals = [s.total for s in plan.steps]
    assert totals == sorted(totals, reverse=True) and totals[-1] == plan.total  # estimates along the shorter path
    one_more = plan_for_budget(llama70b, "ows", parse_budget("46GiB"),
                               dict(plan.settings, num_active_layers=plan.settings["num_active_layers"] + 1),
                               fixed=frozenset(start), headroom=2**30)
    assert not one_more.fits  # as far as the room goes


def test_the_last_sampled_layer_costs_more_than_the_others():
    from ows.memory.plan import LEVERS

    cost = {lever.propose(dict(START, num_active_layers=gamma)): lever.quality for lever in LEVERS
            for gamma in (2, 5) if lever.field == "num_active_layers"}
    assert cost[1] > cost[4] > 0  # ablations: gamma 2 -> 1 cost +0.024, each of 5 -> 2 about +0.009
