"""``ows memory``: estimated training memory per method from a model config alone (no weights, no torch)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..choices import OWS_DEFAULTS
from ..config import OWSConfig
from ..memory.estimate import MemoryEstimate, estimate_memory
from ..methods import method_names
from ..model_facts import PRESETS, read_model_config
from ..recipe import budget
from ..recipe.arguments import resolve_dtype
from .arguments import MEMORY_WITHOUT_FILE, MemoryArguments, ScriptArguments
from .common import ArgumentParser, UsageError
from .options import FieldSet, Parsed, in_user_terms, instantiate, parse_command

logger = logging.getLogger("ows.cli.memory")

COLUMNS = ("weights", "gradients", "optimizer_state", "projectors", "activations", "logits", "total")
HEADERS = ("weights", "grads", "optimizer", "projectors", "activations", "logits", "total")

EPILOG = """examples:
  ows memory smollm2-135m                                  # the demo model, every method, fp32
  ows memory llama-2-7b --dtype bfloat16 --max_seq_length 512 --gradient_checkpointing --methods ows,lora
  ows memory configs/llama2-7b-commonsense.yaml            # the run `ows train` makes of that file
  ows memory ./my-model --per_device_train_batch_size 8 --json > memory.json

Without a config file: batch 1 and the model's standard loss (a plain Trainer or PyTorch loop) unless
given; with one: ows train's defaults (TrainingArguments' batch 8, chunked loss of 1024 tokens).
Older spellings still work: --method, --batch-size, --seq-len, --num-active-layers, --lora-rank,
--gradient-checkpointing, --chunked-loss, --loss-chunk-size, --no-train-embeddings, --no-train-lm-head;
and --fused-step, --master-weights, --outside-optimizer, --svd-method. A method that cannot serve
an option (lora: none of them; full: only the fused step) is estimated without it.

MODEL is a built-in name (smollm2-135m, llama-2-7b, mistral-7b), a config.json, a local model
folder, or a hub id whose config is in the Hugging Face cache (or downloadable).
Sizes are GiB (2^30 bytes); total is the peak of one step, not the sum of the columns
(see docs/MEMORY.md for every formula).
"""


SCRIPT_FIELDS = ("model", "dtype", "max_seq_length", "lora_r", "loss_chunk_size", "max_memory", "memory_headroom")
ALIASES = {"--method": ("methods", None), "--batch-size": ("per_device_train_batch_size", None),
           "--seq-len": ("max_seq_length", None), "--num-active-layers": ("num_active_layers", None),
           "--lora-rank": ("lora_r", None), "--gradient-checkpointing": ("gradient_checkpointing", None),
           "--loss-chunk-size": ("loss_chunk_size", None), "--chunked-loss": ("loss_chunk_size", 1024),
           "--no-train-embeddings": ("train_embeddings", False), "--no-train-lm-head": ("train_lm_head", False),
           "--fused-step": ("fused_step", None), "--master-weights": ("master_weights", None),
           "--outside-optimizer": ("outside_optimizer", None), "--svd-method": ("svd_method", None),
           "--frozen-quantization": ("frozen_quantization", None), "--max-memory": ("max_memory", None),
           "--attention": ("attn_implementation", None)}


@dataclass
class MemorySettings:
    """Everything one ``ows memory`` estimates with."""

    script: ScriptArguments
    config: OWSConfig
    options: MemoryArguments
    parsed: Parsed
    dtype_why: str = ""  # " (auto: ...)": how dtype auto was resolved

    @property
    def chunked(self) -> bool:
        return self.script.loss_chunk_size > 0


def parse(argv: list[str]) -> MemorySettings | int:
    """The settings of one ``ows memory`` (or argparse's exit code for --help)."""
    parser = ArgumentParser(
        prog="ows memory", usage="ows memory [CONFIG.yaml] [MODEL] [--field value ...]", epilog=EPILOG,
        description="Estimate the peak training memory of each method (full, LoRA, GaLore, LISA, OWS) from a "
        "model's config alone: weights, gradients, optimizer state, projectors, activations, logits.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fields = FieldSet([(ScriptArguments, "model, dtype and loss", SCRIPT_FIELDS), (OWSConfig, "OWS", budget.OWS_FIELDS),
                       (MemoryArguments, "estimate", None)])
    parsed = parse_command(parser, fields, argv, aliases=ALIASES, defaults_without_file=lambda _: MEMORY_WITHOUT_FILE)
    if isinstance(parsed, int):
        return parsed
    settings = MemorySettings(instantiate(ScriptArguments, parsed.values(ScriptArguments), parsed),
                              instantiate(OWSConfig, parsed.values(OWSConfig), parsed),
                              instantiate(MemoryArguments, parsed.values(MemoryArguments), parsed), parsed)
    if settings.script.model is None:
        raise UsageError("model is not set: give MODEL, --model or `model:` in the config file")
    if settings.script.loss_chunk_size < 0:
        raise UsageError(f"{parsed.spelling('loss_chunk_size')} {settings.script.loss_chunk_size} is invalid: use 0 "
                         "(the standard loss) or a positive number of tokens")
    return settings


def parse_methods(value: str, spelling: str = "--methods") -> list[str]:
    """The methods named by ``methods`` ('all' = every method); an unknown one is a ``UsageError``."""
    if value.strip() == "all":
        return list(method_names())
    names = [m.strip() for m in value.split(",") if m.strip()]
    bad = [m for m in names if m not in method_names()]
    if bad or not names:
        raise UsageError(f"{spelling} {value!r} is invalid: use 'all' or a comma-separated subset of "
                         f"{','.join(method_names())}")
    return names


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


def settings_line(m: MemorySettings, model_config: dict[str, Any]) -> str:
    """The settings the table was computed for, in one line."""
    s, c, o = m.script, m.config, m.options
    loss = f"chunked loss ({s.loss_chunk_size} tokens)" if m.chunked else "standard loss"
    extras = [name for name, on in (("fused step", c.fused_step), ("fp32 masters", c.master_weights)) if on]
    extras += [e for e, on in (("frozen embeddings", not c.train_embeddings), ("frozen head", not c.train_lm_head)) if on]
    extras += [f"outside: {c.outside_optimizer or 'each method default (ows: ' + OWS_DEFAULTS['outside_optimizer'] + ')'}"]
    extras += [f"svd: {c.svd_method}"] if c.svd_method != "auto" else []
    extras += [f"frozen layers: {c.frozen_quantization}"] if c.frozen_quantization != "none" else []
    return (f"{s.model}: {model_config.get('model_type', '?')}, {s.dtype}{m.dtype_why}, batch {o.per_device_train_batch_size} x "
            f"{s.max_seq_length} tokens, gamma={c.num_active_layers}, rank={c.rank}, lora r={s.lora_r}, "
            f"gradient checkpointing {'on' if o.gradient_checkpointing else 'off'}, {loss}, {o.attn_implementation}"
            + "".join(f", {e}" for e in extras))


def compute(m: MemorySettings, model_config: dict[str, Any], methods: list[str],
            plans: dict[str, Any] | None = None) -> list[MemoryEstimate]:
    """The estimate of every method (each at its own memory plan, stored in ``plans``, when ``max_memory`` is
    set); a bad setting is a ``UsageError`` naming the field as given."""
    from ..recipe.budget import estimate_settings, plan

    o = m.options
    training = {"per_device_train_batch_size": o.per_device_train_batch_size,
                "gradient_checkpointing": o.gradient_checkpointing,
                "gradient_accumulation_steps": o.gradient_accumulation_steps}
    settings = estimate_settings(m.script, m.config, training, o.attn_implementation, device="cuda")
    estimates = []
    try:
        for method in methods:
            chosen = settings
            if m.script.max_memory:
                budget_plan = plan(model_config, method, m.script.max_memory, settings, frozenset(m.parsed.spelled),
                                   m.script.memory_headroom)
                if plans is not None:
                    plans[method] = budget_plan
                chosen = budget_plan.settings
            estimates.append(estimate_memory(model_config, method, **chosen))
    except ValueError as err:
        raise UsageError(in_user_terms(str(err), m.parsed)) from None
    return estimates


def run(argv: list[str]) -> int:
    """Run ``ows memory``; returns the exit code."""
    settings = parse(argv)
    if isinstance(settings, int):  # --help
        return settings
    methods = parse_methods(settings.options.methods, settings.parsed.spelling("methods"))
    model_config = read_model_config(settings.script.model)
    settings.script.dtype, why = resolve_dtype(settings.script.dtype, model_config, gpu=True, gpu_bf16=True)
    settings.dtype_why = f" ({why})" if why.startswith("auto") else ""  # as ows train would on a bf16 GPU
    plans: dict[str, Any] = {}
    estimates = compute(settings, model_config, methods, plans)
    if settings.options.json:
        doc = {"model": settings.script.model, "model_type": model_config.get("model_type"), "unit": "bytes",
               "dtype": settings.script.dtype, "dtype_why": settings.dtype_why.strip(" ()"),
               "estimates": [e.to_dict() for e in estimates]}
        if plans:
            doc["plans"] = {m: {"budget": p.budget, "total": p.total, "fits": p.fits, "settings": p.settings,
                                "steps": [vars(step) for step in p.steps]} for m, p in plans.items()}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    for method, budget_plan in plans.items():
        print(f"{method}: memory plan for max_memory={settings.script.max_memory}:\n" + "\n".join(budget_plan.lines()))
    print(("settings before the plans: " if plans else "") + settings_line(settings, model_config))
    print("\n".join(format_table(estimates)))
    print(f"GiB; {estimates[0].total_params / 1e6:,.1f} M parameters. Total = peak of one step, not the column sum: "
          "see docs/MEMORY.md")
    return 0
