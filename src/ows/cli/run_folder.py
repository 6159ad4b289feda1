"""The output folder of one ``ows train`` run: an exclusive lock, leftovers of a killed final save, file modes."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..jsonio import give_usual_mode
from .common import UsageError

logger = logging.getLogger("ows.cli.train")
LOCK_NAME = ".ows.lock"
STAGING_PREFIX = ".ows-final-"


class RunLock:
    """An exclusive lock on ``folder`` held for the whole run (``flock`` on ``folder/.ows.lock``).

    The operating system releases it when the process ends, however it ends, so a lock left by a
    killed run is never in the way; a live one refuses a second run into the same folder. Where
    ``fcntl`` is missing (Windows) no lock is taken, with a warning.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._file: Any = None

    def acquire(self) -> None:
        """Take the lock or raise ``UsageError`` naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            logger.warning("no file locking on this platform: make sure no other run writes into %s", self.path.parent)
            return
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UsageError(f"output_dir={str(self.path.parent)!r} is in use by another ows train (pid {holder}): "
                             "wait for it to finish, or use another --output_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        give_usual_mode(self.path)
        self._file = handle

    def release(self) -> None:
        """Release the lock (closing the file releases the flock)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        if target.is_dir():
            shutil.rmtree(target)
        give_usual_mode(item)
        item.replace(target)
