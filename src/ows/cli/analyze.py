"""``ows analyze``: the layerwise outlier profile of a model as a table, ``profile.json`` and ``profile.png``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..choices import SAMPLING_STRATEGIES
from ..config import OWSConfig
from .arguments import AnalyzeArguments, ScriptArguments
from .common import ArgumentParser, UsageError
from .options import FieldSet, Parsed, in_user_terms, instantiate, parse_command

logger = logging.getLogger("ows.cli.analyze")

SHOWN_STRATEGIES = tuple(s for s in SAMPLING_STRATEGIES if s != "weights")
SCRIPT_FIELDS = ("model", "calibration", "calibration_samples", "calibration_seq_len", "calibration_batch_size",
                 "calibration_seed", "dtype", "trust_remote_code")
OWS_FIELDS = ("outlier_threshold", "sampling_strategy", "sampling_temperature", "layers_attr")
ALIASES = {"--num-samples": ("calibration_samples", None), "--seq-len": ("calibration_seq_len", None),
           "--batch-size": ("calibration_batch_size", None), "--seed": ("calibration_seed", None),
           "--threshold": ("outlier_threshold", None), "--strategy": ("sampling_strategy", None),
           "--temperature": ("sampling_temperature", None), "--output-dir": ("profile_dir", None),
           "--layers-attr": ("layers_attr", None)}

EPILOG = """examples:
  ows analyze smollm2-135m --calibration_samples 8 --calibration_seq_len 128   # demo model, ~20 s on CPU
  ows analyze configs/demo.yaml                              # the profile `ows train configs/demo.yaml` measures
  ows analyze ./my-model --calibration data.jsonl --json > profile-summary.json
  ows analyze HuggingFaceTB/SmolLM2-360M --outlier_threshold 7 --profile_dir out/smollm2-360m

The profile.json it writes is what ows.OutlierProfile.from_json and `ows train --profile` read.
Older spellings still work: --num-samples, --seq-len, --batch-size, --seed, --threshold, --strategy,
--temperature, --output-dir, --layers-attr.
"""


def parse(argv: list[str]) -> tuple[ScriptArguments, OWSConfig, AnalyzeArguments, Parsed] | int:
    """The settings of one ``ows analyze`` (or argparse's exit code for --help); bad values are ``UsageError``."""
    parser = ArgumentParser(
        prog="ows analyze", usage="ows analyze [CONFIG.yaml] [MODEL] [--field value ...]",
        description="Measure the layerwise outlier ratio (OWL) of a causal LM on calibration text and show "
        "the OWS sampling probability of each decoder layer. Writes profile.json and profile.png.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fields = FieldSet([(ScriptArguments, "model and calibration", SCRIPT_FIELDS),
                       (OWSConfig, "outliers and sampling", OWS_FIELDS), (AnalyzeArguments, "output", None)])
    parsed = parse_command(parser, fields, argv, aliases=ALIASES)
    if isinstance(parsed, int):
        return parsed
    ows_values = parsed.values(OWSConfig)
    strategy = ows_values.setdefault("sampling_strategy", "owl")  # the profile's probabilities unless asked
    if strategy not in SHOWN_STRATEGIES:
        if ":" not in parsed.spelling("sampling_strategy"):  # a flag asked for it
            raise UsageError(f"{parsed.spelling('sampling_strategy')} {strategy!r} is invalid: use one of "
                             f"{', '.join(SHOWN_STRATEGIES)}")
        logger.info("sampling_strategy %r of the config file has no profile probabilities: showing owl's", strategy)
        ows_values.update(sampling_strategy="owl", sampling_weights=None)
    script = instantiate(ScriptArguments, parsed.values(ScriptArguments), parsed)
    try:
        script.validate()
    except ValueError as err:
        raise UsageError(in_user_terms(str(err), parsed)) from None
    if script.model is None:
        raise UsageError("model is not set: give MODEL, --model or `model:` in the config file")
    config = instantiate(OWSConfig, ows_values, parsed)
    options = instantiate(AnalyzeArguments, parsed.values(AnalyzeArguments), parsed)
    if options.profile_dir is not None:
        out = Path(options.profile_dir).expanduser()
        if out.exists() and not out.is_dir():
            raise UsageError(f"{parsed.spelling('profile_dir')} {options.profile_dir!r} is invalid: exists and is not a "
                             "folder: choose another path")
    return script, config, options, parsed


def default_output_dir(model: str, resolved: str) -> Path:
    """``ows-analyze-<model folder name>`` in the current folder."""
    name = Path(resolved).name or Path(model).name or "model"
    return Path(f"ows-analyze-{name}")


def profile_model(script: ScriptArguments, config: OWSConfig, parsed: Parsed, resolved: str,
                  texts: list[str], source: str) -> Any:
    """Cut the calibration windows (tokenizer only), then load the model and measure the outlier profile."""
    from ..loading import load_model, load_tokenizer, model_identity
    from ..model_facts import position_limit
    from ..recipe.profiling import calibration_windows, measure_profile

    start = time.perf_counter()
    logger.info("tokenizing the calibration text")
    batches = calibration_windows(load_tokenizer(resolved, script.trust_remote_code), texts, script, parsed.spelling)
    model = load_model(resolved, script.dtype, script.trust_remote_code)
    limit = position_limit(model.config.to_dict()) if hasattr(model, "config") else None
    if limit is not None and script.calibration_seq_len > limit:
        raise UsageError(f"{parsed.spelling('calibration_seq_len')} {script.calibration_seq_len} is invalid: the "
                         f"model takes at most {limit} positions")
    profile = measure_profile(model, batches, script, config, source, model_identity(script.model, resolved))
    logger.info("done in %.1f s", time.perf_counter() - start)
    return profile


def write_outputs(profile: Any, out_dir: Path, strategy: str, temperature: float) -> dict[str, str | None]:
    """Write profile.json and profile.png (None when matplotlib is missing) into ``out_dir``."""
    from ..integrations.plots import plot_profile

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "profile.json"
    profile.to_json(json_path)
    png = plot_profile(profile, out_dir / "profile.png", strategy=strategy, temperature=temperature)
    return {"profile_json": str(json_path), "profile_png": str(png) if png else None}


def run(argv: list[str]) -> int:
    """Run ``ows analyze``; returns the exit code."""
    from ..loading import resolve_model_path
    from ..sampling import sampling_probabilities
    from ..recipe.profiling import calibration_source, profile_table

    settings = parse(argv)
    if isinstance(settings, int):  # --help
        return settings
    script, config, options, parsed = settings
    texts, source = calibration_source(script, parsed.spelling("calibration"))  # fails before the model loads
    resolved = resolve_model_path(script.model)
    out_dir = Path(options.profile_dir).expanduser() if options.profile_dir else default_output_dir(script.model, resolved)
    profile = profile_model(script, config, parsed, resolved, texts, source)
    strategy, tau = config.sampling_strategy, config.sampling_temperature
    probs = sampling_probabilities(profile.ratios, strategy, temperature=tau)
    files = write_outputs(profile, out_dir, strategy, tau)
    if options.json:
        doc = dict(asdict(profile), strategy=strategy, temperature=tau, probabilities=probs, files=files)
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    print(profile_table(profile, config, heading=False))
    shown = f" (temperature {tau:g})" if strategy.startswith("owl") and tau != 1.0 else ""
    print(f"probabilities: {strategy}{shown}")
    print("wrote " + ", ".join(p for p in files.values() if p))
    return 0
