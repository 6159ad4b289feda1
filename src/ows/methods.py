"""Fine-tuning methods selectable from one command, built in one place for fair comparisons.

``ows``: OWL-weighted layer sampling + GaLore. ``ows-fullrank``: weighted sampling, plain AdamW.
``lisa``: uniform sampling, plain AdamW. ``galore``: every decoder layer with GaLore, no sampling.
``full``: AdamW on everything. ``lora``: peft LoRA on every linear layer (optional extra).
All but ``lora`` use ows's optimizer so that only the method differs.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .config import OWSConfig
from .controller import OWSController
from .layers import find_decoder_layers, set_trainable
from .optim.galore_adamw import GaLoreAdamW
from .optim.param_groups import build_param_groups

logger = logging.getLogger(__name__)

METHODS = ("ows", "ows-fullrank", "lisa", "galore", "full", "lora")
SAMPLING_METHODS = ("ows", "ows-fullrank", "lisa")


@dataclass
class MethodSetup:
    """What a trainer needs for one method: the (possibly wrapped) model, optimizer and callbacks."""

    name: str
    model: nn.Module
    optimizer: Any | None
    config: OWSConfig | None
    controller: OWSController | None = None
    callbacks: list[Any] = field(default_factory=list)


def method_config(method: str, config: OWSConfig) -> OWSConfig:
    """The OWS settings a method runs with (``lisa`` forces uniform sampling and plain AdamW)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown: use one of {', '.join(METHODS)}")
    if method == "ows-fullrank":
        return dataclasses.replace(config, use_galore=False)
    if method == "lisa":
        return dataclasses.replace(config, use_galore=False, sampling_strategy="uniform")
    return config


def needs_profile(method: str, config: OWSConfig) -> bool:
    """Whether the method's sampling needs an outlier profile."""
    return method in SAMPLING_METHODS and method_config(method, config).sampling_strategy in ("owl", "owl_reverse")


def build_method(
    method: str,
    model: nn.Module,
    config: OWSConfig,
    profile: Any | None = None,
    *,
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lora: dict[str, Any] | None = None,
) -> MethodSetup:
    """Set ``model`` up for ``method``; for ``lora`` the returned model is the peft wrapper."""
    cfg = method_config(method, config)
    opt_kw = dict(lr=lr, betas=betas, eps=eps)
    if method in SAMPLING_METHODS:
        from .integrations.hf import prepare_for_trainer

        optimizer, callback = prepare_for_trainer(model, cfg, profile, weight_decay=weight_decay, **opt_kw)
        return MethodSetup(method, model, optimizer, cfg, callback.controller, [callback])
    if method == "galore":
        groups = build_param_groups(model, cfg, weight_decay)
        set_trainable(find_decoder_layers(model, cfg.layers_attr), True)
        return MethodSetup(method, model, GaLoreAdamW(groups, **opt_kw), cfg)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        groups = [
            {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ]
        return MethodSetup(method, model, GaLoreAdamW([g for g in groups if g["params"]], **opt_kw), None)
    return MethodSetup(method, _wrap_lora(model, lora or {}), None, None)


def _wrap_lora(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise FileNotFoundError("method='lora' needs peft: pip install 'ows[lora]'") from None
    lora_config = LoraConfig(
        r=options.get("r", 16), lora_alpha=options.get("alpha", 32), lora_dropout=options.get("dropout", 0.05),
        target_modules="all-linear", task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(model, lora_config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    logger.info("LoRA r=%d on all linear layers: %d trainable parameters", lora_config.r, trainable)
    return wrapped
