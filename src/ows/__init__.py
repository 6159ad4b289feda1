"""ows: memory-efficient fine-tuning with Outlier-weighed Layerwise Sampling.

The core (config, layers, outliers, sampling, optim, controller) needs only torch; the Hugging Face
integration (``prepare_for_trainer``, ``OWSCallback``) and the recipe (``ows.train``, the function behind
``ows train``) need transformers. Names are imported on first
use, so ``import ows`` (and ``ows --help``) stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "OWSConfig": "config",
    "OWSController": "controller",
    "build_sampler": "samplers",
    "create_ows": "controller",
    "find_decoder_layers": "layers",
    "locate_decoder_layers": "layers",
    "set_trainable": "layers",
    "optimizer_state_bytes": "memory.measure",
    "estimate_memory": "memory.estimate",
    "GaLoreAdamW": "optim",
    "build_param_groups": "optim",
    "OutlierProfile": "outliers",
    "layer_outlier_ratio": "outliers",
    "profile_outliers": "outliers",
    "LayerSampler": "sampling",
    "sampling_probabilities": "sampling",
    "prepare_for_trainer": "integrations.hf",
    "attach_trainer": "integrations.hf",
    "OWSCallback": "integrations.hf",
    "train": "recipe.run",
    "RunResult": "recipe.run",
    "RunCallback": "recipe.callbacks",
    "ScriptArguments": "recipe.arguments",
    "UsageError": "errors",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .config import OWSConfig
    from .controller import OWSController, create_ows
    from .samplers import build_sampler
    from .memory.estimate import estimate_memory
    from .integrations.hf import OWSCallback, attach_trainer, prepare_for_trainer
    from .layers import find_decoder_layers, locate_decoder_layers, set_trainable
    from .memory.measure import optimizer_state_bytes
    from .optim import GaLoreAdamW, build_param_groups
    from .outliers import OutlierProfile, layer_outlier_ratio, profile_outliers
    from .sampling import LayerSampler, sampling_probabilities
    from .errors import UsageError
    from .recipe.arguments import ScriptArguments
    from .recipe.callbacks import RunCallback
    from .recipe.run import RunResult, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ows' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
