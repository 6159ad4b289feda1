"""Peers run from their own packages, through the same ``ows train`` runs as ows's methods (benchmarks only).

Importing this module registers one ows method per peer (``ows.methods.register_method``), so that a
peer trains on the same data, steps, schedule, evaluation and memory tracking as every other row;
only its optimizer comes from the peer's package, with the package's defaults:

- ``badam``: BAdam's ``BlockOptimizer`` over ``torch.optim.AdamW`` (one decoder layer at a time,
  ``switch_block_every`` 50, ``descending``; embeddings and head frozen, as BAdam defaults);
- ``apollo`` / ``apollo-mini``: ``apollo_torch.APOLLOAdamW`` on the 2-D attention and MLP weights
  (APOLLO: rank 128, random projection, channel-wise scaling; APOLLO-Mini: rank 1, tensor-wise
  scaling, scale 128), AdamW on the rest;
- ``galore-torch``: ``galore_torch.GaLoreAdamW`` on the same weights (rank 128, T 200, scale 0.25);
- ``dora``: peft's DoRA (``use_dora=True``) on every linear of the decoder layers, r=lora_r, the Trainer's AdamW;
- ``hf-*``: transformers' own ``optim=`` choices (the Trainer builds the optimizer): GaLore layerwise,
  APOLLO, LOMO, AdaLomo (the last needs CUDA: it is kept to record the error).

``PEERS`` maps each benchmark row to (registered method, extra ``ows train`` flags, label).
"""

from __future__ import annotations

from typing import Any

from ows.config import OWSConfig
from ows.methods import Method, MethodSetup, method_names, register_method

TARGETS = (".self_attn.", ".mlp.")  # the 2-D weights the low-rank peers project (attention and MLP)
HF_TARGETS = r".*\.(self_attn|mlp)\..*"  # optim_target_modules: one regex over module names


def _split(model: Any) -> tuple[list, list]:
    """(2-D attention/MLP weights of the decoder layers, every other parameter); all set trainable."""
    low, rest = [], []
    for name, p in model.named_parameters():
        p.requires_grad_(True)
        (low if p.dim() == 2 and any(t in name for t in TARGETS) else rest).append(p)
    return low, rest


def _apollo(mini: bool) -> Any:
    def build(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
        from apollo_torch import APOLLOAdamW

        low, rest = _split(model)
        keys = dict(rank=1, proj="random", scale_type="tensor", scale=128.0, update_proj_gap=200, proj_type="std") \
            if mini else dict(rank=128, proj="random", scale_type="channel", scale=1.0, update_proj_gap=200,
                              proj_type="std")
        opt = options["optimizer"]
        groups = [{"params": rest}, {"params": low, **keys}]
        return MethodSetup(name, model, APOLLOAdamW(groups, lr=opt["lr"], weight_decay=opt.get("weight_decay", 0.0)),
                           None)
    return build


def _galore_torch(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    from galore_torch import GaLoreAdamW

    low, rest = _split(model)
    opt = options["optimizer"]
    groups = [{"params": rest}, {"params": low, "rank": 128, "update_proj_gap": 200, "scale": 0.25, "proj_type": "std"}]
    return MethodSetup(name, model, GaLoreAdamW(groups, lr=opt["lr"], weight_decay=opt.get("weight_decay", 0.0)), None)


def _badam(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    import torch
    from badam import BlockOptimizer

    opt = options["optimizer"]
    base = torch.optim.AdamW(model.parameters(), lr=opt["lr"], weight_decay=opt.get("weight_decay", 0.0))
    optimizer = BlockOptimizer(base_optimizer=base, named_parameters_list=list(model.named_parameters()), verbose=0)
    return MethodSetup(name, model, optimizer, None)


def _trainer_optimizer(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    """All parameters trainable; the Trainer builds the optimizer named by ``--optim``."""
    for p in model.parameters():
        p.requires_grad_(True)
    return MethodSetup(name, model, None, None)


def _dora(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    """peft's DoRA (``use_dora``: a magnitude vector and a LoRA direction per linear), r=lora_r on every linear of
    the decoder layers, as the product's ``lora`` row; the Trainer's AdamW."""
    from peft import LoraConfig, get_peft_model

    lora = options["lora"]
    wrapped = get_peft_model(model, LoraConfig(r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32),
                                               lora_dropout=lora.get("dropout", 0.05), target_modules="all-linear",
                                               task_type="CAUSAL_LM", use_dora=True))
    return MethodSetup(name, wrapped, None, None)


def _register(name: str, label: str, builder: Any, requires: tuple, layers: str = "all", outside: str = "all") -> None:
    if name not in method_names():
        register_method(Method(name, label, label, layers=layers, galore=False, builder=builder, outside=outside,
                               optimizer=label, requires=requires, options=frozenset()))


_register("peer-badam", "BAdam (badam, BlockOptimizer)", _badam, (("badam", "bench"),), outside="none")
_register("peer-apollo", "APOLLO (apollo-torch)", _apollo(False), (("apollo_torch", "bench"),))
_register("peer-apollo-mini", "APOLLO-Mini (apollo-torch)", _apollo(True), (("apollo_torch", "bench"),))
_register("peer-galore-torch", "GaLore (galore-torch)", _galore_torch, (("galore_torch", "bench"),))
_register("peer-trainer-optim", "a transformers optim= choice", _trainer_optimizer, ())
_register("peer-dora", "DoRA (peft use_dora)", _dora, (("peft", "lora"),), layers="adapters", outside="none")

PEERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "badam": ("peer-badam", (), "BAdam (badam package)"),
    "apollo": ("peer-apollo", (), "APOLLO (apollo-torch)"),
    "apollo-mini": ("peer-apollo-mini", (), "APOLLO-Mini (apollo-torch)"),
    "galore-torch": ("peer-galore-torch", (), "GaLore (galore-torch package)"),
    "hf-galore-layerwise": ("peer-trainer-optim", ("--optim", "galore_adamw_layerwise", "--optim_target_modules",
                                                   HF_TARGETS), "GaLore layerwise (transformers optim=)"),
    "hf-apollo": ("peer-trainer-optim", ("--optim", "apollo_adamw", "--optim_target_modules", HF_TARGETS),
                  "APOLLO (transformers optim=)"),
    "hf-lomo": ("peer-trainer-optim", ("--optim", "lomo"), "LOMO (transformers optim=, lomo-optim)"),
    "hf-adalomo": ("peer-trainer-optim", ("--optim", "adalomo"), "AdaLomo (transformers optim=, lomo-optim)"),
}


def _state_bytes(optimizer: Any) -> int:
    """Tensor bytes in ``optimizer.state``, including tensors held by objects there (the peers' projectors)."""
    from ows.memory.measure import tensor_bytes

    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            total += tensor_bytes([value]) + (tensor_bytes(vars(value).values()) if hasattr(value, "__dict__") else 0)
    return total


def state_bytes(optimizer: Any) -> int | None:
    """Bytes of optimizer state a peer holds, including hidden copies; None where it cannot be read.

    BAdam: the base AdamW's state plus the fp32 copies of the active block and their gradients.
    transformers' layerwise optimizers: the state of every per-parameter optimizer. Others: their state.
    """
    from ows.memory.measure import tensor_bytes

    base = getattr(optimizer, "base_optimizer", None)
    if base is not None:
        copies = [p for g in base.param_groups for p in g["params"]]
        return _state_bytes(base) + tensor_bytes(copies) + tensor_bytes(p.grad for p in copies)
    inner = getattr(optimizer, "optimizer_dict", None)
    if inner is not None:
        unique = {id(o): o for o in inner.values()}.values()
        return sum(_state_bytes(o) for o in unique)
    return _state_bytes(optimizer) if hasattr(optimizer, "state") else None
