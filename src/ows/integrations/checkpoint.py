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


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are skipped with a warning."""
    for step, path in reversed(list_checkpoints(output_dir)):
        if is_complete(path):
            return path
        logger.warning("skipping %s: it is incomplete (the run was interrupted while saving it)", path)
    return None


def resolve_resume(value: Any, output_dir: str | Path) -> str | None:
    """The checkpoint folder to resume from, for ``resume_from_checkpoint`` = None / 'latest' / a path.

    'latest' (or true) with no complete checkpoint starts from scratch, with a log line.
    """
    if value in (None, False, "", "false", "none"):
        return None
    if value is True or str(value).lower() in ("latest", "true"):
        latest = latest_complete_checkpoint(output_dir)
        if latest is None:
            logger.info("no complete checkpoint in %s: starting from the beginning", output_dir)
        return str(latest) if latest else None
    path = Path(str(value))
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={str(value)!r} does not exist: give a checkpoint-N folder "
                                "or 'latest'")
    if not is_complete(path):
        raise ValueError(f"resume_from_checkpoint={str(value)!r} is incomplete (interrupted while saving): "
                         "use 'latest' to pick the newest complete checkpoint")
    return str(path)


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
