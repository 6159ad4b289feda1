"""The method registry: every fine-tuning method ows can run, its traits and its builder, in one place.

Each :class:`Method` says what trains (``layers``: ``sampled`` decoder layers, ``all`` of them, or
``adapters``), whether 2-D layer weights get GaLore, which sampling strategy it forces, what trains
outside the decoder layers and which optimizer it uses. The CLI, the memory estimator and the
benchmarks read these traits; nothing else lists the methods. This module imports no torch: the
builders import what they need when called, so ``ows memory`` stays torch-free.

Adding a method: write its builder (``name, model, config, profile, options -> MethodSetup``) and call
:func:`register_method` with its traits below.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from .choices import OWS_DEFAULTS, PUBLISHED
from .config import OWSConfig

logger = logging.getLogger(__name__)

LAYER_MODES = ("sampled", "all", "adapters")
OUTSIDE_MODES = ("config", "all", "none")
# OWSConfig options beyond the defaults that a method can serve: its optimizer is ows.GaLoreAdamW over
# ows.build_param_groups (the layer groups take masters, the outside groups 8-bit or GaLore moments).
LAYER_OPTIONS = frozenset({"fused_step", "master_weights", "outside_optimizer"})
SAMPLED_OPTIONS = LAYER_OPTIONS | {"frozen_quantization"}  # only a sampled subset leaves layers frozen
OPTION_DEFAULTS = {"fused_step": False, "master_weights": False, "outside_optimizer": "adamw",
                   "frozen_quantization": "none"}


@dataclass
class MethodSetup:
    """What a training loop needs for one method: the (possibly wrapped) model, its optimizer and, for the sampled
    methods, the controller that runs the layer schedule. Framework-free: a Trainer wraps the controller in
    ``ows.OWSCallback`` (the recipe does), a plain loop calls ``controller.begin_step``."""

    name: str
    model: Any
    optimizer: Any | None
    config: OWSConfig | None
    controller: Any | None = None  # an ows.OWSController for the sampled methods (a Trainer wraps it in OWSCallback)


Builder = Callable[[str, Any, OWSConfig, Any, dict[str, Any]], MethodSetup]


@dataclass(frozen=True)
class Method:
    """One fine-tuning method and what it trains.

    ``layers``: ``sampled`` (gamma decoder layers at a time, resampled every K steps), ``all`` (every
    decoder layer) or ``adapters`` (LoRA adapters only). ``galore``: low-rank projected updates of the
    2-D layer weights. ``strategy``: the sampling strategy it forces (None = the config's).
    ``outside``: what trains outside the decoder layers: ``config`` (train_embeddings / train_lm_head
    / train_final_norm), ``all`` or ``none``. ``requires``: importable packages it needs, with the
    pip extra that installs them. ``options``: the OWSConfig options (``OPTION_DEFAULTS``) it can
    serve; setting another one is refused.
    """

    name: str
    summary: str
    label: str
    layers: str
    galore: bool
    builder: Builder = field(repr=False, compare=False)
    strategy: str | None = None
    outside: str = "config"
    optimizer: str = "ows.GaLoreAdamW"
    requires: tuple[tuple[str, str], ...] = ()
    options: frozenset[str] = LAYER_OPTIONS
    base_quantization: str | None = None  # the model is loaded quantized (QLoRA: nf4) before the builder runs
    defaults: dict[str, Any] = field(default_factory=lambda: dict(PUBLISHED), compare=False)  # for None fields

    @property
    def samples_layers(self) -> bool:
        """Whether the method trains a sampled subset of the decoder layers."""
        return self.layers == "sampled"

    def config_for(self, config: OWSConfig) -> OWSConfig:
        """The OWS settings this method runs with: fields left at None take the method's defaults, a method
        without GaLore turns ``use_galore`` off (one with GaLore keeps the config's choice, on by default) and a
        forced strategy replaces the config's."""
        changes: dict[str, Any] = {} if self.galore else {"use_galore": False}
        if self.strategy is not None:
            changes["sampling_strategy"] = self.strategy
        return dataclasses.replace(config.with_defaults(self.resolved_defaults()), **changes)

    def resolved_defaults(self) -> dict[str, Any]:
        """The values of the method-defaulted fields left at None: the method's, with an option it cannot serve
        off (so that a default-on option never refuses a method)."""
        resolved = {name: value if name not in OPTION_DEFAULTS or self.serves(name) else OPTION_DEFAULTS[name]
                    for name, value in self.defaults.items()}
        if self.strategy is not None:  # the strategy it forces is also its default (what a run records)
            resolved["sampling_strategy"] = self.strategy
        return resolved

    def serves(self, option: str) -> bool:
        """Whether the method can run with ``option`` set (see ``OPTION_DEFAULTS``)."""
        return option in self.options

    def needs_profile(self, config: OWSConfig) -> bool:
        """Whether the method's sampling needs an outlier profile."""
        return self.samples_layers and self.config_for(config).needs_profile()


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry (a name may be registered once); returns it."""
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.layers not in LAYER_MODES or method.outside not in OUTSIDE_MODES:
        raise ValueError(f"method {method.name!r}: layers must be one of {LAYER_MODES}, outside one of {OUTSIDE_MODES}")
    _REGISTRY[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    """Every registered method, baselines first, in registration order."""
    return tuple(_REGISTRY)


def methods_help() -> str:
    """One line naming every registered method with its summary and the pip extra it needs, for ``--help``."""
    def extra(method: Method) -> str:
        return f"; pip install 'ows[{','.join(sorted({e for _, e in method.requires}))}]'" if method.requires else ""
    return "; ".join(f"{m.name}{' (default)' if m.name == 'ows' else ''}: {m.summary}{extra(m)}"
                     for m in _REGISTRY.values()) + "."


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"method={name!r} is unknown: use one of {', '.join(_REGISTRY)}") from None


def check_requirements(method: Method) -> None:
    """Raise ``FileNotFoundError`` naming the pip command when a package the method needs is missing."""
    import importlib.util

    for package, extra in method.requires:
        if importlib.util.find_spec(package) is None:
            raise FileNotFoundError(f"method={method.name!r} needs the package {package}: pip install 'ows[{extra}]'")


def check_options(method: Method, config: OWSConfig) -> None:
    """Raise ``ValueError`` for OWS options the method cannot serve (checked before any model loads)."""
    config = config.with_defaults(method.resolved_defaults())
    for option, default in OPTION_DEFAULTS.items():
        value = getattr(config, option)
        if value != default and not method.serves(option):
            raise ValueError(f"{option}={value!r} cannot serve method={method.name!r} (its optimizer is {method.optimizer}):"
                             f" set {option} to {default!r} or use another method")
    if config.outside_optimizer == "adamw8bit" or config.frozen_quantization != "none":
        from .optim.lowbit import INSTALL, available

        if not available():
            option = "outside_optimizer='adamw8bit'" if config.outside_optimizer == "adamw8bit" else \
                f"frozen_quantization={config.frozen_quantization!r}"
            raise FileNotFoundError(f"{option} needs bitsandbytes: {INSTALL}")


def build_method(method: Method | str, model: Any, config: OWSConfig, profile: Any | None = None, *,
                 lora: dict[str, Any] | None = None, weights_source: str | None = None,
                 **optimizer_kwargs: Any) -> MethodSetup:
    """Set ``model`` up for ``method`` (a registered :class:`Method` or its name); for ``lora`` the returned
    model is the peft wrapper.

    ``optimizer_kwargs``: ``lr``, ``weight_decay``, ``betas``, ``eps``, ``max_grad_norm`` of the
    optimizer (as in :func:`ows.create_ows`); ``lora``: ``r``, ``alpha``, ``dropout`` of the LoRA
    adapters; ``weights_source``: the model's folder, for ``frozen_quantization`` (see ``create_ows``).
    """
    method = get_method(method) if isinstance(method, str) else method
    check_requirements(method)
    check_options(method, config)
    optimizer_kwargs.setdefault("lr", 3e-4)
    options = {"optimizer": optimizer_kwargs, "lora": lora or {}, "weights_source": weights_source}
    return method.builder(method.name, model, method.config_for(config), profile, options)


# --- builders ------------------------------------------------------------------------------------
def _build_sampled(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    from .controller import create_ows

    optimizer, controller = create_ows(model, config, profile, weights_source=options["weights_source"],
                                       **options["optimizer"])
    return MethodSetup(name, model, optimizer, config, controller)


def _build_all_layers(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    from .layers import locate_decoder_layers, set_trainable
    from .optim import GaLoreAdamW, build_param_groups, enable_fused_step

    opt = dict(options["optimizer"])
    max_grad_norm = opt.pop("max_grad_norm", 0.0)
    layers = locate_decoder_layers(model, config.layers_attr)
    groups = build_param_groups(model, config, opt.pop("weight_decay", 0.0), layers=layers)
    set_trainable(layers.modules, True)
    optimizer = GaLoreAdamW(groups, **opt)
    if config.fused_step:
        enable_fused_step(optimizer, model, max_grad_norm)
    return MethodSetup(name, model, optimizer, config)


def _build_full(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    from .optim import GaLoreAdamW, enable_fused_step

    opt = dict(options["optimizer"])
    weight_decay, max_grad_norm = opt.pop("weight_decay", 0.0), opt.pop("max_grad_norm", 0.0)
    for p in model.parameters():
        p.requires_grad_(True)
    groups = [
        {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = GaLoreAdamW([g for g in groups if g["params"]], **opt)
    if config.fused_step:
        enable_fused_step(optimizer, model, max_grad_norm)
    return MethodSetup(name, model, optimizer, None)


def _build_qlora(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    """LoRA over a model loaded in 4-bit NF4 (``base_quantization``), prepared as PEFT's QLoRA recipe does."""
    from peft import prepare_model_for_kbit_training

    checkpointing = bool(getattr(model, "is_gradient_checkpointing", False))
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    return _build_lora(name, model, config, profile, options)


def _build_lora(name: str, model: Any, config: OWSConfig, profile: Any, options: dict[str, Any]) -> MethodSetup:
    from peft import LoraConfig, get_peft_model

    lora = options["lora"]
    lora_config = LoraConfig(
        r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32), lora_dropout=lora.get("dropout", 0.05),
        target_modules=lora.get("target_modules") or "all-linear", task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(model, lora_config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    logger.info("LoRA r=%d on %s: %d trainable parameters", lora_config.r,
                ",".join(lora.get("target_modules") or ["all linear layers"]), trainable)
    return MethodSetup(name, wrapped, None, None)


# --- the registry: baselines first, then the OWS variants -----------------------------------------
register_method(Method("full", "AdamW on every parameter", "full FT (AdamW)", layers="all", galore=False,
                       builder=_build_full, outside="all", options=frozenset({"fused_step"})))
register_method(Method("lora", "peft LoRA (r=lora_r) on every linear layer; the Trainer's AdamW", "LoRA",
                       layers="adapters", galore=False, builder=_build_lora, outside="none",
                       optimizer="torch.optim.AdamW (Trainer)", requires=(("peft", "lora"),), options=frozenset()))
register_method(Method("qlora", "peft LoRA over a 4-bit NF4 base (bitsandbytes), as QLoRA", "QLoRA (NF4 base)",
                       layers="adapters", galore=False, builder=_build_qlora, outside="none",
                       optimizer="torch.optim.AdamW (Trainer)", requires=(("peft", "lora"), ("bitsandbytes", "memory")),
                       options=frozenset(), base_quantization="nf4"))
register_method(Method("galore", "every decoder layer with GaLore, no sampling", "GaLore (all layers)",
                       layers="all", galore=True, builder=_build_all_layers))
register_method(Method("lisa", "uniform layer sampling, plain AdamW (LISA)", "LISA (uniform, plain AdamW)",
                       layers="sampled", galore=False, builder=_build_sampled, strategy="uniform", options=SAMPLED_OPTIONS))
register_method(Method("ows-fullrank", "outlier-weighted layer sampling, plain AdamW",
                       "OWS full-rank (weighted, AdamW)", layers="sampled", galore=False, builder=_build_sampled,
                       options=SAMPLED_OPTIONS))
register_method(Method("ows", "outlier-weighted layer sampling + GaLore (the OWS method)",
                       "OWS (weighted + GaLore)", layers="sampled", galore=True, builder=_build_sampled,
                       options=SAMPLED_OPTIONS, defaults=dict(OWS_DEFAULTS)))
