"""``ows analyze``: the layerwise outlier profile of a model as a table, ``profile.json`` and ``profile.png``."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..calibration import TEXT_SUFFIXES
from ..sampling import STRATEGIES
from .common import ArgumentParser, UsageError, parse_or_exit_code

logger = logging.getLogger("ows.cli.analyze")

SHOWN_STRATEGIES = tuple(s for s in STRATEGIES if s != "weights")
BAR_WIDTH = 30

EPILOG = """examples:
  ows analyze smollm2-135m --num-samples 8 --seq-len 128     # demo model, ~20 s on CPU
  ows analyze ./my-model --calibration data.jsonl --json > profile-summary.json
  ows analyze HuggingFaceTB/SmolLM2-360M --threshold 7 --output-dir out/smollm2-360m

The profile.json it writes is what ows.OutlierProfile.from_json and `ows train` read.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ows analyze``."""
    p = ArgumentParser(
        prog="ows analyze",
        description="Measure the layerwise outlier ratio (OWL) of a causal LM on calibration text and show "
        "the OWS sampling probability of each decoder layer. Writes profile.json and profile.png.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="local Hugging Face model folder, hub id, or 'smollm2-135m' (the demo model)")
    p.add_argument("--calibration", default="builtin", metavar="PATH|builtin",
                   help="calibration text: a .txt (paragraphs or lines), .jsonl/.json (field 'text') file, "
                        "or 'builtin' (English news articles from gensim's test corpus; default)")
    p.add_argument("--num-samples", type=int, default=32, help="calibration windows (default 32)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per window (default 256)")
    p.add_argument("--threshold", type=float, default=5.0, metavar="M",
                   help="outlier when |W|*||X|| > M x layer mean (default 5, as in OWL/OWS)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the window positions (default 0)")
    p.add_argument("--strategy", default="owl", choices=SHOWN_STRATEGIES,
                   help="sampling strategy whose probabilities are shown (default owl)")
    p.add_argument("--temperature", type=float, default=1.0, help="tau in p ~ ratio^tau for owl and owl_reverse (default 1; 0 = uniform)")
    p.add_argument("--output-dir", default=None,
                   help="where profile.json and profile.png go (default ./ows-analyze-<model folder name>)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (profile, probabilities, written files) instead of the table")
    p.add_argument("--layers-attr", default=None,
                   help="dotted path of the decoder layer list when it is not found automatically, "
                        "e.g. model.layers")
    return p


def _require(ok: bool, option: str, value: Any, fix: str) -> None:
    if not ok:
        raise UsageError(f"{option} {value!r} is invalid: {fix}")


def validate(args: argparse.Namespace) -> None:
    """Check every option that needs no model; raise ``UsageError`` naming the option and the fix."""
    _require(args.num_samples >= 1, "--num-samples", args.num_samples, "must be an integer >= 1")
    _require(args.seq_len >= 2, "--seq-len", args.seq_len, "must be an integer >= 2")
    _require(args.batch_size >= 1, "--batch-size", args.batch_size, "must be an integer >= 1")
    _require(math.isfinite(args.threshold) and args.threshold > 0, "--threshold", args.threshold,
             "must be a number > 0 (the paper uses 5)")
    _require(math.isfinite(args.temperature) and args.temperature >= 0, "--temperature", args.temperature,
             "must be a number >= 0 (1 = the paper, 0 = uniform)")
    if args.calibration != "builtin":
        path = Path(args.calibration).expanduser()
        _require(path.is_file(), "--calibration", args.calibration,
                 "no such file: give a .txt/.jsonl/.json file or 'builtin'")
        _require(path.suffix.lower() in TEXT_SUFFIXES, "--calibration", args.calibration,
                 "unknown file type: use a .txt, .jsonl or .json file, or 'builtin'")
    if args.output_dir is not None:
        out = Path(args.output_dir).expanduser()
        _require(not out.exists() or out.is_dir(), "--output-dir", args.output_dir,
                 "exists and is not a folder: choose another path")


def load_texts(source: str) -> tuple[list[str], str]:
    """Calibration texts and a description of where they came from."""
    from ..calibration import builtin_calibration_path, builtin_calibration_texts, read_texts

    try:
        if source == "builtin":
            return builtin_calibration_texts(), f"builtin:{builtin_calibration_path().name}"
        return read_texts(source), str(Path(source).expanduser().resolve())
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"--calibration {source!r}: {err}") from None


def resolve_model(name: str) -> str:
    """The model's local folder or hub id; a missing folder is a ``UsageError`` naming the argument."""
    from ..models import resolve_model_path

    try:
        return resolve_model_path(name)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None


def default_output_dir(model: str, resolved: str) -> Path:
    """``ows-analyze-<model folder name>`` in the current folder."""
    name = Path(resolved).name or Path(model).name or "model"
    return Path(f"ows-analyze-{name}")


def make_batches(tokenizer: Any, texts: list[str], args: argparse.Namespace) -> list[dict]:
    """Calibration windows; a too-short text is a ``UsageError`` naming --seq-len / --num-samples."""
    from ..calibration import TextTooShortError, calibration_batches

    try:
        return calibration_batches(tokenizer, texts, args.num_samples, args.seq_len, args.batch_size, args.seed)
    except TextTooShortError as err:
        raise UsageError(
            f"--seq-len {args.seq_len} is too long for --calibration {args.calibration!r}: it has only "
            f"{err.num_tokens} tokens, not enough for one of the --num-samples {args.num_samples} windows; "
            "lower --seq-len or give a longer --calibration file"
        ) from None


def tokenize_first(resolved: str, texts: list[str], args: argparse.Namespace) -> list[dict]:
    """Load only the tokenizer and cut the calibration windows."""
    from transformers import AutoTokenizer

    logger.info("tokenizing the calibration text")
    return make_batches(AutoTokenizer.from_pretrained(resolved), texts, args)


def _progress(batches: list[dict]) -> Any:
    """The batches wrapped in a tqdm bar on stderr (shown on a terminal only), or as they are."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return batches
    return tqdm(batches, desc="calibration", unit="batch", file=sys.stderr, disable=None, leave=False)


def profile_model(args: argparse.Namespace, resolved: str, texts: list[str], source: str) -> Any:
    """Load the model, build the calibration windows and measure the outlier profile."""
    from ..models import load_model_and_tokenizer
    from ..outliers import profile_outliers

    start = time.perf_counter()
    batches = tokenize_first(resolved, texts, args)  # a too-short text fails before the weights load
    logger.info("calibration: %d windows x %d tokens from %s, %d batches",
                args.num_samples, args.seq_len, source, len(batches))
    logger.info("loading %s", resolved)
    model, _ = load_model_and_tokenizer(resolved)
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(limit, int) and args.seq_len > limit:
        raise UsageError(f"--seq-len {args.seq_len} is invalid: the model takes at most {limit} positions")
    name = args.model if not Path(args.model).expanduser().exists() else Path(resolved).name
    profile = profile_outliers(model, _progress(batches), threshold=args.threshold,
                               layers_attr=args.layers_attr, model_name=name)
    profile.extra.update(calibration=source, num_samples=args.num_samples, seq_len=args.seq_len,
                         batch_size=args.batch_size, seed=args.seed)
    logger.info("done in %.1f s", time.perf_counter() - start)
    return profile


def _bar_char() -> str:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return "█" if encoding == "utf8" else "#"


def format_table(ratios: list[float], probs: list[float]) -> list[str]:
    """One line per decoder layer: index, ratio (%), probability and a bar proportional to it."""
    char, top = _bar_char(), max(probs) or 1.0
    lines = [f"{'layer':>5}  {'ratio(%)':>8}  {'probability':>11}  bar"]
    for index, (ratio, prob) in enumerate(zip(ratios, probs)):
        bar = char * max(int(round(BAR_WIDTH * prob / top)), 1 if prob > 0 else 0)
        lines.append(f"{index:>5}  {100 * ratio:>8.3f}  {prob:>11.4f}  {bar}")
    return lines


def summary_line(ratios: list[float], num_tokens: int, threshold: float) -> str:
    """Mean ratio, the layers with the most and the fewest outliers, tokens and M."""
    hi = max(range(len(ratios)), key=lambda i: ratios[i])
    lo = min(range(len(ratios)), key=lambda i: ratios[i])
    mean = 100 * sum(ratios) / len(ratios)
    return (f"mean ratio {mean:.3f} % | max layer {hi} ({100 * ratios[hi]:.3f} %) | "
            f"min layer {lo} ({100 * ratios[lo]:.3f} %) | M={threshold:g}, {num_tokens:,} tokens")


def write_outputs(profile: Any, out_dir: Path, strategy: str, temperature: float) -> dict[str, str | None]:
    """Write profile.json and profile.png (None when matplotlib is missing) into ``out_dir``."""
    from ..plots import plot_profile

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "profile.json"
    profile.to_json(json_path)
    png = plot_profile(profile, out_dir / "profile.png", strategy=strategy, temperature=temperature)
    return {"profile_json": str(json_path), "profile_png": str(png) if png else None}


def run(argv: list[str]) -> int:
    """Run ``ows analyze``; returns the exit code."""
    args = parse_or_exit_code(build_parser(), argv)
    if isinstance(args, int):  # --help
        return args
    validate(args)
    texts, source = load_texts(args.calibration)
    resolved = resolve_model(args.model)
    out_dir = Path(args.output_dir).expanduser() if args.output_dir else default_output_dir(args.model, resolved)
    profile = profile_model(args, resolved, texts, source)
    probs = profile.probabilities(args.strategy, args.temperature)
    files = write_outputs(profile, out_dir, args.strategy, args.temperature)
    if args.json:
        doc = dict(asdict(profile), strategy=args.strategy, temperature=args.temperature,
                   probabilities=probs, files=files)
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    print("\n".join(format_table(profile.ratios, probs)))
    print(summary_line(profile.ratios, profile.num_tokens, profile.threshold))
    tau = f" (temperature {args.temperature:g})" if args.strategy.startswith("owl") and args.temperature != 1.0 else ""
    print(f"probabilities: {args.strategy}{tau}")
    print("wrote " + ", ".join(p for p in files.values() if p))
    return 0
