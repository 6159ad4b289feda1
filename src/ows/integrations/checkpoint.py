"""Checkpoint bookkeeping: completeness markers, picking the newest complete checkpoint, compatibility.

A checkpoint folder (``checkpoint-N``) counts as complete only once ``ows_complete.json`` is in it;
that file is written, atomically, after everything else of the checkpoint has been saved. A folder
without it was interrupted while being written and is never used for a resume.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from ..jsonio import write_json

logger = logging.getLogger(__name__)

MARKER = "ows_complete.json"
_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Model-config keys that must agree between a checkpoint and the model it is loaded into.
SHAPE_KEYS = ("model_type", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "vocab_size",
              "intermediate_size", "num_attention_heads", "num_key_value_heads")


def mark_complete(checkpoint_dir: str | Path, step: int, run: dict[str, Any]) -> Path:
    """Write the completeness marker (with the step and the run's settings) into ``checkpoint_dir``."""
    path = Path(checkpoint_dir) / MARKER
    write_json({"step": step, "run": run}, path, default=str)
    return path


def is_complete(checkpoint_dir: str | Path) -> bool:
    """Whether ``checkpoint_dir`` holds a readable completeness marker."""
    try:
        json.loads((Path(checkpoint_dir) / MARKER).read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-N`` folder in ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _PATTERN.match(p.name))]
    return sorted(found)


TRAINER_STATE = "trainer_state.json"
TENSOR_FILE_SUFFIXES = (".pt", ".pth", ".bin")
NOT_LOADED = ("training_args.bin",)  # written for reference, never loaded on resume


def damaged_file(checkpoint_dir: str | Path) -> Path | None:
    """The first JSON file of a checkpoint that cannot be read (the marker or ``trainer_state.json``), else None."""
    for name in (MARKER, TRAINER_STATE):
        path = Path(checkpoint_dir) / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return path
    return None


def other_run(checkpoint_dir: str | Path, run: dict[str, Any], ignore: tuple[str, ...] = ()) -> str | None:
    """None when ``checkpoint_dir``'s marker records the settings ``run`` (this run wrote it; the settings in
    ``ignore`` may differ), else the first setting that differs, as ``key=saved (this run: value)``; a checkpoint
    without a readable marker is no run's."""
    try:
        saved = json.loads((Path(checkpoint_dir) / MARKER).read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        return "its completeness marker cannot be read"
    if not isinstance(saved, dict):
        return "its marker records no settings"
    for key in sorted((set(saved) | set(run)) - set(ignore)):
        if _canonical(saved.get(key)) != _canonical(run.get(key)):
            return f"{key}={saved.get(key)!r} (this run: {run.get(key)!r})"
    return None


def _canonical(value: Any) -> str:
    return json.dumps(json.loads(json.dumps(value, default=str)), sort_keys=True)


def latest_complete_checkpoint(output_dir: str | Path, run: dict[str, Any] | None = None,
                               ignore: tuple[str, ...] = ()) -> Path | None:
    """The newest complete, readable checkpoint (of the run with settings ``run``, when given, the settings in
    ``ignore`` aside); newer incomplete or damaged ones, and those another run wrote, are skipped with a warning."""
    for step, path in reversed(list_checkpoints(output_dir)):
        damaged = damaged_file(path)
        if not is_complete(path):
            logger.warning("skipping %s: it is incomplete (the run was interrupted while saving it)", path)
        elif damaged is not None:
            logger.warning("skipping %s: %s is not valid JSON (the checkpoint is damaged)", path, damaged.name)
        elif run is not None and (differs := other_run(path, run, ignore)) is not None:
            logger.warning("skipping %s: another run wrote it (%s); 'latest' resumes only this run's checkpoints "
                           "(give its path to resume from it anyway)", path, differs)
        else:
            return path
    return None


def resolve_resume(value: Any, output_dir: str | Path, run: dict[str, Any] | None = None,
                   ignore: tuple[str, ...] = ()) -> str | None:
    """The checkpoint folder to resume from, for ``resume_from_checkpoint`` = None / 'latest' / a path.

    'latest' (or true) picks the newest complete checkpoint that this run (settings ``run``) wrote: one written
    by another run of the same folder (e.g. before ``overwrite_output_dir``) is never resumed this way; with
    none, the run starts from scratch, with a log line. A given path must be a complete, readable checkpoint
    folder (of any run whose method settings match, see :func:`check_compatible`): a folder that is not a
    checkpoint at all, one whose writing was interrupted and one with a damaged JSON file are each refused
    with their own message.
    """
    if value in (None, False, "", "false", "none"):
        return None
    if value is True or str(value).lower() in ("latest", "true"):
        latest = latest_complete_checkpoint(output_dir, run, ignore)
        if latest is None:
            logger.info("no complete checkpoint of this run in %s: starting from the beginning", output_dir)
        return str(latest) if latest else None
    path = Path(str(value))
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={str(value)!r} does not exist: give a checkpoint-N folder "
                                "or 'latest'")
    if not (path / MARKER).exists() and not (path / TRAINER_STATE).exists() and not _PATTERN.match(path.name):
        raise ValueError(f"resume_from_checkpoint={str(value)!r} is not a checkpoint folder (no {TRAINER_STATE}, no "
                         f"{MARKER}): give a checkpoint-N folder written by ows train, or 'latest'")
    if not is_complete(path):
        raise ValueError(f"resume_from_checkpoint={str(value)!r} is incomplete (interrupted while saving): "
                         "use 'latest' to pick the newest complete checkpoint")
    damaged = damaged_file(path)
    if damaged is not None:
        raise ValueError(f"resume_from_checkpoint={str(value)!r}: {damaged} is not valid JSON (the checkpoint is "
                         "damaged): resume from an older checkpoint-N or 'latest'")
    return str(path)


def check_tensor_files(checkpoint_dir: str | Path) -> None:
    """Open every tensor file of a checkpoint as the Trainer will (``weights_only=True``, memory-mapped).

    A file holding anything but tensors and plain containers is refused with one line naming it, before
    any work; nothing in it runs.
    """
    import torch
    from transformers.trainer_pt_utils import safe_globals  # the numpy RNG state the Trainer allows

    for path in sorted(Path(checkpoint_dir).iterdir()):
        if path.suffix not in TENSOR_FILE_SUFFIXES or not path.is_file() or path.name in NOT_LOADED:
            continue
        try:
            _load_tensors_only(torch, safe_globals, path)
        except Exception as err:  # torch raises UnpicklingError (a refused object) or RuntimeError (not its format)
            why = "holds objects other than tensors" if type(err).__name__ == "UnpicklingError" else "cannot be read"
            raise ValueError(f"resume_from_checkpoint: {path} {why}: it is not a tensor-only checkpoint file and is "
                             "refused (ows loads checkpoints with weights_only=True); resume from another checkpoint"
                             ) from None


def _load_tensors_only(torch: Any, safe_globals: Any, path: Path) -> None:
    with safe_globals():
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # files of the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            torch.load(path, map_location="cpu", weights_only=True)


def finished_step(checkpoint_dir: str | Path, max_steps: int) -> int | None:
    """The step of a checkpoint that ends the run (its ``global_step`` reached ``max_steps``; when that is not
    positive, the ``max_steps`` the checkpoint recorded), else None."""
    path = Path(checkpoint_dir) / TRAINER_STATE
    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    limit = max_steps if max_steps > 0 else int(state.get("max_steps") or 0)
    step = int(state.get("global_step") or 0)
    return step if limit > 0 and step >= limit else None


def check_compatible(checkpoint_dir: str | Path, model_config: dict[str, Any], run: dict[str, Any],
                     run_keys: tuple[str, ...]) -> None:
    """Raise ``ValueError`` if the checkpoint was written for another model or with other run settings."""
    folder = Path(checkpoint_dir)
    config_file = folder / "config.json"
    if config_file.is_file():
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        for key in SHAPE_KEYS:
            if key in saved and key in model_config and saved[key] != model_config[key]:
                raise ValueError(f"resume_from_checkpoint={str(folder)!r} is from another model ({key}={saved[key]!r}, "
                                 f"this model has {model_config[key]!r}): resume with the model it was trained from")
    marker = folder / MARKER
    if marker.is_file():
        saved_run = json.loads(marker.read_text(encoding="utf-8")).get("run", {})
        for key in run_keys:
            if key in saved_run and key in run and json.dumps(saved_run[key], default=str) != json.dumps(run[key], default=str):
                raise ValueError(f"resume_from_checkpoint={str(folder)!r} was written with {key}={saved_run[key]!r}, "
                                 f"this run has {run[key]!r}: resume with the same settings or start a new output_dir")
