"""Files of ows (JSON configs, profiles, plots): written atomically, never through a link; JSON read from a path or
the JSON text."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@functools.lru_cache(maxsize=None)
def _umask() -> int:
    """The process umask, read from /proc where it can be (setting it, the only other way, races other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def give_usual_mode(path: str | Path) -> None:
    """Set the mode a file (or folder) gets when created normally under the user's umask (e.g. 0644, 0755).

    Temporary files (``tempfile``) are created 0600; a file published from one would be unreadable to
    other users and to a serving process. A symbolic link is left alone (``chmod`` would change its target).
    """
    target = Path(path)
    if target.is_symlink():
        return
    os.chmod(target, (0o777 if target.is_dir() else 0o666) & ~_umask())


def write_file(content: str | bytes, path: str | Path) -> Path:
    """Write ``content`` to ``path`` via a temporary file and a rename, with the usual file mode: a reader never sees
    half a file, and a link at ``path`` is replaced, never written through."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content.encode("utf-8") if isinstance(content, str) else content)
        give_usual_mode(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def write_json(data: Any, path: str | Path | None = None, **dump_kwargs: Any) -> str:
    """Serialise ``data``; when ``path`` is given, write it with :func:`write_file`."""
    text = json.dumps(data, indent=2, **dump_kwargs)
    if path is not None:
        write_file(text + "\n", path)
    return text


def read_json(path_or_text: str | Path, what: str, fix: str) -> Any:
    """Parse a JSON file, or JSON text starting with '{'; errors name ``what`` and the ``fix``."""
    text = str(path_or_text)
    source = "" if text.lstrip().startswith("{") else f" {text!r}"
    if source:
        path = Path(path_or_text)
        if not path.is_file():
            raise FileNotFoundError(f"{what} {str(path)!r} does not exist: {fix}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} {str(path)!r} is not UTF-8 text: {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}{source} is not valid JSON ({err}): {fix}") from None


def iter_jsonl(lines: Iterable[str], source: str) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank JSON line; a bad line is a ``ValueError`` naming ``source`` and it."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source} line {number}: invalid JSON ({err.msg}): write one JSON object per line") from None
