"""The training recipe: one run as a function, :func:`train`, with its checks, data, Trainer and run folder.

``ows.train(script, config, training)`` is what ``ows train`` calls after parsing its flags; the
modules here are the steps of that run, in order: ``checks`` (before any model loads), ``budget``
(``max_memory``), ``data``, ``profiling``, ``trainer``, ``outputs``, and ``run_folder`` (what a run
folder holds). Names are imported on first use, so ``ows memory`` can read the budget code without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {"train": "run", "prepare": "run", "RunResult": "run", "RunCallback": "callbacks",
            "ScriptArguments": "arguments", "DEMO": "arguments"}

if TYPE_CHECKING:  # pragma: no cover
    from .arguments import DEMO, ScriptArguments
    from .callbacks import RunCallback
    from .run import RunResult, prepare, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ows.recipe' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
