"""One method of ``gpu_memory.py``: a model built from a config on the device, a few training steps, measured.

Run as ``python benchmarks/bench/gpu_child.py SPEC.json`` (``gpu_memory.py`` does, one fresh process per
method so that peaks do not mix). The model gets random weights (nothing is downloaded), is created
directly on the device in the requested dtype, and the method is set up by the product's own
``ows.methods.build_method``; a plain loop then trains on random token ids.

Measurements, written to ``spec['progress']`` after the model is built, after every backward pass,
after every SVD and after every step (so a run stopped by its time limit still reports its peak so far):

- CUDA: ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` over the whole process;
- CPU: the process's peak RSS (``ows.memory.peak_rss_bytes``, includes Python and library overhead);
- both: peak tracked tensor bytes (parameters + gradients + optimizer state) sampled after each
  backward pass and after each optimizer step, per-step wall times, and time inside GaLore's SVDs
  (the optimizer's ``svd_seconds`` / ``svd_calls``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

LLAMA2_7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                 tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu")
TINY = dict(LLAMA2_7B, hidden_size=256, intermediate_size=688, num_hidden_layers=8, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=1024)
SCALES = {"7b": LLAMA2_7B, "tiny": TINY}


def model_config(values: dict[str, Any]) -> Any:
    """A transformers config from a ``config.json``-style dict (``model_type`` picks the class, default llama)."""
    from transformers import AutoConfig

    values = dict(values)
    model_type = values.pop("model_type", "llama")
    for key in ("architectures", "torch_dtype", "dtype", "transformers_version"):
        values.pop(key, None)
    config = AutoConfig.for_model(model_type, **values)
    config.use_cache = False
    return config


def build_model(values: dict[str, Any], device: str, dtype: str, checkpointing: bool, seed: int = 0) -> Any:
    """Random-weight causal LM created on ``device`` in ``dtype`` (no CPU copy on a GPU)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(values), dtype=getattr(torch, dtype))
    if checkpointing:
        # Non-reentrant checkpointing needs no input gradients, so frozen embeddings (LoRA) work too.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


class Meter:
    """Peak memory, step times and SVD time of this process, written to a JSON file as they change."""

    def __init__(self, path: Path, device: str, info: dict[str, Any]) -> None:
        self.path = path
        self.cuda = device.startswith("cuda")
        self.data: dict[str, Any] = dict(info, status="running", steps_done=0, step_seconds=[], svd_seconds=0.0,
                                         svd_calls=0, peak_tracked_bytes=0, peak_grad_bytes=0, peak_state_bytes=0)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def sample(self, model: Any, optimizer: Any) -> None:
        """Record params + grads + optimizer state now, and the process peaks so far."""
        from ows.memory.measure import gradient_bytes, optimizer_state_bytes, tensor_bytes

        params = tensor_bytes(model.parameters())
        grads = gradient_bytes(model)
        state = optimizer_state_bytes(optimizer)
        d = self.data
        d["param_bytes"] = params
        d["peak_grad_bytes"] = max(d["peak_grad_bytes"], grads)
        d["peak_state_bytes"] = max(d["peak_state_bytes"], state)
        d["peak_tracked_bytes"] = max(d["peak_tracked_bytes"], params + grads + state)
        self.write()

    def write(self) -> None:
        from ows.memory.measure import peak_rss_bytes

        d = self.data
        d["peak_rss_bytes"] = peak_rss_bytes()
        if self.cuda:
            d["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            d["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(d, indent=1))
        tmp.replace(self.path)


def _profile(model: Any, spec: dict[str, Any], threshold: float) -> Any:
    """Outlier profile of the random-weight model on random token ids (``ows.profile_outliers``)."""
    from ows.outliers import profile_outliers

    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    batches = [torch.randint(0, vocab, (1, spec["seq_len"]), generator=g) for _ in range(2)]
    return profile_outliers(model, batches, threshold=threshold)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Build, set up ``spec['method']`` through ``build_method``, train warm-up + measured steps; returns the figures."""
    from ows.config import OWSConfig
    from ows.methods import build_method, get_method

    device, method = spec["device"], spec["method"]
    meter = Meter(Path(spec["progress"]), device, {"method": method})
    model = build_model(spec["model_config"], device, spec["dtype"], spec["gradient_checkpointing"])
    meter.write()
    options = {k: v for k, v in spec.get("options", {}).items() if get_method(method).serves(k)}
    config = OWSConfig(num_active_layers=spec["gamma"], sample_interval=spec["interval"], rank=spec["rank"],
                       update_proj_gap=spec["update_proj_gap"], svd_method=spec.get("svd_method", "exact"), **options)
    profile = _profile(model, spec, config.outlier_threshold) if get_method(method).needs_profile(config) else None
    setup = build_method(method, model, config, profile, lr=spec["lr"],
                         lora={"r": spec["lora_r"], "alpha": 2 * spec["lora_r"], "dropout": 0.0})
    model = setup.model
    # LoRA gets no optimizer from build_method (the Trainer makes its AdamW); plain torch AdamW here.
    optimizer = setup.optimizer or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec["lr"])
    g = torch.Generator().manual_seed(2)
    vocab = model.config.vocab_size
    for step in range(spec["warmup"] + spec["steps"]):
        ids = torch.randint(0, vocab, (spec["batch_size"], spec["seq_len"]), generator=g).to(device)
        meter.sync()
        started = time.perf_counter()
        if setup.controller is not None:
            setup.controller.begin_step(step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        meter.sample(model, optimizer)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        meter.sync()
        meter.data["step_seconds"].append(time.perf_counter() - started)
        meter.data["steps_done"] = step + 1
        meter.data["last_loss"] = float(loss)
        # the optimizer's own counters (torch.linalg.svd waits for its result on CUDA: its check reads it back)
        meter.data["svd_seconds"] = float(getattr(optimizer, "svd_seconds", 0.0))
        meter.data["svd_calls"] = int(getattr(optimizer, "svd_calls", 0))
        meter.sample(model, optimizer)
    meter.data["status"] = "ok"
    meter.data["trainable_params_at_end"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    meter.write()
    return meter.data


def main(spec_path: str) -> int:
    """Run the spec's method; exit code 0 on success."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    run(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
