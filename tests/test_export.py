"""ows.export: the delta of a fine-tune, the merge back (bit for bit), the LoRA extraction."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ows.export import Weights, compute_delta, merge_delta, read_delta_info, weights_hash, write_delta

pytest.importorskip("safetensors")


def _tuned_copy(base, out, change):
    """A copy of the model folder ``base`` in ``out`` with ``change(state_dict)`` applied to its weights."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, out)
    state = load_file(str(out / "model.safetensors"))
    change(state)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _same_tensors(a, b):
    wa, wb = Weights(a), Weights(b)
    assert wa.names == wb.names
    for name in wa.names:
        x, y = wa.get(name), wb.get(name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


def _train_layer_one(state):
    for name in list(state):
        if ".layers.1." in name:
            state[name] = state[name] + 0.01 * torch.randn_like(state[name])
    state["model.norm.weight"] = state["model.norm.weight"] * 1.5


def test_delta_keeps_only_the_changed_tensors_and_merge_rebuilds_the_model_bit_for_bit(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    tuned = _tuned_copy(tiny_model_dir, tmp_path / "tuned", _train_layer_one)
    delta = compute_delta(tiny_model_dir, tuned)
    assert set(delta.changed) == {n for n in Weights(tuned).names if ".layers.1." in n} | {"model.norm.weight"}
    assert delta.unchanged == len(Weights(tuned).names) - len(delta.changed) and delta.dtype is None
    folder = write_delta(delta, tiny_model_dir, "tiny", tmp_path / "delta", str(tuned))
    info = read_delta_info(folder)
    assert info["base_sha256"] == weights_hash(tiny_model_dir) and info["tensors"] == sorted(delta.changed)
    merged = merge_delta(tiny_model_dir, folder, tmp_path / "merged")
    _same_tensors(merged, tuned)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged)  # a normal model folder
    assert torch.equal(model.model.norm.weight, Weights(tuned).get("model.norm.weight"))


def test_merge_writes_shards_with_an_index_when_the_model_is_large(tiny_model_dir, tmp_path):
    tuned = _tuned_copy(tiny_model_dir, tmp_path / "tuned", _train_layer_one)
    folder = write_delta(compute_delta(tiny_model_dir, tuned), tiny_model_dir, "tiny", tmp_path / "delta", str(tuned))
    merged = merge_delta(tiny_model_dir, folder, tmp_path / "merged", shard_bytes=20_000)
    shards = sorted(merged.glob("model-*.safetensors"))
    index = json.loads((merged / "model.safetensors.index.json").read_text())
    assert len(shards) > 1 and set(index["weight_map"].values()) == {s.name for s in shards}
    _same_tensors(merged, tuned)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(merged)


def test_a_run_saved_in_another_dtype_counts_lossless_casts_as_unchanged(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    base = _tuned_copy(tiny_model_dir, tmp_path / "bf16", lambda s: s.update({k: v.bfloat16() for k, v in s.items()}))

    def train_in_fp32(state):
        state.update({k: v.float() for k, v in state.items()})
        state["model.norm.weight"] = state["model.norm.weight"] + 1e-3  # not a bf16 value any more

    tuned = _tuned_copy(base, tmp_path / "fp32", train_in_fp32)
    delta = compute_delta(base, tuned)
    assert list(delta.changed) == ["model.norm.weight"] and delta.dtype == "float32"
    folder = write_delta(delta, base, "bf16", tmp_path / "delta", str(tuned))
    _same_tensors(merge_delta(base, folder, tmp_path / "merged"), tuned)
    assert load_file(str(tmp_path / "merged" / "model.safetensors"))["lm_head.weight"].dtype == torch.float32


def test_merge_into_another_base_is_refused_before_anything_is_written(tiny_model_dir, tmp_path):
    tuned = _tuned_copy(tiny_model_dir, tmp_path / "tuned", _train_layer_one)
    folder = write_delta(compute_delta(tiny_model_dir, tuned), tiny_model_dir, "tiny", tmp_path / "delta", str(tuned))
    other = _tuned_copy(tiny_model_dir, tmp_path / "other", lambda s: s.update({"model.norm.weight": s["model.norm.weight"] * 2}))
    with pytest.raises(ValueError, match=r"is not the model the delta was made from .*give that base model"):
        merge_delta(other, folder, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    with pytest.raises(FileNotFoundError, match="is not an ows delta folder"):
        read_delta_info(tmp_path / "tuned")


def test_a_foreign_model_is_not_a_fine_tune(tiny_model_dir, tmp_path):
    def reshape(state):
        state["model.norm.weight"] = torch.ones(7)

    with pytest.raises(ValueError, match="is not a fine-tune of"):
        compute_delta(tiny_model_dir, _tuned_copy(tiny_model_dir, tmp_path / "x", reshape))


# --- LoRA extraction ---------------------------------------------------------------------------------------------
def _low_rank_change(state):
    g = torch.Generator().manual_seed(1)
    for name in ("model.layers.1.self_attn.q_proj.weight", "model.layers.2.mlp.down_proj.weight"):
        out, inp = state[name].shape
        state[name] = state[name] + 0.05 * torch.randn(out, 2, generator=g) @ torch.randn(2, inp, generator=g)
    state["model.layers.1.input_layernorm.weight"] = state["model.layers.1.input_layernorm.weight"] + 0.1


def test_extracted_lora_reproduces_low_rank_changes_and_reports_the_rest(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ows.export import extract_lora

    tuned = _tuned_copy(tiny_model_dir, tmp_path / "tuned", _low_rank_change)
    report = extract_lora(tiny_model_dir, tuned, tmp_path / "lora", rank=2)
    assert set(report.energy) == {"model.layers.1.self_attn.q_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    assert min(report.energy.values()) > 0.9999
    assert report.left_out == {"model.layers.1.input_layernorm.weight": 32}
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "lora")
    merged = model.merge_and_unload().state_dict()
    weights = Weights(tuned)
    for name in report.energy:
        torch.testing.assert_close(merged[name], weights.get(name), atol=1e-5, rtol=0)
    base = Weights(tiny_model_dir)  # an unchanged linear of a transformed layer stays the base's
    torch.testing.assert_close(merged["model.layers.1.self_attn.k_proj.weight"],
                               base.get("model.layers.1.self_attn.k_proj.weight"), atol=0, rtol=0)
    saved = json.loads((tmp_path / "lora" / "lora_report.json").read_text())
    assert saved["rank"] == 2 and saved["left_out_params"] == 32


def test_lower_rank_captures_less_energy(tiny_model_dir, tmp_path):
    from ows.export import extract_lora, low_rank

    tuned = _tuned_copy(tiny_model_dir, tmp_path / "tuned", _low_rank_change)
    one = extract_lora(tiny_model_dir, tuned, tmp_path / "r1", rank=1)
    assert 0.3 < min(one.energy.values()) < 0.9999
    b, a, energy = low_rank(torch.diag(torch.tensor([3.0, 4.0])), 1)
    assert energy == pytest.approx(16 / 25) and torch.allclose(b @ a, torch.diag(torch.tensor([0.0, 4.0])))


def test_a_rank_larger_than_a_layer_is_refused_before_anything_is_written(tiny_model_dir, tmp_path):
    from ows.export import extract_lora

    tuned = _tuned_copy(tiny_model_dir, tmp_path / "tuned", _low_rank_change)
    with pytest.raises(ValueError, match=r"--rank 64 is larger than .* use a rank <= 16"):
        extract_lora(tiny_model_dir, tuned, tmp_path / "lora", rank=64)
    assert not (tmp_path / "lora").exists()
