#!/usr/bin/env python
"""How much of a full-weight fine-tune a LoRA adapter extracted from it keeps, rank by rank.

For an ``ows train`` output folder RUN (full weights, e.g. the demo's ``outputs/demo``) this extracts a
PEFT LoRA adapter at each ``--ranks`` (``ows export lora``: truncated SVD of each changed linear's
ΔW), loads it over the base with ``PeftModel.from_pretrained``, and scores on the run's own held-out
items (from ``ows_run.json``): the held-out answer loss and exact match of the base, of the full
fine-tune, of the changed linears exactly (what an unbounded rank gives: everything but the tensors a
LoRA cannot hold) and of every rank, with the captured energy (mean and minimum over matrices).
Writes ``table.md`` and ``results.json`` to ``--output-dir``.

    ows train && python benchmarks/lora_extraction.py outputs/demo --ranks 4,16,64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="an ows train output folder with full weights")
    p.add_argument("--ranks", default="4,16,64", help="comma-separated LoRA ranks")
    p.add_argument("--heldout-generate", type=int, default=100, help="held-out items answered for exact match")
    p.add_argument("--output-dir", default=None, help="default: RUN-lora-extraction")
    args = p.parse_args(argv)
    try:
        args.ranks = sorted({int(r) for r in args.ranks.split(",") if r.strip()})
    except ValueError:
        p.error(f"--ranks {args.ranks!r} is not a comma-separated list of integers: write e.g. --ranks 4,16,64")
    if not args.ranks or min(args.ranks) < 1:
        p.error(f"--ranks {args.ranks!r} needs ranks >= 1")
    from ows.recipe.run_folder import RUN_RECORD, read_run_record

    if read_run_record(Path(args.run)) is None:
        p.error(f"RUN {args.run!r} is not an ows train output folder (no readable {RUN_RECORD})")
    return args


def _script(run: Path, generate: int) -> Any:
    from ows import ScriptArguments
    from ows.recipe.run_folder import read_run_record

    settings = read_run_record(run)
    names = {f.name for f in dataclasses.fields(ScriptArguments) if f.init}
    return ScriptArguments(**{k: v for k, v in settings.items() if k in names} | {"heldout_generate": generate})


def _score(model: Any, tokenizer: Any, datasets: Any, script: Any) -> dict[str, float]:
    from ows.recipe.outputs import heldout_metrics

    model.eval()
    return heldout_metrics(model, tokenizer, datasets, script, "after")


def _with_linears(base_folder: str, run: Path, names: list[str]) -> Any:
    """The base model with the run's exact weights for ``names`` (the changed linears)."""
    from transformers import AutoModelForCausalLM

    from ows.export import Weights

    model = AutoModelForCausalLM.from_pretrained(base_folder)
    tuned = Weights(run)
    state = model.state_dict()
    for name in names:
        state[name].copy_(tuned.get(name))
    return model


def main(argv: list[str] | None = None) -> int:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ows.recipe.run_folder import run_base
    from ows.recipe.data import load_datasets
    from ows.export import extract_lora

    args = parse_args(argv)
    run = Path(args.run)
    out = Path(args.output_dir or f"{run.as_posix().rstrip('/')}-lora-extraction")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base_folder, base_name = run_base(str(run), None)
    script = _script(run, args.heldout_generate)
    tokenizer = AutoTokenizer.from_pretrained(run)
    datasets = load_datasets(script, tokenizer)
    rows = [{"row": "base model", **_score(AutoModelForCausalLM.from_pretrained(base_folder), tokenizer, datasets,
                                           script)},
            {"row": "full fine-tune", **_score(AutoModelForCausalLM.from_pretrained(run), tokenizer, datasets, script)}]
    print(rows[0], rows[1], sep="\n", flush=True)
    linears: list[str] = []
    for rank in args.ranks:
        with tempfile.TemporaryDirectory() as folder:
            report = extract_lora(base_folder, run, folder, rank)
            linears = sorted(report.energy)
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder), folder)
            size = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
            summary = report.summary()
            rows.append({"row": f"LoRA rank {rank}", "adapter_params": size, "mean_energy": summary["mean_energy"],
                         "min_energy": summary["min_energy"], **_score(model.merge_and_unload(), tokenizer, datasets,
                                                                      script)})
        print(rows[-1], flush=True)
    rows.append({"row": "changed linears exact (rank unbounded)",
                 **_score(_with_linears(base_folder, run, linears), tokenizer, datasets, script)})
    left_out = report.left_out
    command = "python benchmarks/lora_extraction.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"Command: `{command}`", f"Run: {run} (base {base_name}); held-out items: {len(datasets.heldout)} "
             f"(exact match on {args.heldout_generate}); left out of every adapter (not a LoRA's): "
             f"{len(left_out)} tensors, {sum(left_out.values()):,} parameters ({', '.join(sorted(left_out)[:4])}"
             f"{', ...' if len(left_out) > 4 else ''}); wall time {(time.perf_counter() - started) / 60:.1f} min", "",
             "| model | adapter parameters | captured energy (mean / min) | held-out answer loss | exact match |",
             "|---|---|---|---|---|"]
    for r in rows:
        energy = f"{r['mean_energy']:.3f} / {r['min_energy']:.3f}" if "mean_energy" in r else "–"
        em = f"{r['heldout_exact_match']:.1%}" if r.get("heldout_exact_match") is not None else "–"
        params = f"{r['adapter_params']:,}" if "adapter_params" in r else "–"
        lines.append(f"| {r['row']} | {params} | {energy} | {r['heldout_answer_loss']:.3f} | {em} |")
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"command": command, "rows": rows, "left_out": left_out}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
