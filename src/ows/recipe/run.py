"""``ows.train``: one fine-tuning run from its settings, the function behind ``ows train``.

Every check on the input (settings, model config, data, profile, output folder) runs before the model
is loaded, and nothing is written to the output folder until they all pass. Then: the model, the
outlier profile, held-out metrics before, the method (from the registry), the Trainer, training, and
the outputs (model folder, ``results.json`` ...; :mod:`ows.recipe.run_folder` names them).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..config import OWSConfig
from ..errors import UsageError
from ..methods import get_method
from . import run_folder as files
from .arguments import ScriptArguments, check_early_stopping

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run did: ``status`` is ``finished`` (outputs written) or ``stopped`` (by ``stopped_by``, a signal,
    after a checkpoint: resume with ``resume_from_checkpoint="latest"``). ``before`` / ``after``: held-out metrics."""

    output_dir: Path
    method: str
    status: str
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    train_seconds: float = 0.0
    stopped_by: str | None = None

    @property
    def exit_code(self) -> int:
        """``ows train``'s exit code for this result: 0 finished, 130 stopped by a signal."""
        return 0 if self.status == "finished" else 130


def _given(script: ScriptArguments, config: OWSConfig, training: Mapping[str, Any]) -> frozenset[str]:
    """The fields a Python caller set: those that differ from their defaults, and every TrainingArguments key."""
    changed = {f.name for obj in (script, config) for f in dataclasses.fields(obj)
               if f.init and getattr(obj, f.name) != type(obj).__dataclass_fields__[f.name].default}
    return frozenset(changed | set(training))


def prepare(script: ScriptArguments, config: OWSConfig,
            training: Mapping[str, Any]) -> tuple[ScriptArguments, OWSConfig, dict[str, Any]]:
    """Check a run's settings (no model, no file yet); returns copies ready for :func:`train`.

    Raises ``UsageError`` naming the field, the value and the fix."""
    from .checks import check_method_options, check_script_fields, check_trackers, check_training_fields, method_defaults

    given = script.given if script.given is not None else _given(script, config, training)
    script, training = dataclasses.replace(script), dict(training)
    script.given = given
    for name in ("model", "dataset"):
        if getattr(script, name) is None:
            raise UsageError(f"{name} is not set: add `{name}: ...` to the config or pass --{name}")
    if not training.get("output_dir"):
        raise UsageError("output_dir is not set: add `output_dir: ...` to the config or pass --output_dir")
    try:
        script.validate()
    except ValueError as err:
        raise UsageError(str(err)) from None
    config = config.with_defaults(method_defaults(script.method, config, training))  # None: the method's default
    check_script_fields(script)
    check_training_fields(training)
    check_trackers(training)
    check_method_options(script, config, training)
    try:
        check_early_stopping(script, training)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return script, config, training


def train(script: ScriptArguments, config: OWSConfig | None = None, training: Mapping[str, Any] | None = None, *,
          callbacks: Sequence[Any] = (), keep_weights: bool = True, heldout_before: bool = True,
          echo: Callable[[str], None] | None = None) -> RunResult:
    """Fine-tune ``script.model`` on ``script.dataset`` with ``script.method``; what ``ows train`` runs.

    ``config``: the OWS settings (default ``OWSConfig()``); ``training``: ``transformers.TrainingArguments``
    keyword arguments (``output_dir`` is required). ``callbacks``: ``TrainerCallback``s added after ows's own;
    a :class:`ows.recipe.RunCallback` also hears ``on_datasets``, ``on_setup`` and ``on_trained``. ``keep_weights=False``
    writes every output but the model weights. ``heldout_before=False`` skips the held-out metrics of the
    starting model. ``echo`` receives the lines ``ows train`` prints (default: the log at INFO).
    Bad input raises ``UsageError`` before the model loads; a run stopped by SIGINT/SIGTERM returns
    ``status="stopped"`` after saving a checkpoint.
    """
    from .. import distributed
    from ..integrations.checkpoint import check_compatible, check_tensor_files, resolve_resume
    from ..loading import load_tokenizer, model_identity, resolve_model_path
    from . import checks, data
    from .trainer import resolve_precision

    say = echo or logger.info
    script, config, training = prepare(script, config or OWSConfig(), training or {})
    out = Path(training["output_dir"])
    model_path = resolve_model_path(script.model)
    profile, profile_source = data.load_profile(script, config, out)
    uses_profile = profile is not None and data.wants_profile(script, config)
    if script.profile and not uses_profile:
        logger.warning("profile %s is not used: sampling_strategy %r of method %s draws without an outlier profile "
                       "(set sampling_strategy owl to sample by it)", script.profile, config.sampling_strategy,
                       script.method)
    if not uses_profile:  # neither used nor saved with the run
        profile, profile_source = None, None
    model_config = checks.check_model_config(model_path, script, config, profile.ratios if uses_profile else None)[1]
    checks.check_save_delta(script, model_path)
    script, training, precision = resolve_precision(script, training, model_config)  # a concrete dtype for the plan
    main = distributed.is_main_process()  # before torch.distributed starts: the launcher's RANK
    if script.max_memory:
        script, config, training = _fit_budget(script, config, training, model_config, say)
    requested = training.pop("resume_from_checkpoint", None)
    signature = files.settings_signature(script, config, training)
    checks.check_not_base_folder(out, model_path, script.model)
    # The same command rerun on its own stopped run (killed, out of time) continues it, as LLaMA-Factory does;
    # --overwrite_output_dir true starts over, --resume_from_checkpoint false too.
    continued = requested is None and not script.overwrite_output_dir and files.stopped_run(out, signature)
    resume = resolve_resume("latest" if continued else requested, out, signature, ignore=files.EXTENDABLE)
    taken_over = files.check_output_dir(out, signature, script.overwrite_output_dir, resuming=resume is not None)
    files.check_lock_file(out)
    identity = model_identity(script.model, model_path)
    if uses_profile:
        checks.check_profile_model(profile, profile_source, identity, script.allow_other_profile)
    if resume:
        check_compatible(resume, model_config, signature, files.RUN_KEYS)
        check_tensor_files(resume)
    if resume and main:
        say(f"resuming from {resume}" + (" (this output_dir holds this run, stopped before its end; "
                                         "--overwrite_output_dir true starts over)" if continued else ""))
    tokenizer = load_tokenizer(model_path, script.trust_remote_code)
    datasets = data.load_datasets(script, tokenizer)
    calibration = _calibration(script, config, tokenizer, datasets) if profile is None else None
    if main:  # every check passed
        logger.info(precision)
        if taken_over:
            say(taken_over)
    tracking = checks.prepare_trackers(training, out)
    if tracking and distributed.is_main_process():
        say(tracking)
    from .trainer import training_arguments

    args = training_arguments(training, has_eval=bool(datasets.eval), script=script)  # starts torch.distributed
    run = _Run(script, config, out, signature, model_path, identity, resume, tokenizer, datasets, args, say)
    return run.execute(profile, calibration, list(callbacks), keep_weights, heldout_before)


def _calibration(script: ScriptArguments, config: OWSConfig, tokenizer: Any,
                 datasets: Any) -> tuple[list[dict], str] | None:
    """The calibration windows and their source when the method needs a profile (a too-short text fails here)."""
    from .data import wants_profile
    from .profiling import calibration_source, calibration_windows

    if not wants_profile(script, config):
        return None
    texts, source = calibration_source(script, training_texts=datasets.texts)
    return calibration_windows(tokenizer, texts, script), source


def _fit_budget(script: ScriptArguments, config: OWSConfig, training: dict[str, Any], model_config: dict[str, Any],
                say: Callable[[str], None]) -> tuple[ScriptArguments, OWSConfig, dict[str, Any]]:
    """The run's settings chosen for ``max_memory`` (the plan is said); nothing fits: a ``UsageError``."""
    import torch

    from .. import distributed
    from . import budget

    settings = budget.estimate_settings(script, config, training, device="cuda" if torch.cuda.is_available() else "cpu")
    chosen = budget.plan(model_config, script.method, script.max_memory, settings, script.given,
                         script.memory_headroom)
    if not chosen.fits:
        budget.refuse(chosen, script.method, script.given, model_config)
    if distributed.is_main_process():
        say(f"memory plan for max_memory={script.max_memory} ({script.method}):\n" + "\n".join(chosen.lines()))
    return budget.apply_plan(chosen, script, config, training)


@dataclass
class _Run:
    """The part of a run after every check: lock the folder, load, profile, train, write."""

    script: ScriptArguments
    config: OWSConfig
    out: Path
    signature: dict[str, Any]
    model_path: str
    identity: str
    resume: str | None
    tokenizer: Any
    datasets: Any
    args: Any
    say: Callable[[str], None]

    def execute(self, profile: Any, calibration: tuple[list[dict], str] | None, callbacks: list[Any],
                keep_weights: bool, heldout_before: bool) -> RunResult:
        from .. import distributed

        distributed.barrier()  # every rank has read the output folder before rank 0 writes into it
        main = distributed.is_main_process()
        lock = files.RunLock(self.out)
        refused = None
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire()
            except UsageError as err:
                refused = str(err)
        refused = distributed.broadcast_object(refused)
        if refused:
            raise UsageError(refused)
        try:
            if main:
                files.remove_staging_leftovers(self.out)
                files.write_run_record(self.out, self.signature)
            result = self._train(profile, calibration, callbacks, keep_weights, heldout_before, main)
        finally:
            lock.release()
        distributed.shutdown()
        return result

    def _train(self, profile: Any, calibration: tuple[list[dict], str] | None, callbacks: list[Any],
               keep_weights: bool, heldout_before: bool, main: bool) -> RunResult:
        from .. import distributed
        from ..integrations.checkpoint import finished_step
        from ..integrations.hf import fsdp_requested
        from ..loading import load_model
        from ..methods import get_method
        from . import outputs
        from .profiling import measure_profile, profile_summary, profile_table
        from .tokens import learn_untrained_tokens
        from .trainer import make_trainer, restore_finished

        s = self.script
        model = load_model(self.model_path, s.dtype, s.trust_remote_code,
                           quantization=get_method(s.method).base_quantization, attn_implementation=s.attn_implementation)
        if calibration is not None:
            profile = measure_profile(model, calibration[0], s, self.config, calibration[1], self.identity)
        profile = distributed.broadcast_object(profile)  # one sampling distribution on every rank
        if profile is not None and main:
            profile.to_json(self.out / files.PROFILE)
            self.say(profile_summary(profile, self.config))
            logger.debug("%s", profile_table(profile, self.config))
        before = outputs.heldout_before(model, self.tokenizer, self.datasets, s, self.out, reuse=bool(self.resume)) \
            if heldout_before else {}
        if get_method(s.method).outside == "config":  # rows never trained in pretraining: learn them
            self.config = learn_untrained_tokens(model, self.datasets.train, self.config, s.given, self.tokenizer)
        setup, trainer, guards = make_trainer(model, self.tokenizer, s, self.config, profile, self.args, self.datasets,
                                              self.signature, callbacks)
        for callback in callbacks:
            getattr(callback, "on_datasets", lambda *a: None)(self.datasets)
            getattr(callback, "on_setup", lambda *a: None)(setup, trainer, self.tokenizer)
        started = time.perf_counter()
        if self.resume and finished_step(self.resume, self.args.max_steps) is not None and not fsdp_requested(self.args):
            restore_finished(trainer, self.resume)
        else:
            trainer.train(resume_from_checkpoint=self.resume)
        seconds = time.perf_counter() - started
        result = self._finish(setup, trainer, guards, before, seconds, main, callbacks, keep_weights)
        del model, setup, trainer, guards  # the DDP wrapper holds the process group: drop it before the group
        return result

    def _finish(self, setup: Any, trainer: Any, guards: tuple[Any, Any], before: dict, seconds: float, main: bool,
                callbacks: list[Any], keep_weights: bool) -> RunResult:
        """After training: the stop or failure reports, or the held-out metrics and every output."""
        from ..loading import shared_name
        from . import outputs

        stop, nonfinite = guards
        result = RunResult(self.out, setup.name, "finished", before, steps=trainer.state.global_step,
                           train_seconds=round(seconds, 1))
        if stop.signal_name:
            if main:
                self.say(f"stopped by {stop.signal_name} at step {stop.step}; a checkpoint was saved: rerun the same "
                         "command with --resume_from_checkpoint latest to continue")
            return dataclasses.replace(result, status="stopped", stopped_by=stop.signal_name)
        if nonfinite.failed:
            raise RuntimeError(f"stopped after {nonfinite.consecutive} steps in a row with non-finite gradients "
                               f"(nan_policy={self.script.nan_policy}); the newest checkpoint is the last good one")
        for callback in callbacks:
            getattr(callback, "on_trained", lambda *a: None)(setup, trainer, self.tokenizer)
        result.after = outputs.heldout_metrics(setup.model, self.tokenizer, self.datasets, self.script, "after")
        outputs.save_outputs(self.out, setup, trainer, self.tokenizer, self.config, result, keep_weights,
                             base_name=shared_name(self.script.model))
        if main:
            self.say(outputs.results_table(before, result.after, self.script.method))
            self.say(f"saved the fine-tuned model to {self.out}" if keep_weights else
                     f"saved the run's outputs (no weights: keep_weights=False) to {self.out}")
            if self.script.save_delta and keep_weights:
                self.say(outputs.save_delta(self.script, self.out))
        return result
