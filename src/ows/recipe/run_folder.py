"""The output folder of one run, in one place: what it holds, which run it belongs to, its lock and staging.

A run folder holds the model (a Hugging Face folder) and the files named below. ``ows_run.json``
records the settings that define the run (:func:`settings_signature`), so that a different run is
refused the folder (:func:`check_output_dir`) and ``ows export`` finds the base model
(:func:`read_run_record`). The lock keeps a second run out while one writes; a killed final save
leaves only a staging folder, removed by the next run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from ..jsonio import give_usual_mode
from ..errors import UsageError

logger = logging.getLogger(__name__)
LOCK_NAME = ".ows.lock"
STAGING_PREFIX = ".ows-final-"
RUN_RECORD = "ows_run.json"  # the run's settings: which run the folder holds, and its base model
PROFILE = "profile.json"  # the outlier profile the run sampled with
HELDOUT_BEFORE = "heldout_before.json"  # held-out metrics of the starting model (a resumed run reuses them)
METHOD_CONFIG = "ows_config.json"  # the method and its OWS settings
SCHEDULE = "schedule.json"  # the active layers of every period, visits per layer
RESULTS = "results.json"  # held-out metrics before and after, train time, steps, peak memory
LOSS_CURVE = "loss_curve.png"
# Settings that shape the optimizer state: a checkpoint written with other values cannot be resumed.
# The memory options change the arithmetic of a step (fused: clipping by the previous step's norm; frozen layers
# quantized; 8-bit moments; fp32 masters): a run resumed with another value would not continue the same run.
RUN_KEYS = ("method", "use_galore", "rank", "proj_type", "target_modules", "num_active_layers", "train_embeddings",
            "train_lm_head", "train_final_norm", "lora_r", "layers_attr", "fused_step", "frozen_quantization",
            "outside_optimizer", "master_weights")
# Not part of a run's identity: how it is launched and logged, where its folder is (a moved or copied run folder
# can be resumed), and the chunked loss (it equals the standard one: resuming may change it).
NOT_IN_SIGNATURE = ("overwrite_output_dir", "resume_from_checkpoint", "logging_steps", "report_to", "disable_tqdm",
                    "loss_chunk_size", "output_dir", "logging_dir", "allow_other_profile", "given", "save_delta",
                    "memory_headroom")


class RunLock:
    """An exclusive lock on ``folder`` held for the whole run (``flock`` on ``folder/.ows.lock``).

    The operating system releases it when the process ends, however it ends, so a lock left by a
    killed run is never in the way; a live one refuses a second run into the same folder. The lock file
    is opened without following a link (``O_NOFOLLOW``) and must be a plain file of its own: a link, a
    folder or a file linked elsewhere is refused (ows never writes through one). Where ``fcntl`` is
    missing (Windows) no lock is taken, with a warning.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``UsageError`` naming the process that holds it (or what is wrong with the file)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            logger.warning("no file locking on this platform: make sure no other run writes into %s", self.path.parent)
            return
        check_lock_file(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as err:  # a link created since the check (ELOOP), a folder (EISDIR)
            why = {errno.ELOOP: "a symbolic link", errno.EISDIR: "a folder"}.get(err.errno, err.strerror)
            raise UsageError(_lock_refusal(self.path, why or type(err).__name__)) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_nlink != 1:
            os.close(fd)
            raise UsageError(_lock_refusal(self.path, "not a plain file of its own"))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(f"output_dir={str(self.path.parent)!r} is in use by another ows train (pid {holder}): "
                             "wait for it to finish, or use another --output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (closing the file releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_refusal(path: Path, why: str) -> str:
    return (f"output_dir={str(path.parent)!r}: its lock file {LOCK_NAME} is {why}; ows never writes through a link or "
            f"into a file it did not create: remove {str(path)!r} and run again")


def check_lock_file(folder: Path) -> None:
    """Refuse (``UsageError``) a ``.ows.lock`` in ``folder`` that is a link, a folder or not a plain file of its own;
    run before any work, and again when the lock is taken."""
    path = Path(folder) / LOCK_NAME
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as err:  # e.g. a parent that is a file: check_output_dir names that
        logger.debug("cannot inspect %s: %s", path, err)
        return
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(_lock_refusal(path, f"a symbolic link (to {os.readlink(path)!r})"))
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(_lock_refusal(path, "a folder"))
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise UsageError(_lock_refusal(path, "not a plain file of its own (a device, a pipe or a hard link)"))


def remove_staging_leftovers(folder: Path) -> int:
    """Remove the staging folders a killed final save left in ``folder``; returns how many."""
    stale = [p for p in folder.glob(STAGING_PREFIX + "*") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        logger.info("removed %s, left by a run killed while saving its model", path.name)
    return len(stale)


def publish_folder(staging: Path, out: Path) -> None:
    """Move every file of ``staging`` into ``out`` (replacing what is there) with the usual file modes."""
    for item in staging.iterdir():
        target = out / item.name
        if target.is_symlink():  # replaced, never written through
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        give_usual_mode(item)
        item.replace(target)


def settings_signature(script: Any, config: Any, training: dict[str, Any],
                       leave_out: tuple[str, ...] = NOT_IN_SIGNATURE) -> dict[str, Any]:
    """The settings that define a run (``ScriptArguments``, ``OWSConfig`` and TrainingArguments values, without
    ``leave_out``): a folder holding other settings holds a different run."""
    merged = {**vars(script), **config.to_dict(), **training}
    return {k: merged[k] for k in sorted(merged) if k not in leave_out}


EXTENDABLE = ("max_steps", "num_train_epochs")  # larger with --resume_from_checkpoint: the same run, trained longer
TRAINED = ("results.json", "model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
WAYS_FORWARD = "use a new --output_dir, or pass --overwrite_output_dir true to replace it"


def check_output_dir(path: Path, signature: dict[str, Any], overwrite: bool, resuming: bool = False) -> str | None:
    """Refuse a folder that cannot be made, or a non-empty one that does not hold this very run (unless ``overwrite``).

    Two differences are not refused, and the line returned says so: an attempt that stopped before its first step
    (no checkpoint, no outputs) is replaced, and a run resumed (``resuming``) with a larger ``max_steps`` or
    ``num_train_epochs`` and nothing else changed continues. A refusal names the field, both values and the
    two ways forward."""
    blocker = next((p for p in [path, *path.parents] if p.exists()), None)
    if blocker is not None and blocker != path and not blocker.is_dir():
        raise UsageError(f"output_dir={str(path)!r} cannot be created: {str(blocker)!r} is a file: give a folder path")
    if not path.exists() or overwrite:
        return None
    if not path.is_dir():
        raise UsageError(f"output_dir={str(path)!r} is a file: give a folder path")
    record = path / RUN_RECORD
    if not record.is_file():
        if any(p.name != LOCK_NAME for p in path.iterdir()):
            raise UsageError(f"output_dir={str(path)!r} is not empty and holds no ows run: {WAYS_FORWARD}")
        return None
    try:
        previous = json.loads(record.read_text(encoding="utf-8")).get("settings", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        previous = {"unreadable": True}
    changed = sorted(k for k in set(previous) | set(signature)
                     if json.dumps(previous.get(k), default=str) != json.dumps(signature.get(k), default=str))
    if not changed:
        return None
    difference = _difference(changed, previous, signature)
    if not _trained(path):
        return f"output_dir {path} holds an attempt that stopped before its first step ({difference}): starting over"
    longer = _longer(changed, previous, signature)
    if longer and resuming:
        return (f"continuing the run in {path} for longer ({difference}); the learning-rate schedule follows the new "
                "length from here")
    if longer:
        how = "pass --resume_from_checkpoint latest to train it longer, or" if any(path.glob("checkpoint-*")) else \
            "it holds no checkpoint to continue from (save_strategy no):"
        raise UsageError(f"output_dir={str(path)!r} holds this run with {difference}: {how} {WAYS_FORWARD}")
    raise UsageError(f"output_dir={str(path)!r} holds a different run ({difference}): {WAYS_FORWARD}")


def stopped_run(path: Path, signature: dict[str, Any]) -> bool:
    """Whether ``path`` holds this very run (the same settings) stopped before its end: a checkpoint and no
    results. Rerunning the same command then continues it (``ows train`` resumes its latest checkpoint)."""
    if not path.is_dir() or read_run_record(path) != json.loads(json.dumps(signature, default=str)):
        return False
    return any(path.glob("checkpoint-*")) and not (path / RESULTS).exists()


def _difference(changed: list[str], previous: dict[str, Any], now: dict[str, Any]) -> str:
    """``learning_rate 0.0003 there, 0.1 now`` for the first changed field, and how many others changed."""
    first = changed[0]
    more = f"; {len(changed) - 1} more: {', '.join(changed[1:4])}{'...' if len(changed) > 4 else ''}" \
        if len(changed) > 1 else ""
    return f"{first} {previous.get(first)!r} there, {now.get(first)!r} now{more}"


def _longer(changed: list[str], previous: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether only max_steps / num_train_epochs changed, each to a larger number."""
    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None

    for key in changed:
        old, new = number(previous.get(key)), number(now.get(key))
        if key not in EXTENDABLE or old is None or new is None or new <= old:
            return False
    return True


def _trained(path: Path) -> bool:
    """Whether a run folder holds anything a run made by training: a checkpoint, results, weights."""
    return any(path.glob("checkpoint-*")) or any((path / name).exists() for name in TRAINED)


def write_run_record(out: Path, signature: dict[str, Any]) -> None:
    """Record in ``out`` which run it holds (its settings and start time)."""
    import time

    from ..jsonio import write_json

    write_json({"settings": signature, "started": time.strftime("%Y-%m-%d %H:%M:%S")}, out / RUN_RECORD, default=str)


def read_run_record(folder: Path) -> dict[str, Any] | None:
    """The settings recorded in a run folder's ``ows_run.json``; None when there is none or it cannot be read."""
    try:
        return json.loads((Path(folder) / RUN_RECORD).read_text(encoding="utf-8")).get("settings", {})
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None


def run_base(run: str, override: str | None = None) -> tuple[str, str]:
    """(base folder, base name) of an ``ows train`` output folder (the model it was trained from, or ``override``);
    a missing or foreign folder, or a base that is not a local folder, is a ``UsageError``."""
    from ..loading import model_identity, resolve_model_path

    settings = read_run_record(Path(run))
    if not (Path(run) / "config.json").is_file() or settings is None:
        raise UsageError(f"RUN {run!r} is not an ows train output folder (config.json and {RUN_RECORD}): give the "
                         "output_dir of a finished run")
    model = override or settings.get("model")
    resolved = resolve_model_path(model)
    if not Path(resolved).is_dir():
        raise UsageError(f"base model {model!r} is not a local folder: pass --base <folder of the base model>")
    return resolved, model_identity(model, resolved)
