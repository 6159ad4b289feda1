"""Load a benchmark script (not a package module) by file name, for the tests of benchmarks/."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(file_name: str) -> ModuleType:
    """``benchmarks/<file_name>`` executed as a fresh module named ``<stem>_under_test``."""
    spec = importlib.util.spec_from_file_location(Path(file_name).stem + "_under_test", BENCHMARKS / file_name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
