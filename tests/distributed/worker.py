"""One training run of a tiny Llama with the HF Trainer, under torchrun or in a single process.

``python -m torch.distributed.run --nproc_per_node 2 tests/distributed/worker.py SPEC.json``: every rank
writes ``result-rank{r}.pt`` into ``spec["out"]`` (schedule, losses, full weights, GaLore projectors,
which layers held gradients at each optimizer step). ``run(spec)`` does the same in-process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for conftest

CONFIG = dict(num_active_layers=2, sample_interval=2, sampling_strategy="uniform", rank=4, update_proj_gap=3,
              sampling_granularity="layer")  # whole layers: the DDP layer hooks and FSDP2 are tested here


def dataset(n: int = 64, seq: int = 16) -> list[dict]:
    """Eight distinct learnable patterns, repeated."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 96, (8, seq), generator=g)
    return [{"input_ids": base[i % 8], "attention_mask": torch.ones(seq, dtype=torch.long), "labels": base[i % 8].clone()}
            for i in range(n)]


def _full(t: torch.Tensor) -> torch.Tensor:
    from ows.optim.sharded import is_dtensor

    return (t.full_tensor() if is_dtensor(t) else t).detach().clone()


def run(spec: dict) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    import ows
    from ows import distributed
    from conftest import tiny_model

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    fsdp = spec.get("mode") == "fsdp"
    extra = {}
    if fsdp:
        extra = dict(fsdp="full_shard", fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]})
    args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=spec.get("batch", 2), max_steps=spec.get("steps", 6),
        gradient_accumulation_steps=spec.get("accum", 1), learning_rate=1e-2, logging_steps=1, report_to="none",
        use_cpu=True, seed=0, data_seed=0, train_sampling_strategy="sequential", disable_tqdm=True,
        save_strategy="steps" if spec.get("save_steps") else "no", save_steps=spec.get("save_steps") or 500,
        ddp_backend="gloo" if distributed.world_size() > 1 or "RANK" in os.environ else None, **extra)
    model = tiny_model("llama", layers=spec.get("layers", 6), seed=spec.get("model_seed", 0))
    config = ows.OWSConfig(**{**CONFIG, "seed": spec.get("seed", 0) + spec.get("seed_per_rank", 0) * distributed.rank(),
                              "fused_step": spec.get("fused", False)})
    optimizer, callback = ows.prepare_for_trainer(model, config, lr=1e-2)
    layers = callback.controller.layers
    grads: list[tuple[int, list[int]]] = []

    class GradSpy(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):
            with_grad = [i for i, layer in enumerate(layers) if any(p.grad is not None for p in layer.parameters())]
            grads.append((state.global_step, with_grad))

    trainer = Trainer(model=model, args=args, train_dataset=dataset(), optimizers=(None, None) if fsdp else (optimizer, None),
                      callbacks=[callback, GradSpy()])
    if fsdp:
        trainer.optimizer = optimizer
    ows.attach_trainer(trainer)
    trainer.train(resume_from_checkpoint=spec.get("resume"))
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    projectors = {names[id(p)]: s["projector"].clone() for p, s in optimizer.state.items() if "projector" in s}
    result = {
        "schedule": callback.controller.schedule,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "weights": {n: _full(p) for n, p in trainer.model.named_parameters()},
        "projectors": projectors,
        "grads": grads,
        "layer_grad_reductions": getattr(getattr(model, "_ows_layer_sync", None), "reductions", None),
        "grad_norms": [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h],
        "world_size": distributed.world_size(),
    }
    if spec.get("save_model"):
        state_dict = ows.integrations.hf.full_state_dict(trainer) if fsdp else None
        if distributed.is_main_process():
            trainer.model.save_pretrained(out / "model", state_dict=state_dict)
    torch.save(result, out / f"result-rank{distributed.rank()}.pt")
    return result


def run_plain(spec: dict) -> dict:
    """Plain PyTorch loop; ``spec["mode"] == "fsdp"`` shards with ``ows.distributed.shard_model`` first."""
    import ows
    from ows import distributed
    from conftest import tiny_model

    if "RANK" in os.environ and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    model = tiny_model("llama", layers=spec.get("layers", 6), seed=spec.get("model_seed", 0))
    config = ows.OWSConfig(**{**CONFIG, "seed": spec.get("seed", 0) + spec.get("seed_per_rank", 0) * distributed.rank()})
    layers = ows.find_decoder_layers(model)
    if spec.get("mode") == "fsdp":
        distributed.shard_model(model, layers)
    optimizer, controller = ows.create_ows(model, config, lr=1e-2)
    if spec.get("mode") == "ddp":
        distributed.setup_ddp(model, layers)
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    else:
        wrapped = model
    rows, batch, world, rank = dataset(), spec.get("batch", 2), distributed.world_size(), distributed.rank()
    losses, grads = [], []
    for step in range(spec.get("steps", 6)):
        controller.begin_step(step)
        start = (step * world + rank) * batch
        chunk = rows[start:start + batch]
        inputs = {k: torch.stack([r[k] for r in chunk]) for k in chunk[0]}
        loss = wrapped(**inputs).loss
        loss.backward()
        grads.append((step, [i for i, layer in enumerate(layers) if any(p.grad is not None for p in layer.parameters())]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total = loss.detach().clone()
        if world > 1:
            torch.distributed.all_reduce(total)
        losses.append(total.item() / world)
    result = {"losses": losses, "grads": grads, "weights": {n: _full(p) for n, p in model.named_parameters()},
              "schedule": [(s, controller.sampler.active_layers(s)) for s in range(0, spec.get("steps", 6), 2)],
              "sharded": distributed.is_sharded(model)}
    if spec.get("save_model"):
        weights = result["weights"]
        if distributed.is_main_process():
            model.save_pretrained(out / "model", state_dict=dict(weights))
    torch.save(result, out / f"result-rank{rank}.pt")
    return result


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    from ows import distributed as _distributed

    (run_plain if spec.get("plain") else run)(spec)
    _distributed.shutdown()  # after a finished run only: its barrier would wait for a failed rank
