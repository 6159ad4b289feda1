"""enable_chunked_loss: same training loss and gradients as the model's own loss, fallbacks, Trainer path."""

from __future__ import annotations

import pytest
import torch

from ows.integrations.chunked_loss import chunked_lm_loss, enable_chunked_loss
from tests.conftest import random_batch, tiny_model


def _loss_and_grads(model, batch, **extra):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**batch, **extra)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_training_loss_and_gradients_equal_the_standard_loss(arch):
    batch = random_batch(batch=3, seq=12)
    batch["labels"][:, :5] = -100  # a masked prompt, as in instruction tuning
    reference_out, reference = _loss_and_grads(tiny_model(arch), batch)
    model = tiny_model(arch)
    assert enable_chunked_loss(model, chunk_size=7)
    out, grads = _loss_and_grads(model, batch)
    assert out.logits is None  # the full logits were never built
    torch.testing.assert_close(out.loss, reference_out.loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == reference.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_num_items_in_batch_divides_the_sum_like_the_standard_loss():
    batch = random_batch(batch=2, seq=10)
    model = tiny_model()
    standard = model(**batch, num_items_in_batch=torch.tensor(40)).loss
    chunked = chunked_lm_loss(model, batch["labels"], 4, input_ids=batch["input_ids"],
                              attention_mask=batch["attention_mask"], num_items_in_batch=torch.tensor(40))
    torch.testing.assert_close(chunked, standard, rtol=1e-5, atol=1e-6)


def test_eval_generation_and_label_free_calls_keep_the_logits():
    model = tiny_model()
    enable_chunked_loss(model, chunk_size=4)
    batch = random_batch(batch=1, seq=6)
    model.eval()
    assert model(**batch).logits is not None
    model.train()
    assert model(input_ids=batch["input_ids"]).logits.shape == (1, 6, 96)
    generated = model.eval().generate(batch["input_ids"], max_new_tokens=2, do_sample=False)
    assert generated.shape == (1, 8)


def test_a_head_that_is_more_than_a_linear_layer_keeps_the_standard_loss(caplog):
    transformers = pytest.importorskip("transformers")
    config = transformers.Gemma2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                       final_logit_softcapping=2.0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).float()
    with caplog.at_level("WARNING"):
        assert not enable_chunked_loss(model)
    assert "keeping the standard loss" in caplog.text
    model.train()
    assert model(**random_batch(batch=1, seq=6)).logits is not None


def test_bad_chunk_size_names_the_field():
    with pytest.raises(ValueError, match="loss_chunk_size=0"):
        enable_chunked_loss(tiny_model(), chunk_size=0)


def test_trainer_losses_match_with_and_without_chunked_loss(tmp_path):
    transformers = pytest.importorskip("transformers")
    data = [{k: v[0] for k, v in random_batch(batch=1, seq=12, seed=i).items()} for i in range(8)]

    def train(chunked: bool) -> list[float]:
        model = tiny_model()
        if chunked:
            enable_chunked_loss(model, chunk_size=5)
        args = transformers.TrainingArguments(str(tmp_path / str(chunked)), per_device_train_batch_size=2,
                                              gradient_accumulation_steps=2, max_steps=3, logging_steps=1,
                                              learning_rate=1e-2, report_to="none", save_strategy="no",
                                              use_cpu=True, seed=0, disable_tqdm=True)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
        trainer.train()
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    standard, chunked = train(False), train(True)
    assert len(standard) == 3
    assert chunked == pytest.approx(standard, rel=1e-4)


def test_the_probe_catches_logits_changed_outside_the_head():
    from transformers.modeling_outputs import CausalLMOutputWithPast

    model = tiny_model()
    original = model.forward

    def scaled(**kwargs):
        labels = kwargs.pop("labels", None)
        logits = original(**kwargs).logits * 3.0
        loss = None if labels is None else model.loss_function(logits=logits, labels=labels, vocab_size=96)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    model.forward = scaled
    assert not enable_chunked_loss(model)
