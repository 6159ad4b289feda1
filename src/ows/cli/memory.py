"""``ows memory``: estimated training memory per method from a model config alone (no weights, no torch)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..estimate import ATTENTIONS, DTYPE_BYTES, METHODS, MemoryEstimate, estimate_memory
from .common import ArgumentParser, UsageError, parse_or_exit_code

logger = logging.getLogger("ows.cli.memory")

# Published config.json values, so that common models need no download (and the demo model no conversion).
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                         tie_word_embeddings=True),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False),
}
PRESETS["SmolLM2-135M-Instruct"] = PRESETS["smollm2-135m"]
COLUMNS = ("weights", "gradients", "optimizer_state", "projectors", "activations", "logits", "total")
HEADERS = ("weights", "grads", "optimizer", "projectors", "activations", "logits", "total")

EPILOG = """examples:
  ows memory smollm2-135m                                  # the demo model, every method, fp32
  ows memory llama-2-7b --dtype bfloat16 --seq-len 512 --gradient-checkpointing --method ows,lora
  ows memory ./my-model --batch-size 8 --chunked-loss --json > memory.json

MODEL is a built-in name (smollm2-135m, llama-2-7b, mistral-7b), a config.json, a local model
folder, or a hub id whose config is in the Hugging Face cache (or downloadable).
Sizes are GiB (2^30 bytes); total is the peak of one step, not the sum of the columns
(see docs/MEMORY.md for every formula).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ows memory``."""
    p = ArgumentParser(
        prog="ows memory",
        description="Estimate the peak training memory of each method (full, LoRA, GaLore, LISA, OWS) from a "
        "model's config alone: weights, gradients, optimizer state, projectors, activations, logits.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="built-in name, config.json, model folder or hub id")
    p.add_argument("--method", default="all", help=f"'all' or a comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--dtype", default="float32", help=f"weights dtype: {', '.join(DTYPE_BYTES)} (default float32)")
    p.add_argument("--batch-size", type=int, default=1, help="sequences per step (default 1)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (default 512)")
    p.add_argument("--num-active-layers", type=int, default=5, metavar="GAMMA",
                   help="layers trained at a time by lisa / ows / ows-fullrank (default 5)")
    p.add_argument("--rank", type=int, default=128, help="GaLore rank for galore / ows (default 128)")
    p.add_argument("--lora-rank", type=int, default=16, help="LoRA r on every linear layer (default 16)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--chunked-loss", action="store_true", help="chunked cross-entropy, as `ows train` uses by default (loss_chunk_size 1024); "
                   "without it: the standard loss of a plain Trainer or PyTorch loop")
    p.add_argument("--loss-chunk-size", type=int, default=1024, help="tokens per loss chunk (default 1024)")
    p.add_argument("--attention", default="sdpa", help=f"attention implementation: {', '.join(ATTENTIONS)}")
    p.add_argument("--no-train-embeddings", action="store_true", help="freeze the input embeddings")
    p.add_argument("--no-train-lm-head", action="store_true", help="freeze the output head")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    return p


def parse_methods(value: str) -> list[str]:
    """The methods named by ``--method`` ('all' = every method); an unknown one is a ``UsageError``."""
    if value.strip() == "all":
        return list(METHODS)
    names = [m.strip() for m in value.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise UsageError(f"--method {value!r} is invalid: use 'all' or a comma-separated subset of {','.join(METHODS)}")
    return names


def _read_json(path: Path, model: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"model {model!r}: cannot read {path} as JSON ({err}): give a valid config.json") from None
    if not isinstance(data, dict):
        raise UsageError(f"model {model!r}: {path} holds no JSON object: give a Hugging Face config.json")
    return data


def _hub_config(model: str) -> dict[str, Any]:
    """A hub id's config: from the local Hugging Face cache, else downloaded (unless offline)."""
    offline_fix = "pass a local model folder, a config.json path, or a built-in name (" + ", ".join(
        n for n in PRESETS if n.islower()) + ")"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise UsageError(f"model {model!r} is not a local path and huggingface_hub is missing: {offline_fix}") from None
    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        return _read_json(Path(cached), model)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise UsageError(f"model {model!r} is not a local path and its config is not in the Hugging Face cache "
                         f"(offline): {offline_fix}")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model).to_dict()
    except (OSError, ValueError) as err:
        logger.debug("AutoConfig failed", exc_info=True)
        raise UsageError(f"model {model!r} is not a local path and its config could not be fetched "
                         f"({str(err).splitlines()[0]}): {offline_fix}") from None


def read_model_config(model: str) -> dict[str, Any]:
    """The config dict of ``model``: a built-in name, a config.json, a model folder or a hub id."""
    if model in PRESETS:
        return dict(PRESETS[model])
    path = Path(model).expanduser()
    if path.is_file():
        return _read_json(path, model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model {model!r} is a folder without config.json: give a Hugging Face model folder "
                             "or a config.json path")
        return _read_json(path / "config.json", model)
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith(".json"):
        raise UsageError(f"model {model!r} does not exist: check the path")
    return _hub_config(model)


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f}"


def format_table(estimates: list[MemoryEstimate]) -> list[str]:
    """One row per method with every component and the peak in GiB."""
    widths = [max(len(h), 8) for h in HEADERS]
    lines = [f"{'method':<13}" + "".join(f"{h:>{w + 2}}" for h, w in zip(HEADERS, widths))]
    for est in estimates:
        cells = "".join(f"{_gib(getattr(est, c)):>{w + 2}}" for c, w in zip(COLUMNS, widths))
        lines.append(f"{est.method:<13}{cells}")
    return lines


def settings_line(args: argparse.Namespace, model_config: dict[str, Any]) -> str:
    """The settings the table was computed for, in one line."""
    loss = f"chunked loss ({args.loss_chunk_size} tokens)" if args.chunked_loss else "standard loss"
    return (f"{args.model}: {model_config.get('model_type', '?')}, {args.dtype}, batch {args.batch_size} x "
            f"{args.seq_len} tokens, gamma={args.num_active_layers}, rank={args.rank}, lora r={args.lora_rank}, "
            f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, {loss}, {args.attention}")


def compute(args: argparse.Namespace, model_config: dict[str, Any], methods: list[str]) -> list[MemoryEstimate]:
    """The estimate of every method; a bad setting is a ``UsageError`` naming the option."""
    try:
        return [estimate_memory(model_config, m, dtype=args.dtype, batch_size=args.batch_size, seq_len=args.seq_len,
                                num_active_layers=args.num_active_layers, rank=args.rank, lora_rank=args.lora_rank,
                                gradient_checkpointing=args.gradient_checkpointing, chunked_loss=args.chunked_loss,
                                loss_chunk_size=args.loss_chunk_size, attention=args.attention,
                                train_embeddings=not args.no_train_embeddings,
                                train_lm_head=not args.no_train_lm_head) for m in methods]
    except ValueError as err:
        message = str(err)
        for field in ("batch_size", "seq_len", "num_active_layers", "rank", "lora_rank", "loss_chunk_size",
                      "dtype", "attention"):
            if message.startswith(f"{field}="):
                message = "--" + field.replace("_", "-") + " " + message[len(field) + 1:]
                break
        raise UsageError(message) from None


def run(argv: list[str]) -> int:
    """Run ``ows memory``; returns the exit code."""
    args = parse_or_exit_code(build_parser(), argv)
    if isinstance(args, int):  # --help
        return args
    methods = parse_methods(args.method)
    model_config = read_model_config(args.model)
    estimates = compute(args, model_config, methods)
    if args.json:
        doc = {"model": args.model, "model_type": model_config.get("model_type"), "unit": "bytes",
               "estimates": [e.to_dict() for e in estimates]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    print(settings_line(args, model_config))
    print("\n".join(format_table(estimates)))
    print(f"GiB; {estimates[0].total_params / 1e6:,.1f} M parameters. Total = peak of one step, not the column sum: "
          "see docs/MEMORY.md")
    return 0
