"""Output folders of ``ows export`` and ``ows merge``: new or empty, written in a staging folder and moved into place.

A failure while writing (a full disk) leaves neither a half-written file nor a folder that the rerun would
refuse; every file and folder gets the usual mode under the umask. Files copied from a folder that is not
trusted (a delta, a run) are refused when they are symbolic links: a link would pull some other file's
content into the output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..jsonio import give_usual_mode

STAGING_MARK = ".ows-staging-"
# the files of a model folder besides its weights: the run's config (its dtype) and tokenizer
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
               "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "added_tokens.json")


def check_new_folder(path: str | Path, what: str = "OUT") -> Path:
    """``path`` as a folder that may be written: it does not exist or is an empty folder, under folders only.

    Raises ``ValueError`` (one line naming ``what``, the path and the fix) otherwise."""
    folder = Path(path)
    blocker = next((p for p in folder.parents if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be created: {str(blocker)!r} is a file: give a folder path")
    if folder.is_symlink():
        raise ValueError(f"{what} {str(path)!r} is a symbolic link: ows does not write through links: give a new "
                         "folder")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{what} {str(path)!r} exists and is not empty: give a new folder")
    return folder


def check_no_links(folder: str | Path, names: tuple[str, ...], what: str) -> None:
    """A ``ValueError`` when one of ``names`` in ``folder`` is a symbolic link (its content is never copied)."""
    for name in names:
        path = Path(folder) / name
        if path.is_symlink():
            raise ValueError(f"{what} {str(folder)!r}: {name} is a symbolic link (to {os.readlink(path)!r}); ows "
                             "copies no linked file into an output: replace it with the file itself")


def copy_model_files(sources: list[tuple[Path, bool]], out: Path) -> list[str]:
    """Copy each of :data:`MODEL_FILES` from the first of ``sources`` that holds it into ``out``; ``(folder,
    links_allowed)``: a link in a folder whose links are not allowed is refused (a ``ValueError``). Returns the
    names copied. Copies get the usual mode (not their source's)."""
    copied = []
    for name in MODEL_FILES:
        for folder, links_allowed in sources:
            source = folder / name
            if source.is_symlink() and not links_allowed:
                check_no_links(folder, (name,), "folder")
            if source.is_file():
                shutil.copyfile(source, out / name)
                give_usual_mode(out / name)
                copied.append(name)
                break
    return copied


@contextlib.contextmanager
def staged(out: Path, replace: bool = False) -> Iterator[Path]:
    """A staging folder beside ``out``, moved to ``out`` when the block ends without an error, removed when it
    fails. ``out`` must not exist or be empty, unless ``replace`` (then the old folder is removed once the new
    one is complete)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{STAGING_MARK}", dir=out.parent))
    try:
        yield staging
        for path in [staging, *staging.rglob("*")]:
            give_usual_mode(path)
        old = None
        if replace and out.exists() and not out.is_symlink() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}{STAGING_MARK}old-", dir=out.parent))
            os.replace(out, old)
        os.replace(staging, out)  # onto a missing or empty folder: one rename
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
