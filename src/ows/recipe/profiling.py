"""The one profiling path of ``ows train`` and ``ows analyze``: calibration windows, the profile, its table.

The windows are cut from the tokenizer alone, so a calibration text that is too short fails before
any weights load; the profile is then measured on the loaded model with the same fields in both
commands (``calibration``, ``calibration_samples``, ``calibration_seq_len``, ``calibration_batch_size``,
``calibration_seed``, ``outlier_threshold``, ``layers_attr``), so one YAML file gives one profile.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ..config import OWSConfig
from ..outliers import OutlierProfile
from ..sampling import sampling_probabilities
from .arguments import ScriptArguments
from ..errors import UsageError

logger = logging.getLogger(__name__)
BAR_WIDTH = 30


def calibration_source(script: ScriptArguments, spelling: str = "--calibration",
                       training_texts: list[str] | None = None) -> tuple[list[str], str]:
    """The calibration texts and where they came from; a missing or unreadable file is a ``UsageError``.

    ``builtin`` without gensim installed takes ``training_texts`` (the training rows as the model reads them) when
    given, and says so in the log."""
    from ..data.calibration import builtin_calibration_path, builtin_calibration_texts, builtin_installed, read_texts

    try:
        if script.calibration == "builtin" and training_texts and not builtin_installed():
            logger.info("calibration: the built-in news text needs gensim (not installed): profiling on %d rows of the "
                        "training data instead (or give calibration: a .txt/.jsonl file)", len(training_texts))
            return training_texts, f"dataset:{script.dataset}"
        if script.calibration == "builtin":
            return builtin_calibration_texts(), f"builtin:{builtin_calibration_path().name}"
        from pathlib import Path

        return read_texts(script.calibration), str(Path(script.calibration).expanduser().resolve())
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"{spelling} {script.calibration!r}: {err}") from None


def calibration_windows(tokenizer: Any, texts: list[str], script: ScriptArguments,
                        spelling: Any = lambda name: f"--{name}") -> list[dict]:
    """The calibration windows; a text too short for one window is a ``UsageError`` naming the fields."""
    from ..data.calibration import TextTooShortError, calibration_batches

    try:
        return calibration_batches(tokenizer, texts, script.calibration_samples, script.calibration_seq_len,
                                   script.calibration_batch_size, script.calibration_seed)
    except TextTooShortError as err:
        raise UsageError(
            f"{spelling('calibration_seq_len')} {script.calibration_seq_len} is too long for "
            f"{spelling('calibration')} {script.calibration!r}: it has only {err.num_tokens} tokens, not enough for "
            f"one of the {spelling('calibration_samples')} {script.calibration_samples} windows; lower it or give a "
            "longer calibration file"
        ) from None


def _progress(batches: list[dict]) -> Any:
    """The batches wrapped in a tqdm bar on stderr (shown on a terminal only), or as they are."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return batches
    return tqdm(batches, desc="calibration", unit="batch", file=sys.stderr, disable=None, leave=False)


def measure_profile(model: Any, batches: list[dict], script: ScriptArguments, config: OWSConfig, source: str,
                    model_name: str) -> OutlierProfile:
    """The outlier profile of ``model`` on ``batches``, with how it was measured in ``extra``."""
    from ..outliers import profile_outliers

    logger.info("profiling outliers on %d calibration windows of %d tokens from %s", script.calibration_samples,
                script.calibration_seq_len, source)
    profile = profile_outliers(model, _progress(batches), threshold=config.outlier_threshold,
                               layers_attr=config.layers_attr, model_name=model_name)
    profile.extra.update(calibration=source, num_samples=script.calibration_samples,
                         seq_len=script.calibration_seq_len, batch_size=script.calibration_batch_size,
                         seed=script.calibration_seed)
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


def shown_strategy(config: OWSConfig) -> str:
    """The strategy whose probabilities a table shows ('weights' has none of a profile's: owl)."""
    return config.sampling_strategy if config.sampling_strategy != "weights" else "owl"


def profile_summary(profile: OutlierProfile, config: OWSConfig) -> str:
    """One line about the profile (the per-layer table: ``OWS_LOG_LEVEL=DEBUG``, ``ows analyze``, profile.json)."""
    strategy = shown_strategy(config)
    probs = sampling_probabilities(profile.ratios, strategy, temperature=config.sampling_temperature)
    return (f"outlier profile of {len(profile.ratios)} layers: {summary_line(profile.ratios, profile.num_tokens, profile.threshold)}"
            f" | {strategy} sampling probabilities {min(probs):.3f} to {max(probs):.3f} (per-layer table: "
            "OWS_LOG_LEVEL=DEBUG, or `ows analyze`)")


def profile_table(profile: OutlierProfile, config: OWSConfig, heading: bool = True) -> str:
    """The outlier table of ``profile`` under ``config``'s strategy and temperature, with its summary line."""
    strategy = shown_strategy(config)
    probs = sampling_probabilities(profile.ratios, strategy, temperature=config.sampling_temperature)
    lines = format_table(profile.ratios, probs)
    head = [f"outlier profile ({strategy} sampling probabilities):"] if heading else []
    return "\n".join([*head, *lines, summary_line(profile.ratios, profile.num_tokens, profile.threshold)])
