"""One plain-loop DDP run with sampling_strategy gradient, every rank on its own batches (so its local gradients
differ from the other's): ``python -m torch.distributed.run --nproc_per_node 2 gradient_worker.py SPEC.json``
writes ``result-rank{r}.pt`` (the schedule, the sampler state, the weights) into ``spec["out"]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for conftest


def run(spec: dict) -> None:
    import ows
    from ows import distributed
    from conftest import random_batch, tiny_model

    torch.distributed.init_process_group("gloo")
    model = tiny_model("llama", layers=6)
    config = ows.OWSConfig(num_active_layers=2, sample_interval=1, sampling_strategy="gradient", rank=4,
                           update_proj_gap=3, sampling_granularity=spec["granularity"], fused_step=spec["fused"])
    optimizer, controller = ows.create_ows(model, config, lr=1e-2)
    wrapped = model
    if spec.get("ddp", True):  # else every rank trains its own replica: only the sampler's all-reduce joins them
        distributed.setup_ddp(model, controller.layers, optimizer.fused)
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    rank = distributed.rank()
    for step in range(spec["steps"]):
        controller.begin_step(step)
        wrapped(**random_batch(seed=1000 * rank + step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    result = {"schedule": controller.schedule, "state": controller.sampler.state_dict(),
              "weights": {n: p.detach().clone() for n, p in model.named_parameters()}}
    torch.save(result, Path(spec["out"]) / f"result-rank{rank}.pt")
    del wrapped
    distributed.shutdown()


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
