"""``ows train [CONFIG.yaml] [--field value ...]``: fine-tune with OWS or a baseline method.

Every check on the input (config, model path, data, profile, output folder) runs before the model
is loaded, and nothing is written to the output folder until they all pass.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ..config import OWSConfig
from ..jsonio import write_json
from .common import ArgumentParser, UsageError
from .options import FieldSet, instantiate, parse_command
from .train_checks import check_method_options, check_trackers, check_training_fields
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
# Not part of a run's identity: how it is launched and logged, where its folder is (a moved or copied run folder
# can be resumed), and the chunked loss (it equals the standard one: resuming may change it).
NOT_IN_SIGNATURE = ("overwrite_output_dir", "resume_from_checkpoint", "logging_steps", "report_to", "disable_tqdm",
                    "loss_chunk_size", "output_dir", "logging_dir", "allow_other_profile", "given", "save_delta")


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
    parsed = parse_command(parser, _fields(), argv, takes_model=False, defaults_without_file=_demo_unless_chosen)
    if isinstance(parsed, int):
        raise SystemExit(parsed)
    from transformers import TrainingArguments

    values = {**parsed.values(ScriptArguments), **parsed.values(OWSConfig), **parsed.values(TrainingArguments)}
    script = instantiate(ScriptArguments, parsed.values(ScriptArguments))
    script.given = frozenset(parsed.spelled)  # by flag or in the config file (not the demo's defaults)
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
    check_training_fields(training)
    check_trackers(training)
    check_method_options(script, config, training)
    return script, config, training


def run(argv: list[str]) -> int:
    """Entry point of ``ows train``: 0 done, 2 bad input, 1 failure, 130 stopped by a signal (resumable)."""
    from .. import distributed
    from ..integrations.checkpoint import check_compatible, check_tensor_files, finished_step, resolve_resume
    from ..integrations.hf import fsdp_requested
    from ..loading import load_model, load_tokenizer, model_identity, resolve_model_path
    from ..methods import get_method
    from . import train_checks as checks
    from . import train_steps as steps
    from .profiling import calibration_source, calibration_windows, measure_profile, profile_table
    from .run_folder import RunLock, remove_staging_leftovers

    script, config, training = parse(argv)
    out = Path(training["output_dir"])
    model_path = resolve_model_path(script.model)
    profile, profile_source = steps.load_profile(script, out)
    uses_profile = profile is not None and steps.wants_profile(script, config)
    num_layers, model_config = checks.check_model_config(model_path, script, config,
                                                         profile.ratios if uses_profile else None)
    checks.check_save_delta(script, model_path)
    if script.max_memory:
        script, config, training = _fit_budget(script, config, training, model_config)
    signature = checks.settings_signature(script, config, training, NOT_IN_SIGNATURE)
    checks.check_output_dir(out, signature, script.overwrite_output_dir)
    identity = model_identity(script.model, model_path)
    if uses_profile:
        checks.check_profile_model(profile, profile_source, identity, script.allow_other_profile)
    resume = resolve_resume(training.pop("resume_from_checkpoint", None), out)
    if resume:
        check_compatible(resume, model_config, signature, RUN_KEYS)
        check_tensor_files(resume)
        if distributed.is_main_process():  # before torch.distributed starts: the launcher's RANK
            print(f"resuming from {resume}")
    tokenizer = load_tokenizer(model_path, script.trust_remote_code)
    windows = None
    if profile is None and steps.wants_profile(script, config):  # a too-short text fails before the model loads
        texts, source = calibration_source(script)
        windows = calibration_windows(tokenizer, texts, script)
    datasets = steps.load_datasets(script, tokenizer)
    tracking = checks.prepare_trackers(training, out)
    if tracking and distributed.is_main_process():
        print(tracking)
    args = steps.training_arguments(training, has_eval=bool(datasets.eval), script=script)  # starts torch.distributed under torchrun
    distributed.barrier()  # every rank has read the output folder before rank 0 writes into it
    main = distributed.is_main_process()
    lock = RunLock(out)
    refused = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire()
        except UsageError as err:
            refused = str(err)
    refused = distributed.broadcast_object(refused)
    if refused:
        raise UsageError(refused)
    try:
        if main:
            remove_staging_leftovers(out)
            write_json({"settings": signature, "started": time.strftime("%Y-%m-%d %H:%M:%S")}, out / "ows_run.json",
                       default=str)
        model = load_model(model_path, script.dtype, script.trust_remote_code,
                           quantization=get_method(script.method).base_quantization)
        if windows is not None:
            profile = measure_profile(model, windows, script, config, source, identity)
        profile = distributed.broadcast_object(profile)  # one sampling distribution on every rank
        if profile is not None and main:
            profile.to_json(out / "profile.json")
            print(profile_table(profile, config))
        before = steps.heldout_before(model, tokenizer, datasets, script, out, reuse=bool(resume))
        setup, trainer, guards = steps.make_trainer(model, tokenizer, script, config, profile, args, datasets, signature)
        started = time.perf_counter()
        if resume and finished_step(resume, args.max_steps) is not None and not fsdp_requested(args):
            steps.restore_finished(trainer, resume)
        else:
            trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - started
        code = _finish(steps, script, config, out, setup, trainer, guards, tokenizer, datasets, before, seconds, main)
    finally:
        lock.release()
    del model, setup, trainer, guards  # the DDP wrapper holds the process group: drop it before the group
    distributed.shutdown()
    return code


def _fit_budget(script: ScriptArguments, config: OWSConfig, training: dict[str, Any],
                model_config: dict[str, Any]) -> tuple[ScriptArguments, OWSConfig, dict[str, Any]]:
    """The run's settings chosen for ``max_memory`` (the plan is printed); nothing fits: a ``UsageError``."""
    import torch

    from .. import distributed
    from . import budget

    settings = budget.estimate_settings(script, config, training.get("per_device_train_batch_size", 8),
                                        bool(training.get("gradient_checkpointing", False)),
                                        device="cuda" if torch.cuda.is_available() else "cpu",
                                        accumulation=training.get("gradient_accumulation_steps", 1))
    chosen = budget.plan(model_config, script.method, script.max_memory, settings, script.given)
    if not chosen.fits:
        budget.refuse(chosen, script.method, script.given)
    if distributed.is_main_process():
        print(f"memory plan for max_memory={script.max_memory} ({script.method}):\n" + "\n".join(chosen.lines()))
    return budget.apply_plan(chosen, script, config, training)


def _finish(steps: Any, script: ScriptArguments, config: OWSConfig, out: Path, setup: Any, trainer: Any,
            guards: tuple[Any, Any], tokenizer: Any, datasets: Any, before: dict, seconds: float, main: bool) -> int:
    """After training: the stop or failure reports, or the held-out metrics and every output."""
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
        if script.save_delta:
            print(steps.save_delta(script, out))
    return 0
