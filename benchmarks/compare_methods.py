#!/usr/bin/env python
"""Side-by-side benchmark of ows's fine-tuning methods on a real model, in one invocation.

Every method x seed runs ``ows train`` (the product itself, through ``ows.cli.main``) in its own fresh
subprocess with the same data, data order (per seed), steps, batch, sequence length and LR schedule;
only the method and its learning rate differ. A thin wrapper in the child adds measurements without
changing training:

- forgetting perplexity on a fixed slice of gensim's English news text (token-weighted);
- peak process memory (RSS high-water mark of the child, ``ows.memory.peak_rss_bytes``);
- peak tracked tensor memory: parameters + gradients + optimizer state, sampled just before every
  optimizer step (when the gradients exist) and after it;
- seconds per optimizer step (median of per-step wall times) and the share of training time spent in
  GaLore's SVDs (time inside ``GaLoreAdamW``'s projector computation);
- the training-loss curve.

The child skips writing the fine-tuned weights (nothing big is kept) and the base model's held-out
metrics are computed once, in the first child. Outputs go to ``--output-dir`` (default
``benchmarks/results/<date>``): ``table.md``, ``results.json``, ``loss_curves.png``, ``memory.png`` and
one small folder per run.

    python benchmarks/compare_methods.py --quick          # 1 seed, 30 steps: <= 15 min on 2 CPU cores
    python benchmarks/compare_methods.py                  # 3 seeds, 200 steps (hours on CPU)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

METHODS = ("full", "lora", "galore", "lisa", "ows-fullrank", "ows")
LABELS = {"full": "full FT (AdamW)", "lora": "LoRA r16", "galore": "GaLore (all layers)",
          "lisa": "LISA (uniform, plain AdamW)", "ows-fullrank": "OWS full-rank (weighted, AdamW)",
          "ows": "OWS (weighted + GaLore)"}
# Learning rates per method. NOT tuned on a validation split: common choices for each family at this
# model size (full FT lower, LoRA higher, layer-sampling and GaLore methods at the paper's 3e-4).
LEARNING_RATES = {"full": 1e-4, "lora": 5e-4, "galore": 3e-4, "lisa": 3e-4, "ows-fullrank": 3e-4, "ows": 3e-4}
SAMPLING = ("lisa", "ows-fullrank", "ows")
GALORE = ("galore", "ows")
PROFILED = ("ows-fullrank", "ows")

# Metrics: key, header, format, lower is better.
METRICS = [
    ("heldout_answer_loss", "held-out answer loss", "{:.3f}"),
    ("heldout_exact_match", "exact match", "{:.1%}"),
    ("forgetting_ppl", "forgetting ppl", "{:.2f}"),
    ("peak_rss_gib", "peak RSS GiB", "{:.2f}"),
    ("peak_tracked_gib", "peak tracked GiB", "{:.3f}"),
    ("sec_per_step", "s/step", "{:.2f}"),
    ("svd_share", "SVD share", "{:.1%}"),
]
QUICK = dict(seeds=[0], steps=30, batch_size=8, num_heldout=300, heldout_generate=50,
             forgetting_samples=8, forgetting_seq_len=256)
FULL = dict(seeds=[0, 1, 2], steps=200, batch_size=16, num_heldout=300, heldout_generate=300,
            forgetting_samples=16, forgetting_seq_len=256)


# ----------------------------------------------------------------------------------------------------
# Parent: build the runs, launch the children, aggregate.
# ----------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 seed, 30 steps, batch 8, 50 generated answers")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--seeds", default=None, help="comma-separated seeds (quick: 0; full: 0,1,2)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (quick 30, full 200)")
    p.add_argument("--batch-size", type=int, default=None, help="per-step batch (quick 8, full 16)")
    p.add_argument("--model", default="smollm2-135m", help="model for ows train (a folder or smollm2-135m)")
    p.add_argument("--dataset", default="reasoning-gym:chain_sum,basic_arithmetic")
    p.add_argument("--dataset-seed", type=int, default=1)
    p.add_argument("--heldout-seed", type=int, default=100000)
    p.add_argument("--num-heldout", type=int, default=None, help="held-out items for the answer loss (300)")
    p.add_argument("--heldout-generate", type=int, default=None, help="held-out items answered by generation")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--forgetting-samples", type=int, default=None, help="windows of gensim text for perplexity")
    p.add_argument("--forgetting-seq-len", type=int, default=None, help="tokens per forgetting window")
    p.add_argument("--calibration-samples", type=int, default=16, help="windows for the outlier profile")
    p.add_argument("--calibration-seq-len", type=int, default=256)
    p.add_argument("--gamma", type=int, default=2, help="active layers for lisa / ows-fullrank / ows")
    p.add_argument("--interval", type=int, default=10, help="K, steps between layer draws")
    p.add_argument("--rank", type=int, default=128, help="GaLore rank for galore / ows")
    p.add_argument("--update-proj-gap", type=int, default=100)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--warmup-steps", type=int, default=None, help="default: ~8%% of steps")
    p.add_argument("--output-dir", default=None, help="default benchmarks/results/<date>")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
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
        args.output_dir = str(Path(__file__).resolve().parent / "results" / _dt.date.today().isoformat())
    return args


def train_argv(args: argparse.Namespace, method: str, seed: int, out: Path, profile: Path | None) -> list[str]:
    """The ``ows train`` flags of one run: everything but the method and its learning rate is shared."""
    argv = [
        "--model", args.model, "--dataset", args.dataset, "--method", method,
        "--num_train_examples", str(args.steps * args.batch_size), "--dataset_seed", str(args.dataset_seed),
        "--num_heldout_examples", str(args.num_heldout), "--heldout_seed", str(args.heldout_seed),
        "--heldout_generate", str(args.heldout_generate), "--max_seq_length", str(args.max_seq_length),
        "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch_size),
        "--learning_rate", str(LEARNING_RATES[method]), "--lr_scheduler_type", "cosine",
        "--warmup_steps", str(args.warmup_steps), "--weight_decay", "0.0", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--seed", str(seed),
        "--output_dir", str(out), "--overwrite_output_dir", "true",
        "--calibration_samples", str(args.calibration_samples), "--calibration_seq_len", str(args.calibration_seq_len),
    ]
    if method in SAMPLING:
        argv += ["--num_active_layers", str(args.gamma), "--sample_interval", str(args.interval)]
    if method in GALORE:
        argv += ["--rank", str(args.rank), "--update_proj_gap", str(args.update_proj_gap)]
    if method == "lora":
        argv += ["--lora_r", str(args.lora_r)]
    if method in PROFILED and profile is not None:
        argv += ["--profile", str(profile)]
    return argv


def compute_profile(args: argparse.Namespace, out: Path) -> Path:
    """One outlier profile (``ows analyze``, in a subprocess) shared by the weighted methods."""
    folder = out / "profile"
    cmd = [sys.executable, "-c", "import sys; from ows.cli import main; sys.exit(main(sys.argv[1:]))",
           "analyze", args.model, "--num-samples", str(args.calibration_samples),
           "--seq-len", str(args.calibration_seq_len), "--output-dir", str(folder), "--json"]
    with open(out / "profile.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return folder / "profile.json"


def run_child(args: argparse.Namespace, method: str, seed: int, out: Path, profile: Path | None,
              measure_before: bool) -> dict[str, Any]:
    run_dir = out / "runs" / f"{method}-s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    spec = {"argv": train_argv(args, method, seed, run_dir, profile), "measure_before": measure_before,
            "forgetting_samples": args.forgetting_samples, "forgetting_seq_len": args.forgetting_seq_len,
            "bench_json": str(out / "runs" / f"{method}-s{seed}.bench.json")}
    spec_path = out / "runs" / f"{method}-s{seed}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    started = time.perf_counter()
    with open(out / "runs" / f"{method}-s{seed}.log", "w") as log:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                              stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {proc.returncode}); see {log.name}")
    bench = json.loads(Path(spec["bench_json"]).read_text())
    bench["wall_seconds"] = round(wall, 1)
    # Nothing big stays: drop any weights a child may have written (it skips saving them).
    for pattern in ("*.safetensors", "*.bin", "*.pt", "checkpoint-*"):
        for item in run_dir.glob(pattern):
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    return bench


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: mean, std and n of every metric over seeds, and the ratios of the means to full FT and LoRA."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    summary: dict[str, dict[str, Any]] = {}
    for method in methods:
        rows = [r for r in runs if r["method"] == method]
        entry: dict[str, Any] = {"n": len(rows)}
        for key, _, _ in METRICS:
            mean, std = _mean_std([r.get(key) for r in rows])
            entry[key] = {"mean": mean, "std": std}
        summary[method] = entry
    for method, entry in summary.items():
        for key, _, _ in METRICS:
            for ref in ("full", "lora"):
                ref_mean = summary.get(ref, {}).get(key, {}).get("mean")
                mean = entry[key]["mean"]
                ratio = None
                if mean is not None and ref_mean is not None and ref_mean != 0:
                    ratio = mean / ref_mean
                entry[key][f"x_{ref}"] = ratio
    return summary


def _cell(stat: dict[str, Any], fmt: str, n: int) -> str:
    if stat["mean"] is None:
        return "n/a"
    text = fmt.format(stat["mean"])
    if n > 1:
        text += " ± " + fmt.format(stat["std"]).rstrip("%") + ("%" if fmt.endswith("%}") else "")
    ratios = [f"{stat[k]:.2f}× {name}" for k, name in (("x_full", "full"), ("x_lora", "LoRA")) if stat.get(k) is not None]
    return text + (" (" + ", ".join(ratios) + ")" if ratios else "")


def markdown_table(summary: dict[str, dict[str, Any]], base: dict[str, Any], header: list[str]) -> str:
    lines = list(header) + [""]
    lines.append("| method | " + " | ".join(h for _, h, _ in METRICS) + " |")
    lines.append("|---" * (len(METRICS) + 1) + "|")
    if base:
        cells = []
        for key, _, fmt in METRICS:
            cells.append(fmt.format(base[key]) if base.get(key) is not None else "–")
        lines.append("| base model (no training) | " + " | ".join(cells) + " |")
    for method, entry in summary.items():
        label = LABELS.get(method, method) + f" · lr {LEARNING_RATES.get(method, float('nan')):g}"
        lines.append(f"| {label} | " + " | ".join(_cell(entry[k], f, entry["n"]) for k, _, f in METRICS) + " |")
    lines.append("")
    lines.append("Cells: mean (± std over seeds when n > 1), then the ratio of the mean to full FT's and to LoRA's "
                 "from this same invocation. Lower is better for every column except exact match.")
    return "\n".join(lines)


def make_plots(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in summary:
        curves = [r["loss_curve"] for r in runs if r["method"] == method and r.get("loss_curve")]
        if not curves:
            continue
        steps = sorted({s for c in curves for s, _ in c})
        by_step = {s: [l for c in curves for t, l in c if t == s] for s in steps}
        ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], label=method)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)
    written.append("loss_curves.png")

    names = list(summary)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.4
    xs = range(len(names))
    rss = [summary[m]["peak_rss_gib"]["mean"] or 0 for m in names]
    tracked = [summary[m]["peak_tracked_gib"]["mean"] or 0 for m in names]
    ax.bar([x - width / 2 for x in xs], rss, width, label="peak process RSS")
    ax.bar([x + width / 2 for x in xs], tracked, width, label="peak params+grads+optimizer state")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylabel("GiB")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
    written.append("memory.png")
    return written


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/compare_methods.py", *argv])
    date = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    started = time.perf_counter()
    print(f"# {command}\n# {date}; output in {out}", flush=True)
    profile = compute_profile(args, out) if any(m in PROFILED for m in args.methods) else None
    runs: list[dict[str, Any]] = []
    base: dict[str, Any] = {}
    for seed in args.seeds:
        for method in args.methods:
            bench = run_child(args, method, seed, out, profile, measure_before=not runs)
            if bench.get("before"):
                base = bench["before"]
            runs.append(bench)
            print(f"{method} seed {seed}: loss {bench.get('heldout_answer_loss'):.3f}, "
                  f"EM {bench.get('heldout_exact_match', float('nan')):.1%}, "
                  f"ppl {bench.get('forgetting_ppl'):.2f}, RSS {bench.get('peak_rss_gib'):.2f} GiB, "
                  f"{bench.get('sec_per_step'):.2f} s/step, wall {bench['wall_seconds']:.0f} s", flush=True)
    summary = aggregate(runs)
    wall = time.perf_counter() - started
    settings = (f"model {args.model}; data {args.dataset} (train seed {args.dataset_seed}, "
                f"{args.steps * args.batch_size} items); held-out {args.num_heldout} items from seed "
                f"{args.heldout_seed} (exact match on {args.heldout_generate}); {args.steps} steps x batch "
                f"{args.batch_size}, seq {args.max_seq_length}, cosine, warmup {args.warmup_steps}; seeds "
                f"{','.join(map(str, args.seeds))}; γ={args.gamma}, K={args.interval}, GaLore r={args.rank}, "
                f"T={args.update_proj_gap}; LoRA r={args.lora_r}; forgetting ppl on {args.forgetting_samples}x"
                f"{args.forgetting_seq_len} tokens of gensim news text; {os.cpu_count()} CPU cores; "
                f"wall time {wall / 60:.1f} min")
    header = [f"Command: `{command}`", f"Date: {date}", f"Settings: {settings}"]
    table = markdown_table(summary, base, header)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    plots = make_plots(runs, summary, out)
    result = {"command": command, "date": date, "wall_seconds": round(wall, 1), "settings": vars(args) | {"child": None},
              "learning_rates": LEARNING_RATES, "base": base, "summary": summary, "runs": runs, "plots": plots}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    print(table)
    return 0


# ----------------------------------------------------------------------------------------------------
# Child: one `ows train` run with measurements added around it.
# ----------------------------------------------------------------------------------------------------

def forgetting_perplexity(model: Any, tokenizer: Any, samples: int, seq_len: int, seed: int = 1234) -> float:
    """exp(token-weighted mean NLL) on a fixed slice of gensim's English news text."""
    import torch

    from ows.calibration import builtin_calibration_texts, calibration_batches

    batches = calibration_batches(tokenizer, builtin_calibration_texts(), samples, seq_len, batch_size=4, seed=seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for batch in batches:
                ids = batch["input_ids"].to(device)
                logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits[:, :-1].float()
                targets = ids[:, 1:]
                total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                                 targets.reshape(-1), reduction="sum"))
                count += targets.numel()
    finally:
        model.train(was_training)
    return math.exp(total / count)


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's wrapper."""
    while optimizer is not None and getattr(optimizer, "optimizer", None) not in (None, optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def child_main(spec_path: str) -> int:
    import ows.cli.train_steps as steps
    import ows.optim.galore_adamw as galore
    from transformers import TrainerCallback

    from ows.cli import main as ows_main
    from ows.memory import gradient_bytes, optimizer_state_bytes, peak_rss_bytes, tensor_bytes

    spec = json.loads(Path(spec_path).read_text())
    bench: dict[str, Any] = {"svd_seconds": 0.0, "svd_calls": 0}

    class BenchCallback(TrainerCallback):
        """Per-step wall time and tracked tensor memory (params + grads + optimizer state)."""

        def __init__(self) -> None:
            self.t0 = None
            self.step_times: list[float] = []
            self.peak_tracked = 0
            self.peak_state = 0
            self.peak_grads = 0

        def _sample(self, kwargs: dict) -> None:
            model = kwargs.get("model")
            optimizer = _unwrap(kwargs.get("optimizer"))
            if model is None:
                return
            params = tensor_bytes(model.parameters())
            grads = gradient_bytes(model)
            state = optimizer_state_bytes(optimizer) if optimizer is not None and hasattr(optimizer, "state") else 0
            self.peak_grads = max(self.peak_grads, grads)
            self.peak_state = max(self.peak_state, state)
            self.peak_tracked = max(self.peak_tracked, params + grads + state)

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.t0 = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):  # noqa: ANN001
            self._sample(kwargs)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.t0 is not None:
                self.step_times.append(time.perf_counter() - self.t0)
            self._sample(kwargs)

    callback = BenchCallback()
    original_projector = galore._robust_projector

    def timed_projector(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return original_projector(*a, **k)
        finally:
            bench["svd_seconds"] += time.perf_counter() - t
            bench["svd_calls"] += 1

    galore._robust_projector = timed_projector

    original_make_trainer = steps.make_trainer

    def make_trainer(*a: Any, **k: Any) -> Any:
        setup, trainer, guards = original_make_trainer(*a, **k)
        trainer.add_callback(callback)
        return setup, trainer, guards

    steps.make_trainer = make_trainer
    original_before = steps.heldout_before

    def heldout_before(model, tokenizer, datasets, script, out, reuse):  # noqa: ANN001
        if not spec["measure_before"]:
            return {}
        metrics = dict(original_before(model, tokenizer, datasets, script, out, reuse))
        metrics["forgetting_ppl"] = forgetting_perplexity(model, tokenizer, spec["forgetting_samples"],
                                                          spec["forgetting_seq_len"])
        bench["before"] = metrics
        return {k: v for k, v in metrics.items() if k != "forgetting_ppl"}

    steps.heldout_before = heldout_before
    steps.save_model_folder = lambda *a, **k: None  # the benchmark keeps no weights
    original_save = steps.save_outputs

    def save_outputs(out, setup, trainer, tokenizer, config, before, after, seconds):  # noqa: ANN001
        bench["forgetting_ppl"] = forgetting_perplexity(setup.model, tokenizer, spec["forgetting_samples"],
                                                        spec["forgetting_seq_len"])
        bench["loss_curve"] = [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h]
        original_save(out, setup, trainer, tokenizer, config, before, after, seconds)

    steps.save_outputs = save_outputs
    code = ows_main(["train", *spec["argv"]])
    if code != 0:
        return code
    out = Path(spec["argv"][spec["argv"].index("--output_dir") + 1])
    results = json.loads((out / "results.json").read_text())
    times = callback.step_times
    bench.update(
        method=results["method"], seed=int(spec["argv"][spec["argv"].index("--seed") + 1]), steps=results["steps"],
        train_seconds=results["train_seconds"],
        heldout_answer_loss=results["after"].get("heldout_answer_loss"),
        heldout_exact_match=results["after"].get("heldout_exact_match"),
        heldout_exact_match_items=results["after"].get("heldout_exact_match_items"),
        peak_rss_gib=peak_rss_bytes() / 2**30,
        peak_tracked_gib=callback.peak_tracked / 2**30,
        peak_grad_gib=callback.peak_grads / 2**30,
        peak_optimizer_state_gib=callback.peak_state / 2**30,
        sec_per_step=statistics.median(times) if times else None,
        svd_share=bench["svd_seconds"] / sum(times) if times else None,
        command="ows train " + " ".join(shlex.quote(a) for a in spec["argv"]),
    )
    results["benchmark"] = {k: v for k, v in bench.items() if k != "loss_curve"}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    Path(spec["bench_json"]).write_text(json.dumps(bench, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
