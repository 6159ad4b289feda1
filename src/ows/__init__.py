"""ows: memory-efficient fine-tuning with Outlier-weighed Layerwise Sampling.

The core (config, layers, outliers, sampling, optim, controller) needs only torch; the Hugging Face
integration (``prepare_for_trainer``, ``OWSCallback``) is imported on first use.
"""

from __future__ import annotations

from typing import Any

from .config import OWSConfig
from .controller import OWSController, build_sampler, create_ows
from .layers import find_decoder_layers, locate_decoder_layers, set_trainable
from .memory import optimizer_state_bytes
from .optim import GaLoreAdamW, build_param_groups
from .outliers import OutlierProfile, layer_outlier_ratio, profile_outliers
from .sampling import LayerSampler, sampling_probabilities

__version__ = "0.1.0"

_LAZY = {"prepare_for_trainer": "integrations.hf", "OWSCallback": "integrations.hf"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'ows' has no attribute {name!r}")


__all__ = [
    "GaLoreAdamW",
    "LayerSampler",
    "OWSCallback",
    "OWSConfig",
    "OWSController",
    "OutlierProfile",
    "build_param_groups",
    "build_sampler",
    "create_ows",
    "find_decoder_layers",
    "layer_outlier_ratio",
    "locate_decoder_layers",
    "optimizer_state_bytes",
    "prepare_for_trainer",
    "profile_outliers",
    "sampling_probabilities",
    "set_trainable",
]
