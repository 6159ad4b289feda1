#!/usr/bin/env python
"""LLaMA-Factory itself (``llamafactory-cli train``) on compare_methods' quick work, scored by ows's evaluation.

One run of LLaMA-Factory's BAdam (layer-wise ``BlockOptimizer``, its ``badam_*`` options) on the same
reasoning-gym training items, steps, batch, learning rate and schedule as ``compare_methods.py --quick``,
then the saved model is scored here exactly as ``compare_methods.py`` scores its rows: held-out answer
loss on the same items, exact match, news-text perplexity. LLaMA-Factory needs its own environment
(its pins differ from ows's): give its interpreter with ``--python``.

    python -m venv /tmp/lf && /tmp/lf/bin/pip install "torch==2.13.0" llamafactory "badam>=1.2.1"
    /tmp/lf/bin/pip uninstall -y torchvision torchaudio
    python benchmarks/llamafactory_run.py --python /tmp/lf/bin/python

On CPU torch 2.13.0 the torchvision and torchaudio wheels pip picks for LLaMA-Factory do not load
(``operator torchvision::nms does not exist``; ``Could not load this library: .../_torchaudio.so``) and
LLaMA-Factory 0.9.5 imports torchaudio unconditionally. Uninstall torchvision; ``--stub-torchaudio``
(default on) puts an empty ``torchaudio`` module first on its path (only its audio inputs use it).
Its ``.json`` configs fail to load (``json.load`` of a ``Path``), so the config is written as
``train.yaml`` (JSON text, which YAML reads). What is not the same as our rows: LLaMA-Factory's data
order and collation (its ``empty`` template renders exactly our prompt + completion + end token), and the
memory here is the child's peak RSS only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `bench` package next to this script

from bench.settings import LEARNING_RATES, QUICK

LOSS_LINE = re.compile(r"\{'loss': '?([0-9.]+)'?")


def alpaca_rows(records: list[dict[str, Any]], eos_token: str) -> list[dict[str, str]]:
    """ows prompt/completion records as LLaMA-Factory's alpaca rows.

    The ``empty`` template adds nothing, not even the end token that ows appends to every completion
    (and scores in the held-out loss), so ``eos_token`` is written after each answer.
    """
    return [{"instruction": r["prompt"], "input": "", "output": r["completion"] + eos_token} for r in records]


def train_config(args: argparse.Namespace, model: str, data_dir: Path, out: Path) -> dict[str, Any]:
    """The ``llamafactory-cli train`` options: BAdam as our ``badam`` row runs it (switch every 50, descending)."""
    return {"model_name_or_path": model, "stage": "sft", "do_train": True, "finetuning_type": "full",
            "use_badam": True, "badam_mode": "layer", "badam_switch_mode": "descending",
            "badam_switch_interval": 50, "dataset": "ows_train", "dataset_dir": str(data_dir), "template": "empty",
            "cutoff_len": args.max_seq_length, "output_dir": str(out), "overwrite_output_dir": True,
            "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": 1,
            "learning_rate": args.lr, "lr_scheduler_type": "cosine", "warmup_steps": args.warmup_steps,
            "weight_decay": 0.0, "max_steps": args.steps, "logging_steps": 1, "save_strategy": "no",
            "report_to": "none", "bf16": False, "seed": args.seed, "preprocessing_num_workers": 1}


def losses(log_text: str) -> list[float]:
    """The training losses LLaMA-Factory logged, in order."""
    return [float(m.group(1)) for m in LOSS_LINE.finditer(log_text)]


def run_llamafactory(args: argparse.Namespace, config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write the data and config, run ``llamafactory-cli train`` in its interpreter; its log, exit code, time, RSS."""
    # JSON is valid YAML: LLaMA-Factory 0.9.5 reads a .json config with json.load(Path), which fails.
    (folder / "train.yaml").write_text(json.dumps(config, indent=1))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if args.stub_torchaudio:
        stub = folder / "stub" / "torchaudio"
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "__init__.py").write_text('"""Empty stand-in: the PyPI torchaudio does not load with CPU torch."""\n')
        env["PYTHONPATH"] = str(folder / "stub")
    cli = "import sys; from llamafactory.cli import main; sys.argv = ['llamafactory-cli', 'train', sys.argv[1]]; main()"
    started = time.perf_counter()
    with open(folder / "llamafactory.log", "w") as log:
        proc = subprocess.run([args.python, "-c", cli, str(folder / "train.yaml")], stdout=log,
                              stderr=subprocess.STDOUT, env=env)
    text = (folder / "llamafactory.log").read_text(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return {"returncode": proc.returncode, "wall_seconds": round(time.perf_counter() - started, 1),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
            "loss_curve": losses(text), "error": None if proc.returncode == 0 else (lines or ["(empty log)"])[-1][:300]}


def score(args: argparse.Namespace, model_dir: Path, heldout: list[dict[str, Any]]) -> dict[str, Any]:
    """Held-out answer loss, exact match and forgetting perplexity of the saved model, as compare_methods scores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.child import forgetting_perplexity
    from ows.data import tasks as reasoning
    from ows.eval.heldout import answer_loss, exact_match

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    items = heldout[: args.heldout_generate]
    return {"heldout_answer_loss": answer_loss(model, tokenizer, heldout, 32, args.max_seq_length),
            "heldout_exact_match": exact_match(model, tokenizer, items, reasoning.score, batch_size=32),
            "forgetting_ppl": forgetting_perplexity(model, tokenizer, args.forgetting_samples, args.forgetting_seq_len)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", required=True, help="the interpreter of an environment with llamafactory and badam")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dataset", default="reasoning-gym:chain_sum,basic_arithmetic")
    p.add_argument("--dataset-seed", type=int, default=1)
    p.add_argument("--heldout-seed", type=int, default=100000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=LEARNING_RATES["badam"], help="default: our badam row's")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--stub-torchaudio", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    p.add_argument("--output-dir", default="benchmarks/results/llamafactory")
    for key in ("steps", "batch_size", "num_heldout", "heldout_generate", "forgetting_samples", "forgetting_seq_len"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=QUICK[key])
    args = p.parse_args(argv)
    if not Path(args.python).is_file():
        p.error(f"--python {args.python!r} does not exist: give the interpreter of LLaMA-Factory's environment")
    args.warmup_steps = max(1, round(0.08 * args.steps))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run LLaMA-Factory's BAdam once, score it, write ``results.json`` and print one table row."""
    from transformers import AutoTokenizer

    from ows.data import tasks as reasoning
    from ows.loading import resolve_model_path

    args = parse_args(argv)
    folder = Path(args.output_dir).resolve()
    (folder / "data").mkdir(parents=True, exist_ok=True)
    tasks = reasoning.parse_spec(args.dataset)
    train = reasoning.make_records(tasks, args.steps * args.batch_size, args.dataset_seed)
    heldout = reasoning.drop_overlap(reasoning.make_records(tasks, args.num_heldout, args.heldout_seed), train)
    model = resolve_model_path(args.model)
    eos = AutoTokenizer.from_pretrained(model).eos_token
    (folder / "data" / "ows_train.json").write_text(json.dumps(alpaca_rows(train, eos)))
    (folder / "data" / "dataset_info.json").write_text(json.dumps({"ows_train": {"file_name": "ows_train.json"}}))
    config = train_config(args, model, folder / "data", folder / "model")
    result = {"command": "python " + " ".join([Path(__file__).name, *(argv or sys.argv[1:])]), "config": config}
    result.update(run_llamafactory(args, config, folder))
    if result["returncode"] == 0:
        result.update(score(args, folder / "model", heldout))
        for item in (folder / "model").glob("*.safetensors"):
            item.unlink()  # nothing big is kept
    (folder / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "loss_curve")}, indent=1))
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
