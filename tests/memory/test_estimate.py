"""ows.estimate: parameter counts against real tiny models, state/gradient bytes against real optimizers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import random_batch, tiny_config, tiny_model
from ows.config import OWSConfig
from ows.memory.estimate import estimate_memory, model_shape
from ows.methods import method_names

METHODS = method_names()
from ows.memory.measure import gradient_bytes, optimizer_state_bytes
from ows.methods import build_method

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "gpt2", "gpt_neox"]


def _layer(model):
    for name in ("model.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
            return obj[0]
        except AttributeError:
            continue
    raise AssertionError("no decoder layers")


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_counts_match_the_model_built_from_the_config(arch):
    config = tiny_config(arch)
    model = tiny_model(arch)
    shape = model_shape(config.to_dict())
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    layer = _layer(model)
    assert shape.layer_params == sum(p.numel() for p in layer.parameters())
    matrices = sorted(tuple(p.shape) for p in layer.parameters() if p.dim() == 2)
    assert sorted(shape.layer_matrices) == matrices


def test_tied_and_untied_heads_and_gqa():
    base = tiny_config("llama").to_dict()
    untied = model_shape(base)
    tied = model_shape(dict(base, tie_word_embeddings=True))
    assert untied.total_params - tied.total_params == base["vocab_size"] * base["hidden_size"]
    mha = model_shape(dict(base, num_key_value_heads=base["num_attention_heads"]))
    head_dim = base["hidden_size"] // base["num_attention_heads"]
    extra_kv = 2 * (base["num_attention_heads"] - base["num_key_value_heads"]) * head_dim * base["hidden_size"]
    assert mha.layer_params - untied.layer_params == extra_kv


def _trained_model(method, arch="llama", steps=2, **config):
    model = tiny_model(arch)
    cfg = OWSConfig(num_active_layers=2, sample_interval=1, rank=4, sampling_strategy="uniform",
                    sampling_granularity="layer", **config)  # whole layers: the state is exact, not a budget
    setup = build_method(method, model, cfg, lora={"r": 4, "alpha": 8})
    optimizer = setup.optimizer or torch.optim.AdamW([p for p in setup.model.parameters() if p.requires_grad])
    for step in range(steps):
        if setup.controller is not None:
            setup.controller.begin_step(step)
        setup.model(**random_batch(2, 8)).loss.backward()
        grads = gradient_bytes(setup.model)
        optimizer.step()
        if step < steps - 1:
            optimizer.zero_grad(set_to_none=True)
    return setup.model, optimizer, grads


@pytest.mark.parametrize("method", ["full", "galore", "lisa", "ows-fullrank", "ows", "lora"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gradients_and_optimizer_state_equal_what_the_optimizers_hold(method, arch):
    model, optimizer, grads = _trained_model(method, arch)
    est = estimate_memory(tiny_config(arch).to_dict(), method, num_active_layers=2, rank=4, lora_r=4,
                          per_device_train_batch_size=2, max_seq_length=8, sampling_granularity="layer")
    assert est.gradients == grads
    assert est.optimizer_state + est.projectors == optimizer_state_bytes(optimizer)
    assert est.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_frozen_embeddings_and_head_drop_their_gradients_and_state():
    model, optimizer, grads = _trained_model("ows", train_embeddings=False, train_lm_head=False)
    est = estimate_memory(tiny_config("llama").to_dict(), "ows", num_active_layers=2, rank=4,
                          train_embeddings=False, train_lm_head=False, sampling_granularity="layer")
    trained = estimate_memory(tiny_config("llama").to_dict(), "ows", num_active_layers=2, rank=4,
                              sampling_granularity="layer")
    assert est.gradients == grads < trained.gradients
    assert est.optimizer_state + est.projectors == optimizer_state_bytes(optimizer)


@pytest.mark.parametrize("method", ["ows", "lisa", "galore"])
@pytest.mark.parametrize("options", [dict(master_weights=True), dict(outside_optimizer="adamw8bit"),
                                     dict(outside_optimizer="galore"), dict(fused_step=True)])
def test_state_of_each_memory_option_equals_what_the_optimizer_holds(method, options):
    if options.get("outside_optimizer") == "adamw8bit":
        pytest.importorskip("bitsandbytes")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    cfg = OWSConfig(num_active_layers=2, sample_interval=10, rank=4, sampling_strategy="uniform",
                    sampling_granularity="layer", **options)
    setup = build_method(method, model, cfg)
    for step in range(2):
        if setup.controller is not None:
            setup.controller.begin_step(step)
        model(**random_batch(2, 8, vocab=512)).loss.backward()
        setup.optimizer.step()
        setup.optimizer.zero_grad(set_to_none=True)
    est = estimate_memory(config.to_dict(), method, num_active_layers=2, rank=4, dtype="bfloat16",
                          sampling_granularity="layer", **options)
    assert est.optimizer_state + est.projectors == optimizer_state_bytes(setup.optimizer)
    plain = estimate_memory(config.to_dict(), method, num_active_layers=2, rank=4, dtype="bfloat16",
                            outside_optimizer="adamw", sampling_granularity="layer")
    if options.get("fused_step"):
        assert est.gradients < plain.gradients and est.total <= plain.total
    else:
        assert (est.optimizer_state + est.projectors != plain.optimizer_state + plain.projectors)


def test_components_scale_with_dtype_batch_and_options():
    config = tiny_config("llama").to_dict()
    fp32 = estimate_memory(config, "full", per_device_train_batch_size=2, max_seq_length=64)
    bf16 = estimate_memory(config, "full", per_device_train_batch_size=2, max_seq_length=64, dtype="bfloat16")
    assert bf16.weights * 2 == fp32.weights and bf16.optimizer_state * 2 == fp32.optimizer_state
    assert bf16.logits == fp32.logits  # the loss runs in fp32 whatever the weights' dtype
    bigger = estimate_memory(config, "full", per_device_train_batch_size=4, max_seq_length=64)
    assert bigger.activations == 2 * fp32.activations and bigger.logits == 2 * fp32.logits
    checkpointed = estimate_memory(config, "full", per_device_train_batch_size=2, max_seq_length=64,
                                   gradient_checkpointing=True)
    assert checkpointed.activations < fp32.activations / 4
    chunked = estimate_memory(config, "full", per_device_train_batch_size=2, max_seq_length=64, loss_chunk_size=16)
    assert chunked.logits < fp32.logits
    eager = estimate_memory(config, "full", per_device_train_batch_size=2, max_seq_length=64,
                            attn_implementation="eager")
    assert eager.activations > fp32.activations


def test_method_ordering_on_a_7b_config():
    llama7b = dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False)
    est = {m: estimate_memory(llama7b, m, dtype="bfloat16", max_seq_length=512, gradient_checkpointing=True)
           for m in METHODS}
    assert 6.7e9 < est["full"].total_params < 6.8e9  # Llama-2-7B has 6.74 B parameters
    assert est["ows"].total < est["ows-fullrank"].total < est["galore"].total < est["full"].total
    assert est["ows-fullrank"].total == est["lisa"].total
    assert est["lora"].total < est["ows"].total


@pytest.mark.parametrize("kwargs, field", [
    ({"method": "sgd"}, "method='sgd'"), ({"dtype": "int8"}, "dtype='int8'"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size=0"), ({"rank": -1}, "rank=-1"),
    ({"attn_implementation": "flash"}, "attn_implementation='flash'"), ({"loss_chunk_size": -1}, "loss_chunk_size=-1"),
    ({"num_active_layers": 99}, "num_active_layers=99"), ({"device": "tpu"}, "device='tpu'"),
])
def test_bad_input_names_the_field(kwargs, field):
    kwargs = dict({"method": "ows"}, **kwargs)
    with pytest.raises(ValueError, match=field.replace("(", r"\(")):
        estimate_memory(tiny_config("llama").to_dict(), **kwargs)


def test_config_without_sizes_is_a_clear_error():
    with pytest.raises(ValueError, match="hidden_size"):
        estimate_memory({"model_type": "bert"}, "full")


def test_estimate_is_a_plain_serialisable_record():
    est = estimate_memory(tiny_config("qwen2").to_dict(), "ows", num_active_layers=2)
    data = est.to_dict()
    assert data["method"] == "ows" and data["settings"]["peak_phase"] in ("backward start", "inside backward",
                                                                         "optimizer step")
    assert dataclasses.replace(est).total == data["total"]


def test_a_projected_head_gradient_takes_the_full_head_gradient_out_of_the_peak():
    from ows.model_facts import PRESETS

    llama8b = PRESETS["llama-3.1-8b"]
    run = dict(dtype="bfloat16", per_device_train_batch_size=16, max_seq_length=512, gradient_checkpointing=True,
               loss_chunk_size=1024)
    projected, whole = (estimate_memory(llama8b, "ows", project_head_grad=on, **run) for on in (True, False))
    head = 128256 * 4096 * 2
    assert projected.settings["project_head_grad"] and not whole.settings["project_head_grad"]
    assert whole.total - projected.total > 0.9 * head  # the head's gradient is no longer in the peak
    assert projected.total <= estimate_memory(llama8b, "lora", **run).total  # the 8B target: at most LoRA's
    accumulated = estimate_memory(llama8b, "ows", gradient_accumulation_steps=2, **run)
    assert accumulated.total == whole.total  # its refresh steps keep the full gradient through the micro-batches
    for off in (dict(loss_chunk_size=0), dict(fused_step=True), dict(outside_optimizer="adamw")):
        kw = {**run, **off}
        assert estimate_memory(llama8b, "ows", **kw).total == estimate_memory(llama8b, "ows", project_head_grad=False,
                                                                            **kw).total, off
    tied = tiny_config("llama", 2).to_dict() | {"tie_word_embeddings": True}
    assert not estimate_memory(tied, "ows", num_active_layers=1, loss_chunk_size=8).settings["project_head_grad"]
