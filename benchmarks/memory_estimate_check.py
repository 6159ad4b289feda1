#!/usr/bin/env python
"""Check ``ows memory``'s estimate against the measured peak of a few real training steps per method.

"Measured peak" here is the high-water mark of live tensor bytes on the CPU: every tensor storage
that exists when tracking starts (weights, buffers, the batch) plus every storage produced by an
operator while training (a ``TorchDispatchMode`` sees each op's outputs, including backward and
optimizer ops), each counted once and removed when Python frees it. It is the same quantity the
estimate models (weights + gradients + optimizer state + projectors + saved activations + loss
temporaries), without allocator caching, fragmentation or the Python heap. Scratch memory that a
kernel allocates internally (e.g. LAPACK workspace inside an SVD) is not seen. The process peak RSS
minus the RSS right before the model was loaded is shown next to it for information.

Every method runs in its own fresh subprocess: the product's ``ows.methods.build_method``, then
``--steps`` optimizer steps on random tokens (forward with labels, backward, step, zero_grad with
``set_to_none``). The sampling methods (ows, ows-fullrank, lisa) draw whole layers (``--sampling-granularity``)
uniformly here (no
outlier profile is needed for memory; every draw has the same size) and keep one draw for all steps,
so that the optimizer state of the active layers exists during the later steps, as in a real run. LoRA uses ``torch.optim.AdamW``
over its trainable parameters, as the Hugging Face Trainer does by default.

    python benchmarks/memory_estimate_check.py                      # SmolLM2-135M, 6 methods, ~2 min
    python benchmarks/memory_estimate_check.py --seq-len 256 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from ows.choices import DTYPES, FROZEN_QUANTIZATIONS, OUTSIDE_OPTIMIZERS, SVD_METHODS
from ows.methods import get_method

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `bench` package next to this script
from bench.settings import PRODUCT_METHODS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The product's methods: the estimator models them; the peers (registered by bench.peers, here too) it does not.
METHODS = PRODUCT_METHODS
TOLERANCE = 0.15


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model folder, hub id or the demo alias")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per method (the steady-state peak needs >= 2)")
    p.add_argument("--num-active-layers", type=int, default=5, help="gamma for lisa / ows / ows-fullrank")
    p.add_argument("--rank", type=int, default=128, help="GaLore rank")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--chunked-loss", action="store_true", help="ows's chunked cross-entropy (if available)")
    p.add_argument("--loss-chunk-size", type=int, default=1024)
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype of the model")
    p.add_argument("--fused-step", action="store_true", help="OWSConfig.fused_step (updates inside backward)")
    p.add_argument("--master-weights", action="store_true", help="OWSConfig.master_weights (fp32 masters, bf16)")
    p.add_argument("--outside-optimizer", default="adamw", choices=OUTSIDE_OPTIMIZERS,
                   help="OWSConfig.outside_optimizer for the embeddings and head")
    p.add_argument("--svd-method", default="auto", choices=SVD_METHODS, help="OWSConfig.svd_method")
    p.add_argument("--frozen-quantization", default="none", choices=FROZEN_QUANTIZATIONS,
                   help="OWSConfig.frozen_quantization (frozen decoder layers in NF4 / int8; exact weights from the "
                        "model's safetensors)")
    p.add_argument("--sampling-granularity", default="layer", choices=("layer", "module"),
                   help="OWSConfig.sampling_granularity of the sampling methods: layer (the estimate is exact; the "
                        "default here) or module (single weights: the estimate bounds the layers a draw touches)")
    p.add_argument("--untie-head", action="store_true",
                   help="give the model its own output head (a copy of the tied embedding), as Llama-3.1-8B has")
    p.add_argument("--project-head-grad", action="store_true",
                   help="OWSConfig.project_head_grad in the loop (ows train's default; with --outside-optimizer galore, "
                        "--chunked-loss and an untied head), one micro-batch per step")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------
# Child: one method, a few steps, live tensor bytes tracked op by op.
# ----------------------------------------------------------------------------------------------------

def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_tracker() -> Any:
    """A dispatch mode that keeps the current and the peak bytes of live tensor storages."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.weak import WeakIdKeyDictionary

    class LiveTensorBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: Any = WeakIdKeyDictionary()
            self.current = 0
            self.peak = 0

        def _free(self, nbytes: int) -> None:
            self.current -= nbytes

        def track(self, tensors: Any) -> None:
            for t in tensors:
                if not isinstance(t, torch.Tensor) or t.is_meta:
                    continue
                storage = t.untyped_storage()
                if storage in self.live:
                    continue
                nbytes = storage.nbytes()
                self.live[storage] = nbytes
                weakref.finalize(storage, self._free, nbytes)
                self.current += nbytes
            self.peak = max(self.peak, self.current)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            self.track(tree_flatten(out)[0])
            return out

    return LiveTensorBytes()


def child_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec['method']`` for a few steps and return the measured peaks (bytes)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ows.config import OWSConfig
    from ows.memory.measure import peak_rss_bytes
    from ows.methods import build_method
    from ows.loading import load_model, resolve_model_path

    t0 = time.perf_counter()
    torch.manual_seed(0)
    path = resolve_model_path(spec["model"])
    rss_before = _rss_now()
    model = load_model(path, spec["dtype"], quantization=get_method(spec["method"]).base_quantization)
    model.train()
    if spec["untie_head"]:
        model.config.tie_word_embeddings = False
        model.get_output_embeddings().weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    if spec["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec["chunked_loss"]:
        from ows.integrations.chunked_loss import enable_chunked_loss

        enable_chunked_loss(model, spec["loss_chunk_size"])
    method = get_method(spec["method"])
    options = {k: v for k, v in spec["options"].items() if method.serves(k)}
    config = OWSConfig(num_active_layers=spec["num_active_layers"], sample_interval=1000, rank=spec["rank"],
                       sampling_strategy="uniform", svd_method=spec["svd_method"],
                       sampling_granularity=spec["sampling_granularity"], **options)
    setup = build_method(spec["method"], model, config, lora={"r": spec["lora_rank"], "alpha": 2 * spec["lora_rank"]},
                         weights_source=path if config.frozen_quantization != "none" else None)
    model = setup.model
    if setup.controller is not None and spec["gradient_checkpointing"]:
        model.enable_input_require_grads()
    optimizer = setup.optimizer or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if spec["project_head_grad"] and setup.optimizer is not None:
        from ows.optim.head_grad import enable_projected_head_grad

        enable_projected_head_grad(setup.optimizer, model, accumulation_steps=1)
    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (spec["batch_size"], spec["seq_len"]), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    tracker = make_tracker()
    tracker.track(list(model.parameters()) + list(model.buffers()) + list(batch.values()))
    start = time.perf_counter()
    with tracker:
        for step in range(spec["steps"]):
            if setup.controller is not None:
                setup.controller.begin_step(step)
            loss = model(**batch).loss
            loss.backward()
            del loss
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {"method": spec["method"], "peak_tensor_bytes": tracker.peak, "peak_op": getattr(tracker, "peak_op", None),
            "peak_rss_delta_bytes": peak_rss_bytes() - rss_before, "setup_seconds": start - t0,
            "train_seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------------------------------
# Parent: estimates, one child per method, the table.
# ----------------------------------------------------------------------------------------------------

def run_child(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one method in a fresh interpreter; its result is the last line of its stdout."""
    spec = dict(method=method, model=args.model, batch_size=args.batch_size, seq_len=args.seq_len,
                steps=args.steps, num_active_layers=args.num_active_layers, rank=args.rank,
                lora_rank=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing,
                chunked_loss=args.chunked_loss, loss_chunk_size=args.loss_chunk_size, dtype=args.dtype,
                svd_method=args.svd_method, sampling_granularity=args.sampling_granularity, options=options(args),
                untie_head=args.untie_head, project_head_grad=args.project_head_grad)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The OWSConfig memory options of the run (each method takes the ones it serves)."""
    return dict(fused_step=args.fused_step, master_weights=args.master_weights, outside_optimizer=args.outside_optimizer,
                frozen_quantization=args.frozen_quantization)


def estimate(method: str, model_config: dict[str, Any], args: argparse.Namespace) -> Any:
    """The estimator's figures for ``method`` at the benchmark's settings (the children's dtype, on CPU)."""
    from ows.memory.estimate import estimate_memory

    return estimate_memory(model_config, method, dtype=args.dtype, per_device_train_batch_size=args.batch_size,
                           max_seq_length=args.seq_len, num_active_layers=args.num_active_layers, rank=args.rank,
                           lora_r=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing,
                           loss_chunk_size=args.loss_chunk_size if args.chunked_loss else 0, device="cpu",
                           svd_method=args.svd_method, sampling_granularity=args.sampling_granularity,
                           project_head_grad=args.project_head_grad, **options(args))


def command_line(argv: list[str]) -> str:
    return "python benchmarks/memory_estimate_check.py " + " ".join(shlex.quote(a) for a in argv)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: estimate vs measured peak tensor bytes (MiB) per method."""
    lines = ["| method | estimate MiB | measured peak tensors MiB | estimate / measured | peak RSS - RSS before load MiB |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['estimate_bytes'] / 2**20:.0f} | {r['peak_tensor_bytes'] / 2**20:.0f} | "
                     f"{r['ratio']:.3f} | {r['peak_rss_delta_bytes'] / 2**20:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child_main(json.loads(args.child))))
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    from ows.model_facts import read_model_config

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"--methods {unknown[0]!r} is unknown: use some of {','.join(METHODS)}", file=sys.stderr)
        return 2
    model_config = read_model_config(args.model)
    if args.untie_head:
        model_config = dict(model_config, tie_word_embeddings=False)
    command = command_line(argv)
    if not args.json:
        print(f"Command: `{command}`", flush=True)
    rows, start = [], time.perf_counter()
    for method in methods:
        measured = run_child(method, args)
        est = estimate(method, model_config, args)
        rows.append(dict(measured, estimate_bytes=est.total, ratio=est.total / measured["peak_tensor_bytes"],
                         estimate=est.to_dict()))
    seconds = time.perf_counter() - start
    within = all(abs(r["ratio"] - 1) <= TOLERANCE for r in rows)
    if args.json:
        doc = dict(command=command, settings={k: v for k, v in vars(args).items() if k not in ("json", "child")},
                   tolerance=TOLERANCE, within_tolerance=within, seconds=seconds, rows=rows)
        print(json.dumps(doc, indent=2))
    else:
        print(format_table(rows))
        print(f"{len(rows)} methods in {seconds:.0f} s; all within ±{TOLERANCE:.0%}: {'yes' if within else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
