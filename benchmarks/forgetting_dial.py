#!/usr/bin/env python
"""The forgetting dial: held-out loss and news perplexity of base + A·(tuned − base) for several A, per run.

Each RUN is an ``ows train`` output folder with its weights (e.g. ``compare_methods.py --keep-weights``).
For every A in ``--alphas`` the model is the weight-space interpolation that ``ows merge BASE DELTA OUT
--alpha A`` writes (A = 1: the run itself; A = 0: the base model), scored on the run's own held-out items
(answer loss, from its ``ows_run.json`` settings) and on the forgetting slice of ``compare_methods.py``
(gensim's news text, perplexity). Writes ``table.md``, ``results.json`` and ``dial.png`` (held-out loss
against news perplexity, one line per run, points labelled by A) to ``--output-dir``.

    python benchmarks/forgetting_dial.py benchmarks/results/X/runs/ows-s0 benchmarks/results/X/runs/lisa-s0 \\
        --alphas 0.25,0.5,0.75,1 --output-dir benchmarks/results/X-dial
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `bench` package next to this script


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="ows train output folders holding their weights")
    p.add_argument("--alphas", default="0.25,0.5,0.75,1", help="comma-separated A in (0, 2]")
    p.add_argument("--forgetting-samples", type=int, default=16)
    p.add_argument("--forgetting-seq-len", type=int, default=256)
    p.add_argument("--output-dir", required=True)
    args = p.parse_args(argv)
    try:
        args.alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        p.error(f"--alphas {args.alphas!r} is not a list of numbers: write e.g. --alphas 0.25,0.5,1")
    if not args.alphas or any(not 0 < a <= 2 for a in args.alphas):
        p.error(f"--alphas {args.alphas} must be numbers in (0, 2]: write e.g. --alphas 0.25,0.5,1")
    for run in args.runs:
        if not (Path(run) / "ows_run.json").is_file() or not list(Path(run).glob("*.safetensors")):
            p.error(f"{run!r} is not an ows train output folder with its weights (ows_run.json, *.safetensors)")
    return args


def interpolate(base: dict[str, Any], tuned: dict[str, Any], alpha: float) -> dict[str, Any]:
    """base + alpha * (tuned - base) for every floating tensor (computed in fp32, stored in the tuned dtype)."""
    out = {}
    for name, value in tuned.items():
        if value.is_floating_point() and name in base:
            start = base[name].float()
            out[name] = (start + alpha * (value.float() - start)).to(value.dtype)
        else:
            out[name] = value
    return out


def score_run(run: Path, alphas: list[float], samples: int, seq_len: int) -> dict[str, Any]:
    """Held-out answer loss and news perplexity of the run's interpolations (and of its base, A = 0)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.child import forgetting_perplexity
    from ows import ScriptArguments
    from ows.loading import resolve_model_path
    from ows.recipe.data import load_datasets
    from ows.recipe.outputs import heldout_metrics
    from ows.recipe.run_folder import read_run_record

    settings = read_run_record(run)
    names = set(ScriptArguments.__dataclass_fields__)
    script = ScriptArguments(**{k: v for k, v in settings.items() if k in names and k != "given"})
    script.heldout_generate = 0
    tokenizer = AutoTokenizer.from_pretrained(run)
    datasets = load_datasets(script, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(script.model))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = {}
    for file in sorted(run.glob("*.safetensors")):
        tuned.update(load_file(file))
    points = []
    for alpha in [0.0, *alphas]:
        model.load_state_dict(interpolate(base, tuned, alpha), strict=False)
        model.eval()
        loss = heldout_metrics(model, tokenizer, datasets, script, f"A={alpha:g}")["heldout_answer_loss"]
        ppl = forgetting_perplexity(model, tokenizer, samples, seq_len)
        points.append({"alpha": alpha, "heldout_answer_loss": loss, "forgetting_ppl": ppl})
        print(f"{run.name} A={alpha:g}: loss {loss:.3f}, news ppl {ppl:.2f}", flush=True)
    return {"run": str(run), "method": settings.get("method"), "points": points}


def plot(results: list[dict[str, Any]], out: Path) -> None:
    from bench.plots import finish, pyplot

    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    for result in results:
        xs = [p["forgetting_ppl"] for p in result["points"]]
        ys = [p["heldout_answer_loss"] for p in result["points"]]
        ax.plot(xs, ys, "o-", label=Path(result["run"]).name)
        for p in result["points"]:
            ax.annotate(f"A={p['alpha']:g}", (p["forgetting_ppl"], p["heldout_answer_loss"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    finish(plt, fig, ax, "news perplexity (forgetting; lower is better)", "held-out answer loss (lower is better)",
           out / "dial.png")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = [score_run(Path(run), args.alphas, args.forgetting_samples, args.forgetting_seq_len)
               for run in args.runs]
    command = "python benchmarks/forgetting_dial.py " + " ".join(shlex.quote(a) for a in argv)
    lines = [f"Command: `{command}`", "", "| run | A | held-out answer loss | news perplexity |", "|---|---:|---:|---:|"]
    lines += [f"| {Path(r['run']).name} | {p['alpha']:g} | {p['heldout_answer_loss']:.3f} | {p['forgetting_ppl']:.2f} |"
              for r in results for p in r["points"]]
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"command": command, "results": results,
                                                  "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    plot(results, out)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
