"""Split a model's parameters into the optimizer groups OWS needs.

Every decoder-layer parameter is put in the optimizer, trainable or not: layers frozen when the
optimizer is built still train once sampled (the controller switches ``requires_grad``).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..choices import svd_for
from ..config import OWSConfig
from ..layers import DecoderLayers, input_embeddings, locate_decoder_layers, stop_gradient_at_input_embeddings, weight_in_out

logger = logging.getLogger(__name__)


def _targeted(name: str, targets: list[str] | None) -> bool:
    if targets is None:
        return True
    return any(name == t or name.endswith("." + t) for t in targets)


def _embedding_params(model: nn.Module, layer_ids: set[int]) -> tuple[set[int], set[int]]:
    """ids of input-embedding parameters and of output-head parameters outside the decoder layers."""
    embed: set[int] = set()
    head: set[int] = set()
    get_out = getattr(model, "get_output_embeddings", None)
    inputs = input_embeddings(model)
    outputs = get_out() if callable(get_out) else None
    for module in model.modules():
        if isinstance(module, nn.Embedding) and id(module.weight) not in layer_ids:
            embed.add(id(module.weight))
    if inputs is not None:
        embed.update(id(p) for p in inputs.parameters())
    if isinstance(outputs, nn.Module):
        head.update(id(p) for p in outputs.parameters())
    return embed, head


def build_param_groups(
    model: nn.Module, config: OWSConfig, weight_decay: float = 0.0, *, layers: DecoderLayers | None = None
) -> list[dict[str, Any]]:
    """Param groups for :class:`ows.GaLoreAdamW` (or any torch optimizer when ``config.use_galore`` is off).

    Groups (empty ones dropped), each tagged with ``"ows_group"``:
    ``layers_galore`` 2-D target weights of decoder layers (with GaLore keys when ``use_galore``),
    ``layers_other`` the rest of the decoder layers (norms, biases; no weight decay),
    ``always`` / ``always_no_decay`` the trainable parameters outside the decoder layers.
    ``master_weights`` marks the layer groups ``master``; ``outside_optimizer`` gives the outside groups
    8-bit moments (``state_bits``) or, for their 2-D weights, GaLore keys (and ``project_head_grad``, see
    :mod:`ows.optim.head_grad`).
    Parameters outside the layers that the config turns off are frozen here (``requires_grad=False``).
    With ``train_embeddings`` off, the input-embedding output is detached (a tied head still trains
    through its output role), so the backward pass stops at the lowest sampled layer. ``layers``: the
    decoder layers when already located (else found from ``config.layers_attr``).
    """
    config = config.with_defaults()  # fields left at None: ows's defaults
    found = layers if layers is not None else locate_decoder_layers(model, config.layers_attr)
    layer_ids = {id(p) for p in found.modules.parameters()}
    galore, layer_other = [], []
    seen: set[int] = set()
    for layer in found.modules:
        linear_weights = {id(m.weight): name for name, m in layer.named_modules() if weight_in_out(m) is not None}
        for _, param in layer.named_parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            name = linear_weights.get(id(param))
            is_target = param.dim() == 2 and name is not None and _targeted(name, config.target_modules)
            (galore if is_target else layer_other).append(param)
    if config.target_modules is not None and not galore:
        raise ValueError(
            f"target_modules={config.target_modules!r} matches no linear module in the decoder layers: "
            "use module names such as 'q_proj' or None for all"
        )
    always, always_nd = _outside_params(model, config, layer_ids)
    if stop_gradient_at_input_embeddings(model, stop=not config.train_embeddings) and not config.train_embeddings:
        logger.info("input embeddings not trained: no backward below the lowest sampled layer")
    master = {"master": True} if config.master_weights else {}
    outside = {"state_bits": 8} if config.outside_optimizer == "adamw8bit" else {}
    groups = [
        {**_galore_group(galore, config, weight_decay), **master},
        {"params": layer_other, "weight_decay": 0.0, "ows_group": "layers_other", **master},
        {"params": always, "weight_decay": weight_decay, "ows_group": "always", **outside,
         **(dict(_galore_keys(config, outside=True), project_head_grad=config.project_head_grad)
            if config.outside_optimizer == "galore" else {})},
        {"params": always_nd, "weight_decay": 0.0, "ows_group": "always_no_decay", **outside},
    ]
    return [g for g in groups if g["params"]]


def _galore_keys(config: OWSConfig, outside: bool = False) -> dict[str, Any]:
    return dict(rank=config.rank, update_proj_gap=config.update_proj_gap, scale=config.galore_scale,
                proj_type=config.proj_type, svd=svd_for(config.svd_method, outside))


def _galore_group(params: list, config: OWSConfig, weight_decay: float) -> dict[str, Any]:
    group: dict[str, Any] = {"params": params, "weight_decay": weight_decay, "ows_group": "layers_galore"}
    if config.use_galore:
        group.update(_galore_keys(config))
    return group


def _outside_params(model: nn.Module, config: OWSConfig, layer_ids: set[int]) -> tuple[list, list]:
    embed, head = _embedding_params(model, layer_ids)
    always, always_nd = [], []
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=True):
        if id(param) in layer_ids or id(param) in seen:
            continue
        seen.add(id(param))
        if id(param) in embed or id(param) in head:
            train = (id(param) in embed and config.train_embeddings) or (id(param) in head and config.train_lm_head)
        else:
            train = config.train_final_norm
        param.requires_grad_(train)
        if not train:
            param.grad = None
            continue
        (always if param.dim() >= 2 else always_nd).append(param)
        logger.debug("always trainable: %s %s", name, tuple(param.shape))
    return always, always_nd
