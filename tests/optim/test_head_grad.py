"""The head's gradient summed projected by the chunked loss: the same training as from the full gradient."""

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import Trainer, TrainingArguments  # noqa: E402

import ows  # noqa: E402
from conftest import random_batch, tiny_model  # noqa: E402
from ows.integrations.chunked_loss import enable_chunked_loss  # noqa: E402
from ows.optim.head_grad import enable_projected_head_grad, projected_grad  # noqa: E402

CONFIG = dict(num_active_layers=2, sample_interval=3, rank=4, update_proj_gap=3, sampling_granularity="layer")


def rows(n=24, seq=16):
    return [{k: v[0] for k, v in random_batch(1, seq, seed=i).items()} for i in range(n)]


def train(tmp_path, project, steps=8, **kw):
    model = tiny_model("llama", layers=4)
    enable_chunked_loss(model, 8)  # several chunks per batch
    optimizer, callback = ows.prepare_for_trainer(model, ows.OWSConfig(**CONFIG, project_head_grad=project), lr=1e-2)
    args = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=steps, learning_rate=1e-2,
                save_strategy="no", report_to="none", use_cpu=True, seed=0, max_grad_norm=0.0, disable_tqdm=True)
    trainer = Trainer(model=model, args=TrainingArguments(**{**args, **kw}), train_dataset=rows(),
                      optimizers=(optimizer, None), callbacks=[callback])
    ows.attach_trainer(trainer)
    trainer.train()
    return model, optimizer


@pytest.mark.parametrize("accumulation", [1, 2])
def test_training_with_the_projected_head_gradient_equals_training_with_the_full_one(tmp_path, accumulation):
    kw = dict(gradient_accumulation_steps=accumulation, per_device_train_batch_size=4 // accumulation)
    whole, whole_opt = train(tmp_path / "a", False, **kw)
    projected, projected_opt = train(tmp_path / "b", True, **kw)
    assert projected_grad(projected.lm_head.weight) is not None and projected_grad(whole.lm_head.weight) is None
    assert projected_opt.svd_calls == whole_opt.svd_calls  # the same projectors, refreshed at the same steps
    assert not torch.equal(projected.lm_head.weight, tiny_model("llama", layers=4).lm_head.weight)  # it trained
    for (name, a), b in zip(whole.named_parameters(), projected.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_the_full_head_gradient_never_reaches_weight_grad(tmp_path):
    model = tiny_model("llama", layers=4)
    enable_chunked_loss(model, 8)
    optimizer, controller = ows.create_ows(model, ows.OWSConfig(**CONFIG), lr=1e-2)
    head = enable_projected_head_grad(optimizer, model, accumulation_steps=1)
    model.train()
    modes = []
    for step in range(4):
        controller.begin_step(step)
        modes.append(head.mode())
        model(**random_batch(4, 16, seed=step)).loss.backward()
        assert model.lm_head.weight.grad is None and head.low is not None and head.low.shape == (96, 4)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert head.low is None  # taken by the step
    assert modes == ["refresh", "projected", "projected", "refresh"]  # update_proj_gap 3


def test_the_trainers_clipping_counts_and_scales_the_projected_gradient(tmp_path):
    model = tiny_model("llama", layers=4)
    enable_chunked_loss(model, 8)
    optimizer, callback = ows.prepare_for_trainer(model, ows.OWSConfig(**CONFIG), lr=1e-2)
    args = TrainingArguments(output_dir=str(tmp_path), max_grad_norm=1e-3, report_to="none", use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows(), optimizers=(optimizer, None), callbacks=[callback])
    ows.attach_trainer(trainer)
    callback.controller.begin_step(0)
    model.train()
    model(**random_batch(4, 16)).loss.backward()
    head = projected_grad(model.lm_head.weight)
    low = head.low.clone()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    expected = torch.sqrt(sum(g.pow(2).sum() for g in grads) + low.pow(2).sum())
    norm = trainer._clip_grad_norm(model)
    torch.testing.assert_close(norm, expected)
    torch.testing.assert_close(head.low, low * (1e-3 / (expected + 1e-6)))
    assert trainer._get_grad_norm(model, norm) is norm


def test_a_head_that_cannot_keep_its_gradient_projected_keeps_it_whole(caplog):
    caplog.set_level(logging.INFO, logger="ows.optim.head_grad")
    tied = tiny_model("llama", layers=2)
    tied.lm_head.weight = tied.model.embed_tokens.weight
    optimizer, _ = ows.create_ows(tied, ows.OWSConfig(**CONFIG), lr=1e-2)
    assert enable_projected_head_grad(optimizer, tied, 1) is None and "a tied head" in caplog.text
    model = tiny_model("llama", layers=2)
    optimizer, _ = ows.create_ows(model, ows.OWSConfig(**CONFIG), lr=1e-2)
    assert enable_projected_head_grad(optimizer, model, 1, distributed=True) is None
    assert "several processes" in caplog.text
    assert enable_projected_head_grad(optimizer, model, 1, grad_scaler=True) is None
    assert "fp16's grad scaler" in caplog.text
    fused, _ = ows.create_ows(model, ows.OWSConfig(**CONFIG, fused_step=True), lr=1e-2)
    assert enable_projected_head_grad(fused, model, 1) is None and "fused_step" in caplog.text
    for off in (dict(project_head_grad=False), dict(outside_optimizer="adamw")):  # not asked for: nothing said
        optimizer, _ = ows.create_ows(model, ows.OWSConfig(**CONFIG, **off), lr=1e-2)
        assert enable_projected_head_grad(optimizer, model, 1) is None
