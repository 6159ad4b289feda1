"""``ows train [CONFIG.yaml] [--field value ...]``: fine-tune with OWS or a baseline method.

Every check on the input (config, model path, data, profile, output folder) runs before the model
is loaded, and nothing is written to the output folder until they all pass.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from ..config import OWSConfig
from ..jsonio import write_json
from .common import ArgumentParser, UsageError
from .options import FieldSet, instantiate, parse_command
from .arguments import DEMO, ScriptArguments

logger = logging.getLogger("ows.cli.train")

EPILOG = """examples:
  ows train                                         # the demo (SmolLM2-135M, reasoning-gym chain_sum, CPU)
  ows train configs/demo.yaml --max_steps 20 --output_dir outputs/short
  ows train --model ./my-model --dataset data.jsonl --output_dir out --method lisa --num_active_layers 2
"""
# Settings that shape the optimizer state: a checkpoint written with other values cannot be resumed.
RUN_KEYS = ("method", "use_galore", "rank", "proj_type", "target_modules", "num_active_layers", "train_embeddings",
            "train_lm_head", "train_final_norm", "lora_r", "layers_attr")
NOT_IN_SIGNATURE = ("overwrite_output_dir", "resume_from_checkpoint", "logging_steps", "report_to", "disable_tqdm",
                    "loss_chunk_size")  # the chunked loss equals the standard one: resuming may change it


def _fields() -> FieldSet:
    from transformers import TrainingArguments

    return FieldSet([(ScriptArguments, "model, data and method", None), (OWSConfig, "OWS (layer sampling, GaLore)", None),
                     (TrainingArguments, "transformers.TrainingArguments", None)])


def _demo_unless_chosen(flags: dict[str, Any]) -> dict[str, Any]:
    """The demo's settings when neither a model nor a dataset is given; otherwise the fields' own defaults."""
    return {} if "model" in flags or "dataset" in flags else dict(DEMO)


def parse(argv: list[str]) -> tuple[ScriptArguments, OWSConfig, dict[str, Any]]:
    """(script arguments, OWS config, TrainingArguments keyword arguments) from YAML + flags."""
    parser = ArgumentParser(prog="ows train", usage="ows train [CONFIG.yaml] [--field value ...]",
                            description="Fine-tune a causal LM with OWS or a baseline method. Every field below "
                            "can also be a key of the YAML file; flags override it. With no config file, no "
                            "--model and no --dataset: the demo.", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parsed = parse_command(parser, _fields(), argv, defaults_without_file=_demo_unless_chosen)
    if isinstance(parsed, int):
        raise SystemExit(parsed)
    from transformers import TrainingArguments

    values = {**parsed.values(ScriptArguments), **parsed.values(OWSConfig), **parsed.values(TrainingArguments)}
    script = instantiate(ScriptArguments, parsed.values(ScriptArguments))
    ows_values = parsed.values(OWSConfig)
    if "seed" in values:  # one seed for the data order and the layer schedule
        ows_values["seed"] = values["seed"]
    config = instantiate(OWSConfig, ows_values)
    for name in ("model", "dataset"):
        if getattr(script, name) is None:
            raise UsageError(f"{name} is not set: add `{name}: ...` to the config or pass --{name}")
    training = parsed.values(TrainingArguments)
    if not training.get("output_dir"):
        raise UsageError("output_dir is not set: add `output_dir: ...` to the config or pass --output_dir")
    if "seed" in values:
        training["seed"] = values["seed"]
    try:
        script.validate()
    except ValueError as err:
        raise UsageError(str(err)) from None
    return script, config, training


def settings_signature(script: ScriptArguments, config: OWSConfig, training: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a run (used to refuse reusing a folder for a different run)."""
    merged = {**vars(script), **config.to_dict(), **training}
    return {k: merged[k] for k in sorted(merged) if k not in NOT_IN_SIGNATURE}


def check_output_dir(path: Path, signature: dict[str, Any], overwrite: bool) -> None:
    """Refuse a non-empty folder that does not hold this very run, unless ``overwrite``."""
    if not path.exists() or overwrite:
        return
    if not path.is_dir():
        raise UsageError(f"output_dir={str(path)!r} is a file: give a folder path")
    record = path / "ows_run.json"
    if record.is_file():
        try:
            previous = json.loads(record.read_text(encoding="utf-8")).get("settings", {})
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = {"unreadable": True}
        changed = sorted(k for k in set(previous) | set(signature)
                         if json.dumps(previous.get(k), default=str) != json.dumps(signature.get(k), default=str))
        if not changed:
            return
        raise UsageError(
            f"output_dir={str(path)!r} holds a different run ({changed[0]} differs): use a new --output_dir "
            "or pass --overwrite_output_dir true"
        )
    if any(path.iterdir()):
        raise UsageError(
            f"output_dir={str(path)!r} is not empty and holds no ows run: use a new --output_dir "
            "or pass --overwrite_output_dir true"
        )


def run(argv: list[str]) -> int:
    """Entry point of ``ows train``: 0 done, 2 bad input, 1 failure, 130 stopped by a signal (resumable)."""
    from .. import distributed
    from ..integrations.checkpoint import check_compatible, resolve_resume
    from ..loading import load_model, load_tokenizer, model_identity, resolve_model_path
    from . import train_steps as steps
    from .profiling import calibration_source, calibration_windows, measure_profile, profile_table

    script, config, training = parse(argv)
    out = Path(training["output_dir"])
    signature = settings_signature(script, config, training)
    check_output_dir(out, signature, script.overwrite_output_dir)
    model_path = resolve_model_path(script.model)
    num_layers, model_config = steps.check_model_config(model_path, script, config)
    resume = resolve_resume(training.pop("resume_from_checkpoint", None), out)
    if resume:
        check_compatible(resume, model_config, signature, RUN_KEYS)
        if distributed.is_main_process():  # before torch.distributed starts: the launcher's RANK
            print(f"resuming from {resume}")
    profile = steps.load_profile(script, config, num_layers, out)
    tokenizer = load_tokenizer(model_path, script.trust_remote_code)
    windows = None
    if profile is None and steps.wants_profile(script, config):  # a too-short text fails before the model loads
        texts, source = calibration_source(script)
        windows = calibration_windows(tokenizer, texts, script)
    datasets = steps.load_datasets(script, tokenizer)
    args = steps.training_arguments(training, has_eval=bool(datasets.eval))  # starts torch.distributed under torchrun
    distributed.barrier()  # every rank has read the output folder before rank 0 writes into it
    main = distributed.is_main_process()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json({"settings": signature, "started": time.strftime("%Y-%m-%d %H:%M:%S")}, out / "ows_run.json",
                   default=str)
    model = load_model(model_path, script.dtype, script.trust_remote_code)
    if windows is not None:
        profile = measure_profile(model, windows, script, config, source, model_identity(script.model, model_path))
    profile = distributed.broadcast_object(profile)  # one sampling distribution on every rank
    if profile is not None and main:
        profile.to_json(out / "profile.json")
        print(profile_table(profile, config))
    before = steps.heldout_before(model, tokenizer, datasets, script, out, reuse=bool(resume))
    setup, trainer, guards = steps.make_trainer(model, tokenizer, script, config, profile, args, datasets, signature)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    stop, nonfinite = guards
    if stop.signal_name:
        if main:
            print(f"stopped by {stop.signal_name} at step {stop.step}; a checkpoint was saved: rerun the same command "
                  "with --resume_from_checkpoint latest to continue")
        return 130
    if nonfinite.failed:
        raise RuntimeError(f"stopped after {nonfinite.consecutive} steps in a row with non-finite gradients "
                           f"(nan_policy={script.nan_policy}); the newest checkpoint is the last good one")
    after = steps.heldout_metrics(setup.model, tokenizer, datasets, script, "after")
    steps.save_outputs(out, setup, trainer, tokenizer, config, before, after, seconds)
    if main:
        print(steps.results_table(before, after, script.method))
        print(f"saved the fine-tuned model to {out}")
    return 0
