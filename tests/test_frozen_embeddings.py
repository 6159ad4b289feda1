"""A frozen input embedding held in NF4 / int8: row lookups, exact state dicts, the estimate's bytes."""

import pytest
import torch

import ows
from ows import OWSConfig
from ows.memory.estimate import estimate_memory
from conftest import TINY, random_batch

pytest.importorskip("bitsandbytes")
transformers = pytest.importorskip("transformers")
WIDE = dict(TINY, hidden_size=64, num_hidden_layers=4)  # NF4 blocks of 64 values: one block per row


def _model(tied=False, seed=0):
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**WIDE, tie_word_embeddings=tied))


def _ows(model, mode="nf4", train_embeddings=False, source=None):
    config = OWSConfig(num_active_layers=1, sample_interval=2, rank=4, sampling_strategy="uniform",
                       sampling_granularity="layer", frozen_quantization=mode, train_embeddings=train_embeddings,
                       train_lm_head=False)
    return ows.create_ows(model, config, lr=1e-2, weights_source=source)


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_a_lookup_dequantizes_only_its_rows_and_equals_the_whole_tables_rows(mode):
    from ows.frozen import quantize

    model = _model()
    exact = model.get_input_embeddings().weight.detach().clone()
    whole = quantize(exact, mode)
    _, controller = _ows(model, mode)
    held = controller.residency.embedding
    assert held is not None and model.get_input_embeddings().weight.numel() == 0
    ids = torch.tensor([[3, 7, 7, 95], [0, 1, 2, 50]])
    if mode == "nf4":
        from bitsandbytes.functional import dequantize_4bit

        table = dequantize_4bit(whole["packed"], whole["state"])
    else:
        from bitsandbytes.functional import int8_vectorwise_dequant

        table = int8_vectorwise_dequant(whole["codes"], whole["scales"])
    assert torch.equal(model.get_input_embeddings()(ids), table[ids].to(exact.dtype))
    assert (table[ids] - exact[ids]).abs().max() < 0.1 * exact.abs().max()  # a quantization, not garbage
    bytes_fp32 = exact.numel() * 4
    assert held.device_bytes() < (0.2 if mode == "nf4" else 0.3) * bytes_fp32


def test_the_state_dict_and_the_final_model_hold_the_exact_table_and_training_runs():
    model = _model()
    exact = model.get_input_embeddings().weight.detach().clone()
    optimizer, controller = _ows(model)
    losses = []
    for step in range(4):
        controller.begin_step(step)
        loss = model(**random_batch(seed=0)).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert losses[-1] < losses[0]
    name = controller.residency.embedding.name
    assert torch.equal(model.state_dict()[name], exact)
    controller.residency.materialize()
    embedding = model.get_input_embeddings()
    assert torch.equal(embedding.weight, exact) and "forward" not in vars(embedding)


def test_a_tied_or_trained_embedding_stays_in_full_precision():
    _, controller = _ows(_model(tied=True))
    assert controller.residency.embedding is None
    model = _model()
    _, controller = _ows(model, train_embeddings=True)
    assert controller.residency.embedding is None and model.get_input_embeddings().weight.numel() > 0


def test_the_estimate_counts_the_quantized_table_the_model_holds():
    model = _model()
    _, controller = _ows(model)
    controller.begin_step(0)
    held = sum(p.numel() * p.element_size() for p in model.parameters()) + controller.residency.frozen_weight_bytes()
    config = transformers.LlamaConfig(**WIDE, tie_word_embeddings=False).to_dict()
    est = estimate_memory(config, "ows", num_active_layers=1, frozen_quantization="nf4", train_embeddings=False,
                          train_lm_head=False, sampling_granularity="layer")
    assert est.weights == held
    trained = estimate_memory(config, "ows", num_active_layers=1, frozen_quantization="nf4", train_lm_head=False,
                              sampling_granularity="layer")
    assert est.weights < trained.weights


def test_ows_train_resumes_bit_for_bit_with_a_held_embedding_and_saves_the_exact_table(tiny_model_dir, tmp_path):
    import os
    import signal

    from safetensors.torch import load_file

    from ows.cli.train import parse

    class Stop(ows.RunCallback):  # SIGTERM as step 2 begins: a graceful stop saves checkpoint-2
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    def run(out, *extra, callbacks=()):
        argv = ["--model", str(tiny_model_dir), "--dataset", "reasoning-gym:chain_sum",
                "--num_train_examples", "32", "--num_heldout_examples", "4", "--heldout_generate", "0",
                "--max_steps", "4", "--per_device_train_batch_size", "4", "--num_active_layers", "1",
                "--sample_interval", "2", "--rank", "4", "--sampling_strategy", "uniform",
                "--frozen_quantization", "int8", "--train_embeddings", "false", "--train_lm_head", "false",
                "--learning_rate", "1e-2", "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none",
                "--output_dir", str(out), *extra]
        return ows.train(*parse(argv), callbacks=callbacks).status

    assert run(tmp_path / "whole") == "finished"
    assert run(tmp_path / "cut", callbacks=[Stop()]) == "stopped"
    assert run(tmp_path / "cut", "--resume_from_checkpoint", "latest") == "finished"
    whole, cut = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    base = load_file(next(tiny_model_dir.glob("*.safetensors")))
    assert torch.equal(whole["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    assert any(not torch.equal(whole[k], base[k]) for k in whole if ".layers." in k)
