"""Command-line options shared by ``compare_methods.py`` and ``tune_lr.py``."""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path
from typing import Any

from .settings import METHODS, PRODUCT_METHODS

RESULTS = Path(__file__).resolve().parents[1] / "results"


def build_parser(description: str, quick_flag: bool = True) -> argparse.ArgumentParser:
    """Options of one comparison: methods, seeds, data, sizes, method settings, output folder.

    A setting that is an ``ows train`` field takes that field's name (``--num_active_layers``,
    ``--learning_rate``, ...); the earlier spellings (``--gamma``, ``--lr``, ...) still work, so the commands
    recorded with the results still run."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if quick_flag:
        p.add_argument("--quick", action="store_true", help="1 seed, 30 steps, batch 8, 50 generated answers")
    p.add_argument("--methods", default=",".join(PRODUCT_METHODS),
                   help="comma-separated rows: the product's methods, or any of " + ",".join(METHODS))
    p.add_argument("--seeds", default=None, help="comma-separated seeds (quick: 0; full: 0,1,2)")
    p.add_argument("--max_steps", "--steps", dest="steps",
                   type=int, default=None, help="optimizer steps (quick 30, full 200)")
    p.add_argument("--per_device_train_batch_size", "--batch-size", dest="batch_size",
                   type=int, default=None, help="per-step batch (quick 8, full 16)")
    p.add_argument("--model", default="smollm2-135m", help="model for ows train (a folder or smollm2-135m)")
    p.add_argument("--dataset", default="reasoning-gym:chain_sum,basic_arithmetic")
    p.add_argument("--dataset_seed", "--dataset-seed", dest="dataset_seed", type=int, default=1)
    p.add_argument("--heldout_seed", "--heldout-seed", dest="heldout_seed", type=int, default=100000)
    p.add_argument("--num_heldout_examples", "--num-heldout", dest="num_heldout",
                   type=int, default=None, help="held-out items for the answer loss (300)")
    p.add_argument("--heldout_generate", "--heldout-generate", dest="heldout_generate",
                   type=int, default=None, help="held-out items answered by generation")
    p.add_argument("--max_seq_length", "--max-seq-length", dest="max_seq_length", type=int, default=128)
    p.add_argument("--forgetting-samples", type=int, default=None, help="windows of gensim text for perplexity")
    p.add_argument("--forgetting-seq-len", type=int, default=None, help="tokens per forgetting window")
    p.add_argument("--calibration_samples", "--calibration-samples", dest="calibration_samples",
                   type=int, default=16, help="windows for the outlier profile")
    p.add_argument("--calibration_seq_len", "--calibration-seq-len", dest="calibration_seq_len", type=int,
                   default=256)
    p.add_argument("--num_active_layers", "--gamma", dest="gamma",
                   type=int, default=2, help="active layers for lisa / ows-fullrank / ows")
    p.add_argument("--sample_interval", "--interval", dest="interval",
                   type=int, default=10, help="K, steps between layer draws")
    p.add_argument("--rank", type=int, default=128, help="GaLore rank for galore / ows")
    p.add_argument("--update_proj_gap", "--update-proj-gap", dest="update_proj_gap", type=int, default=100)
    p.add_argument("--lora_r", "--lora-r", dest="lora_r", type=int, default=16)
    p.add_argument("--warmup_steps", "--warmup-steps", dest="warmup_steps",
                   type=int, default=None, help="default: ~8%% of steps")
    p.add_argument("--learning_rate", "--lr", dest="lr",
                   type=float, default=None, help="one learning rate for every row (default: each row's "
                   "tuned rate, bench/settings.py)")
    return p


def finish_args(p: argparse.ArgumentParser, args: argparse.Namespace, preset: dict[str, Any],
                folder_suffix: str = "") -> argparse.Namespace:
    """Fill unset options from ``preset``, parse the method list, default warm-up and output folder."""
    for key, value in preset.items():
        if key == "seeds":
            args.seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(value)
        elif getattr(args, key) is None:
            setattr(args, key, value)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method {unknown[0]!r}: use {', '.join(METHODS)}")
    if args.warmup_steps is None:
        args.warmup_steps = max(1, round(0.08 * args.steps))
    if args.output_dir is None:
        args.output_dir = str(RESULTS / (_dt.date.today().isoformat() + folder_suffix))
    return args
