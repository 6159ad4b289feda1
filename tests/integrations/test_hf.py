import re

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

import ows  # noqa: E402
from ows import OWSConfig, find_decoder_layers  # noqa: E402
from conftest import tiny_model  # noqa: E402


def dataset(n=32, seq=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 96, (4, seq), generator=g)  # 4 patterns repeated: learnable
    rows = []
    for i in range(n):
        ids = base[i % 4]
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return rows


def args(tmp_path, **kw):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=30,
                    learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none",
                    use_cpu=True, seed=0, data_seed=0, lr_scheduler_type="linear", disable_tqdm=True)
    defaults.update(kw)
    return TrainingArguments(**defaults)


CHECKPOINTING_ARG = ("activation_checkpointing" if hasattr(TrainingArguments, "activation_checkpointing")
                     else "gradient_checkpointing")
CONFIG = dict(num_active_layers=2, sample_interval=3, sampling_strategy="uniform", rank=4, update_proj_gap=5,
              outside_optimizer="adamw", sampling_granularity="layer")  # the tiny model's 32-wide head learns fast only with full moments


def make_trainer(tmp_path, model=None, config=None, rows=32, **kw):
    model = model or tiny_model("llama", layers=6)
    optimizer, callback = ows.prepare_for_trainer(model, OWSConfig(**(config or CONFIG)), lr=1e-2)
    trainer = Trainer(model=model, args=args(tmp_path, **kw), train_dataset=dataset(rows),
                      optimizers=(optimizer, None), callbacks=[callback])
    return trainer, callback


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_trainer_run_loss_falls_and_scheduler_works(tmp_path):
    trainer, callback = make_trainer(tmp_path)
    trainer.train()
    curve = losses(trainer)
    assert len(curve) == 30
    assert sum(curve[-5:]) / 5 < 0.7 * sum(curve[:5]) / 5
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert lrs[0] > lrs[len(lrs) // 2] > lrs[-1]  # linear decay from TrainingArguments applied
    assert [step for step, _ in callback.controller.schedule] == list(range(0, 30, 3))


class ActiveSpy(TrainerCallback):
    """Records, for every micro-batch forward, the optimizer step and the trainable layers."""

    def __init__(self, model, trainer_ref):
        self.records = []
        layers = find_decoder_layers(model)

        def hook(module, inputs):
            active = tuple(i for i, layer in enumerate(layers) if layer.self_attn.q_proj.weight.requires_grad)
            self.records.append((trainer_ref[0].state.global_step, active))

        model.register_forward_pre_hook(hook)


def test_gradient_accumulation_resamples_on_optimizer_steps_only(tmp_path):
    model = tiny_model("llama", layers=6)
    trainer, callback = make_trainer(tmp_path, model=model, max_steps=8, gradient_accumulation_steps=3,
                                     per_device_train_batch_size=2, rows=48)
    ref = [trainer]
    spy = ActiveSpy(model, ref)
    trainer.train()
    sampler = callback.controller.sampler
    assert len(spy.records) == 8 * 3
    for step, active in spy.records:
        assert active == sampler.active_layers(step)
    assert [s for s, _ in callback.controller.schedule] == [0, 3, 6]


def test_gradient_checkpointing_with_frozen_embeddings(tmp_path):
    model = tiny_model("llama", layers=6)
    config = dict(CONFIG, train_embeddings=False, train_lm_head=False, train_final_norm=False)
    layers = find_decoder_layers(model)
    before = [layer.self_attn.q_proj.weight.detach().clone() for layer in layers]
    embed = model.model.embed_tokens.weight.detach().clone()
    checkpointing = {CHECKPOINTING_ARG: True}
    trainer, callback = make_trainer(tmp_path, model=model, config=config, max_steps=6, **checkpointing)
    trainer.train()
    visited = {i for _, active in callback.controller.schedule for i in active}
    for i, layer in enumerate(layers):
        assert (not torch.equal(before[i], layer.self_attn.q_proj.weight)) == (i in visited)
    assert torch.equal(embed, model.model.embed_tokens.weight)
    assert model.is_gradient_checkpointing


def test_resume_continues_the_same_schedule_and_weights(tmp_path):
    full, _ = make_trainer(tmp_path / "a", max_steps=12)
    full.train()
    part, _ = make_trainer(tmp_path / "b", max_steps=12, save_strategy="steps", save_steps=7)
    part.train()
    resumed, callback = make_trainer(tmp_path / "b", max_steps=12, model=tiny_model("llama", layers=6, seed=5))
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-7"))
    assert callback.controller.schedule[0] == (7, callback.controller.sampler.active_layers(7))
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_active_layers_are_logged(tmp_path, caplog):
    trainer, _ = make_trainer(tmp_path, max_steps=4)
    with caplog.at_level("INFO", logger="ows"):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if "active decoder layers" in r.getMessage()]
    assert re.match(r"step 0: active decoder layers \d+(-\d+)?(,\d+(-\d+)?)*( \(|;|$)", lines[0]) and len(lines) == 2


def test_trl_sft_trainer(tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(94)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    texts = [" ".join(f"w{(i * k) % 94}" for k in range(12)) for i in range(4)] * 8
    model = tiny_model("llama", layers=6)
    model.config.pad_token_id, model.config.eos_token_id = 0, 1
    optimizer, callback = ows.prepare_for_trainer(model, OWSConfig(**CONFIG), lr=1e-2)
    sft_args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=12, per_device_train_batch_size=4,
                             learning_rate=1e-2, logging_steps=1, report_to="none", use_cpu=True,
                             save_strategy="no", disable_tqdm=True, max_length=16)
    trainer = trl.SFTTrainer(model=model, args=sft_args, train_dataset=datasets.Dataset.from_dict({"text": texts}),
                             processing_class=tokenizer, optimizers=(optimizer, None), callbacks=[callback])
    trainer.train()
    curve = losses(trainer)
    assert curve[-1] < curve[0]
    assert [s for s, _ in callback.controller.schedule] == [0, 3, 6, 9]


def test_attached_trainer_leaves_tied_weights_out_of_the_missing_keys_warning(tmp_path):
    from collections import namedtuple

    model = tiny_model("llama", layers=2)
    model.lm_head.weight = model.model.embed_tokens.weight  # tied: saved once, under the embedding's name
    trainer, _ = make_trainer(tmp_path, model=model, max_steps=1)
    warned = []
    trainer._issue_warnings_after_load = warned.append  # what transformers would log
    ows.attach_trainer(trainer)
    keys = namedtuple("Keys", "missing_keys unexpected_keys")
    trainer._issue_warnings_after_load(keys(["lm_head.weight", "model.norm.weight"], []))
    assert warned == [keys(["model.norm.weight"], [])]  # a truly missing key is still said
