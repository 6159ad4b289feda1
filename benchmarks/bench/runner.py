"""Parent side: the ``ows train`` flags of one run, the shared outlier profile, and one child process per run."""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .settings import GALORE, LEARNING_RATES, PROFILED, RECORDED_DEFAULTS, ROWS, SAMPLING

CHILD_SCRIPT = Path(__file__).resolve().parent / "child.py"
OWS_CLI = "import sys; from ows.cli import main; sys.exit(main(sys.argv[1:]))"


def train_argv(args: argparse.Namespace, method: str, seed: int, out: Path, profile: Path | None,
               lr: float | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The ``ows train`` flags of one run: everything but the method and its learning rate is shared.

    ``lr`` overrides the method's entry in ``LEARNING_RATES``; ``extra`` flags are appended (e.g. a
    GaLore scale in the learning-rate sweep).
    """
    product_method, variant_flags = ROWS[method][:2] if method in ROWS else (method, ())
    argv = [
        "--model", args.model, "--dataset", args.dataset, "--method", product_method,
        "--num_train_examples", str(args.steps * args.batch_size), "--dataset_seed", str(args.dataset_seed),
        "--num_heldout_examples", str(args.num_heldout), "--heldout_seed", str(args.heldout_seed),
        "--heldout_generate", str(args.heldout_generate), "--max_seq_length", str(args.max_seq_length),
        "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch_size),
        "--learning_rate", str(lr if lr is not None else getattr(args, "lr", None) or LEARNING_RATES[method]),
        "--lr_scheduler_type", "cosine",
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
    argv += [flag for name, value in RECORDED_DEFAULTS.items() for flag in (name, value)]  # the recorded recipe
    return argv + list(variant_flags) + list(extra)


def compute_profile(args: argparse.Namespace, out: Path) -> Path:
    """One outlier profile (``ows analyze``, in a subprocess) shared by the weighted methods."""
    folder = out / "profile"
    cmd = [sys.executable, "-c", OWS_CLI,
           "analyze", args.model, "--num-samples", str(args.calibration_samples),
           "--seq-len", str(args.calibration_seq_len), "--output-dir", str(folder), "--json"]
    with open(out / "profile.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return folder / "profile.json"


def start_invocation(script: str, argv: Sequence[str], out: Path) -> tuple[str, str, float]:
    """Create ``out`` and print the header of a benchmark invocation; returns (command, date, start time)."""
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in [script, *argv])
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    print(f"# {command}\n# {date}; output in {out}", flush=True)
    return command, date, time.perf_counter()


def shared_profile(args: argparse.Namespace, out: Path) -> Path | None:
    """The outlier profile for the weighted methods: reused from ``out`` with ``--resume``, else computed."""
    if not any(m in PROFILED for m in args.methods):
        return None
    stored = out / "profile" / "profile.json"
    return stored if args.resume and stored.is_file() else compute_profile(args, out)


class RunFailed(RuntimeError):
    """A child run exited with an error; ``reason`` is the last error line of its log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def failure_reason(log: Path) -> str:
    """The line of a failed run's log that says why: ``ows train: ...`` when there is one, else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    named = [line for line in lines if line.startswith("ows train:")]
    return (named or lines or ["(empty log)"])[-1][:300]


def _bench_path(out: Path, name: str) -> Path:
    return out / "runs" / f"{name}.bench.json"


PATH_FLAGS = ("--output_dir", "--profile")  # where a run wrote, not how it trained: may differ between checkouts


def _settings(argv: Sequence[str]) -> dict[str, str]:
    """``ows train`` flags -> values, without the paths (``PATH_FLAGS``); a flag a run recorded before it was
    pinned counts with the value the product's default had then (``RECORDED_DEFAULTS``)."""
    pairs = {**RECORDED_DEFAULTS, **dict(zip(argv[::2], argv[1::2]))}
    return {k: v for k, v in pairs.items() if k not in PATH_FLAGS}


def settings_mismatch(stored: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The flags whose values differ between a finished run's ``ows train`` flags and this invocation's, as
    ``--flag OLD (this invocation: NEW), ...``; None when they agree."""
    old, new = _settings(stored), _settings(wanted)
    differ = [f"{flag} {old.get(flag, '(not given)')} (this invocation: {new.get(flag, '(not given)')})"
              for flag in dict.fromkeys([*old, *new]) if old.get(flag) != new.get(flag)]
    return ", ".join(differ) or None


def finished_run(args: argparse.Namespace, out: Path, name: str, method: str, seed: int, profile: Path | None,
                 lr: float | None = None, extra: Sequence[str] = ()) -> dict[str, Any] | None:
    """With ``--resume``, the measurements of run ``name`` if it already finished in ``out``; else None.

    A finished run whose ``ows train`` flags differ from the ones this invocation would give it (another
    ``--steps``, learning rate, seed...) is refused with a one-line error, so that one table never mixes
    settings; runs measured before the flags were kept are reused as they are.
    """
    done = _bench_path(out, name)
    if not (args.resume and done.is_file()):
        return None
    bench = json.loads(done.read_text())
    stored = bench.get("train_argv")
    wanted = train_argv(args, method, seed, out / "runs" / name, profile, lr, extra)
    why = settings_mismatch(stored, wanted) if stored is not None else None
    if why:
        raise SystemExit(f"error: --resume: run {name} in {out} was trained with {why}: give the same settings, pick "
                         f"another --output-dir, or delete {done} to train that run again")
    return bench


def run_child(args: argparse.Namespace, method: str, seed: int, out: Path, profile: Path | None,
              measure_before: bool, *, lr: float | None = None, name: str | None = None,
              extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train one method x seed in a fresh process and return its measurements (``bench.child``).

    ``name`` (default ``METHOD-sSEED``) names the run folder, spec, log and measurement files under
    ``out/runs``. A forgetting sample count of 0 skips the forgetting perplexity.
    """
    name = name or f"{method}-s{seed}"
    runs = out / "runs"
    run_dir = runs / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    runs.mkdir(parents=True, exist_ok=True)
    keep = bool(getattr(args, "keep_weights", False))
    spec = {"argv": train_argv(args, method, seed, run_dir, profile, lr, extra), "measure_before": measure_before,
            "forgetting_samples": args.forgetting_samples, "forgetting_seq_len": args.forgetting_seq_len,
            "bench_json": str(_bench_path(out, name)), "keep_weights": keep}
    spec_path = runs / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    started = time.perf_counter()
    with open(runs / f"{name}.log", "w") as log:
        proc = subprocess.run([sys.executable, str(CHILD_SCRIPT), str(spec_path)], stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        reason = failure_reason(runs / f"{name}.log")
        raise RunFailed(f"{method} seed {seed} ({name}) failed (exit {proc.returncode}): {reason}; see {log.name}",
                        reason)
    bench = json.loads(Path(spec["bench_json"]).read_text())
    bench["wall_seconds"] = round(wall, 1)
    bench["method"] = method  # the benchmark row (a variant runs a product method with extra flags)
    bench["train_argv"] = spec["argv"]  # what --resume checks a later invocation against
    Path(spec["bench_json"]).write_text(json.dumps(bench, indent=1))  # kept for --resume and the time total
    # Nothing big stays unless asked (--keep-weights): drop any weights a child wrote.
    for pattern in () if keep else ("*.safetensors", "*.bin", "*.pt", "checkpoint-*"):
        for item in run_dir.glob(pattern):
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    return bench
