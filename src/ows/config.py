"""OWSConfig: every knob of Outlier-weighed Layerwise Sampling in one validated dataclass."""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

from .choices import (FROZEN_QUANTIZATIONS, OUTSIDE_OPTIMIZERS, OWS_DEFAULTS, PROFILE_STRATEGIES, PROJ_TYPES,
                      SAMPLING_GRANULARITIES, SAMPLING_PRIORS, SAMPLING_STRATEGIES, SVD_METHODS)
from .granularity import check_budget, resolve_budget
from .jsonio import read_json, write_json
from .validation import check_active_layers, check_bool, check_choice, check_float, check_int


def _help(text: str, default: Any = MISSING, default_factory: Any = MISSING) -> Any:
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class OWSConfig:
    """Settings of an OWS run. Defaults follow the OWS paper (gamma=5, K=50, M=5, r=128, T=100, alpha=1), except
    where our measurements say otherwise: ``outside_optimizer`` and ``sampling_granularity`` default to None, the
    method's own (ows: GaLore moments for the embeddings and head, single weights drawn from all layers;
    docs/RESULTS.md).

    The paper's released code uses rank 256; its text says 128. We default to 128 (half the
    projector memory); set ``rank=256`` to match the released code.
    """

    num_active_layers: int = _help("gamma: number of decoder layers trained at the same time (1..number of layers).",
                                   5)
    sample_interval: int = _help("K: optimizer steps between two draws of the active layers.", 50)
    sampling_strategy: str | None = _help(
        "How layers (or weights) are weighted: owl (p proportional to outlier ratio, the OWS paper), uniform "
        "(LISA), owl_reverse (fewest outliers most likely), increase / decrease (linear in depth), "
        "weights (sampling_weights), gradient (an online score). None: the method's default (ows: uniform, which "
        "trained as well as owl over single weights and forgot less, docs/RESULTS.md, and needs no outlier "
        "profile; ows-fullrank: owl, as published).",
        None,
    )
    sampling_granularity: str | None = _help(
        "What one draw picks: layer (whole decoder layers, num_active_layers of them) or module (single 2-D weights "
        "such as q_proj or down_proj, from all decoder layers, until sample_budget_params parameters are drawn; a "
        "layer's norms and biases train while any of its weights trains). None: the method's default (ows: module, "
        "which trained better than whole layers at the same budget on both task families and needs less memory at "
        "8B, docs/RESULTS.md; layer under FSDP2, which cannot shard single weights; lisa, ows-fullrank: layer, as "
        "published).", None
    )
    sample_budget_params: int | None = _help(
        "With sampling_granularity module: parameters in the weights drawn per period (never exceeded); None = "
        "num_active_layers times the mean decoder layer's 2-D parameter count.", None
    )
    sampling_weights: list[float] | None = _help(
        "One non-negative weight per decoder layer; required when sampling_strategy='weights'.", None
    )
    sampling_temperature: float = _help(
        "tau in p proportional to D**tau for 'owl' (0 = uniform, 1 = the paper), and in p proportional to "
        "score**tau for 'gradient'.", 1.0
    )
    sampling_prior: str = _help(
        "With sampling_strategy gradient: the order in which blocks not yet visited are drawn before the signal is "
        "trusted: uniform, or owl (proportional to the outlier ratio, needs a profile).", "uniform"
    )
    sampling_ema: float = _help(
        "With sampling_strategy gradient: beta of the moving average of each block's gradient score over the periods "
        "it is drawn in (score = beta * score + (1 - beta) * the period's mean RMS gradient); a block not drawn keeps "
        "its score. In [0, 1).", 0.5
    )
    outlier_threshold: float = _help("M: a weight score counts as an outlier when above M times the mean score of "
                                     "its layer.", 5.0)
    use_galore: bool = _help("Project the gradients of sampled 2-D weights to low rank (GaLore); false = plain "
                             "AdamW.", True)
    rank: int = _help("r: rank of the gradient projection (paper code: 256, paper text: 128).", 128)
    update_proj_gap: int = _help("T: optimizer steps between two SVDs of a weight's gradient.", 100)
    galore_scale: float = _help("alpha: scale applied to the projected-back update.", 1.0)
    proj_type: str = _help("Which side is projected: std (the smaller side), reverse_std, left, right.", "std")
    svd_method: str = _help(
        "How the projector is computed every T steps: auto (gram for the embeddings and head, exact for the "
        "decoder layers), exact (full SVD, as galore-torch), randomized (a seeded randomized SVD, faster on large "
        "matrices) or gram (eigenvectors of the smaller Gram matrix G^T G or G G^T, accumulated in chunks: the "
        "same subspace as exact, the least memory, 0.29x exact's time on SmolLM2; benchmarks/projection_quality.py). "
        "auto spares the exact SVD's two fp32 vocabulary-sized copies (4 GiB at Llama-3.1-8B).", "auto"
    )
    target_modules: list[str] | None = _help(
        "Names (or name suffixes) of the linear modules inside decoder layers that get GaLore, "
        "e.g. ['q_proj', 'v_proj']; None = every 2-D weight in the decoder layers.", None)
    train_embeddings: bool = _help("Keep the input (and position) embeddings trainable.", True)
    train_lm_head: bool = _help("Keep the output head trainable (tied heads train if either is on).", True)
    train_final_norm: bool = _help(
        "Keep every other parameter outside the decoder layers (e.g. the final norm) trainable.", True
    )
    outside_optimizer: str | None = _help(
        "Optimizer state of the trained 2-D weights outside the decoder layers (embeddings, head): adamw (full "
        "AdamW moments), adamw8bit (8-bit blockwise moments from bitsandbytes, about 1/4 of the bytes) or galore "
        "(low-rank projected moments, rank r). None: the method's default (ows: galore, which trained as well as "
        "adamw on both task families and forgot less, docs/RESULTS.md; the other methods: adamw, as published).",
        None
    )
    project_head_grad: bool = _help(
        "With outside_optimizer galore and the chunked loss: sum the output head's gradient already projected to "
        "rank r, chunk by chunk, so that its full (vocab x hidden) gradient exists only inside the loss on steps "
        "that compute a new projector (docs/MEMORY.md). Gradient clipping then counts the head's projected "
        "gradient. Kept whole for a tied head, fused_step, several processes or a plain training loop.", True
    )
    fused_step: bool = _help(
        "Update each decoder-layer parameter inside the backward pass as soon as its gradient is complete, and "
        "free that gradient at once, so that about one weight's gradient exists at a time. Gradient clipping then "
        "scales step t's updates by the previous step's global norm (docs/MEMORY.md).", False
    )
    master_weights: bool = _help(
        "With bfloat16/float16 weights: keep fp32 master weights and fp32 moments for the decoder layers while "
        "they train (4 more bytes per trained weight); the master is rounded into the weights after every update "
        "and freed when the layer leaves. False: pure low-precision updates.", False
    )
    frozen_quantization: str = _help(
        "Hold the linear weights of frozen decoder layers quantized on the device: none, nf4 (4-bit, bitsandbytes) or "
        "int8; the forward through a frozen layer then uses the quantized weights, as QLoRA's base does. Sampled "
        "layers train on their exact weights, kept on the host while frozen; the saved model is exact.", "none"
    )
    layers_attr: str | None = _help(
        "Dotted path to the nn.ModuleList of decoder layers (e.g. 'model.layers'); None = found automatically.", None)
    seed: int = _help("Seed of the sampling schedule; the active set depends only on (seed, period), and with "
                      "sampling_strategy gradient also on the scores measured so far.", 0)

    def __post_init__(self) -> None:
        self.validate()

    def with_defaults(self, defaults: dict[str, Any] = OWS_DEFAULTS) -> "OWSConfig":
        """A copy whose method-defaulted fields left at None take ``defaults`` (ows's by default)."""
        unset = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        return replace(self, **unset) if unset else self

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, the value and the fix for the first bad field."""
        check_int(self, "num_active_layers", minimum=1)
        check_int(self, "sample_interval", minimum=1)
        if self.sampling_strategy is not None:  # None: the method's default
            check_choice(self, "sampling_strategy", SAMPLING_STRATEGIES)
        check_float(self, "sampling_temperature", minimum=0.0)
        self._validate_sampling()
        check_float(self, "outlier_threshold", minimum=0.0, strict=True)
        check_bool(self, "use_galore")
        check_int(self, "rank", minimum=1)
        check_int(self, "update_proj_gap", minimum=1)
        check_float(self, "galore_scale", minimum=0.0, strict=True)
        check_choice(self, "proj_type", PROJ_TYPES)
        check_choice(self, "svd_method", SVD_METHODS)
        for name in ("train_embeddings", "train_lm_head", "train_final_norm", "project_head_grad", "fused_step",
                     "master_weights"):
            check_bool(self, name)
        if self.outside_optimizer is not None:  # None: the method's default
            check_choice(self, "outside_optimizer", OUTSIDE_OPTIMIZERS)
        check_choice(self, "frozen_quantization", FROZEN_QUANTIZATIONS)
        check_int(self, "seed", minimum=0)
        if self.layers_attr is not None and (not isinstance(self.layers_attr, str) or not self.layers_attr):
            raise ValueError(
                f"OWSConfig.layers_attr={self.layers_attr!r} is invalid: give a dotted path such as 'model.layers' or None"
            )
        if self.target_modules is not None and (
            not isinstance(self.target_modules, (list, tuple))
            or not self.target_modules
            or not all(isinstance(m, str) and m for m in self.target_modules)
        ):
            raise ValueError(
                f"OWSConfig.target_modules={self.target_modules!r} is invalid: give a non-empty list of module names "
                "such as ['q_proj', 'v_proj'], or None for every 2-D weight"
            )
        self._validate_weights()

    def _validate_sampling(self) -> None:
        if self.sampling_granularity is not None:  # None: the method's default
            check_choice(self, "sampling_granularity", SAMPLING_GRANULARITIES)
        check_choice(self, "sampling_prior", SAMPLING_PRIORS)
        check_float(self, "sampling_ema", minimum=0.0)
        if self.sampling_ema >= 1:
            raise ValueError(f"OWSConfig.sampling_ema={self.sampling_ema!r} is invalid: must be >= 0 and < 1 (0.5: "
                             "a new period's measurement counts half)")
        if self.sampling_prior != "uniform" and self.sampling_strategy != "gradient":
            raise ValueError(f"OWSConfig.sampling_prior={self.sampling_prior!r} only applies to sampling_strategy="
                             f"'gradient' (this run uses {self.sampling_strategy!r}): remove it or set uniform")
        budget = self.sample_budget_params
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
                raise ValueError(f"OWSConfig.sample_budget_params={budget!r} is invalid: must be an integer >= 1 "
                                 "or None")
            if self.sampling_granularity not in ("module", None):
                raise ValueError(f"OWSConfig.sample_budget_params={budget!r} only applies to sampling_granularity="
                                 "'module': remove it, or set sampling_granularity module")

    def needs_profile(self) -> bool:
        """Whether these settings sample by an outlier profile (the owl strategies, or gradient with the owl prior)."""
        return self.sampling_strategy in PROFILE_STRATEGIES or (
            self.sampling_strategy == "gradient" and self.sampling_prior == "owl")

    def _validate_weights(self) -> None:
        weights = self.sampling_weights
        if self.sampling_strategy == "weights" and weights is None:
            raise ValueError(
                "OWSConfig.sampling_weights=None is invalid with sampling_strategy='weights': give one weight per layer"
            )
        if weights is None:
            return
        if not isinstance(weights, (list, tuple)) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights
        ):
            raise ValueError(
                f"OWSConfig.sampling_weights={weights!r} is invalid: give a list of finite non-negative numbers"
            )

    def check_for(self, num_layers: int, ratios: Sequence[float] | None = None,
                  matrix_sizes: Sequence[Sequence[int]] | None = None) -> None:
        """Raise ``ValueError`` if these settings cannot run on a model with ``num_layers`` decoder layers.

        Checks gamma against the layer count, ``sampling_weights`` (one per layer), and that at least
        gamma layers can be drawn: non-zero weights, or non-zero outlier ``ratios`` (a profile) for the
        ``owl`` strategies at a temperature above 0. With ``sampling_granularity: module`` and
        ``matrix_sizes`` (the 2-D weight sizes of each layer), the parameter budget instead: at least the
        largest weight, at most all of them, and no more than the weights that can be drawn hold. Needs no
        model and no torch. Left at None, ``sampling_granularity`` is ows's default.
        """
        if self.sampling_granularity is None:
            return self.with_defaults().check_for(num_layers, ratios, matrix_sizes)
        explicit_budget = self.sampling_granularity == "module" and self.sample_budget_params is not None
        if not explicit_budget:
            check_active_layers(self.num_active_layers, num_layers)
        drawable = self._drawable_layers(num_layers, ratios)
        if self.sampling_granularity == "layer":
            check_active_layers(self.num_active_layers, num_layers, None if drawable is None else len(drawable))
        elif matrix_sizes is not None:
            if len(matrix_sizes) != num_layers:
                raise ValueError(f"matrix_sizes has {len(matrix_sizes)} layers but the model has {num_layers}")
            budget, name = resolve_budget(self.sample_budget_params, self.num_active_layers, matrix_sizes)
            sizes = [size for layer in matrix_sizes for size in layer]
            reachable = None if drawable is None else sum(sum(matrix_sizes[i]) for i in drawable)
            check_budget(budget, sizes, reachable, name)

    def _drawable_layers(self, num_layers: int, ratios: Sequence[float] | None) -> list[int] | None:
        """The layers with a non-zero probability when some have none (weights or profile), else None."""
        weights = self.sampling_weights
        if self.sampling_strategy == "weights" and weights is not None:
            if len(weights) != num_layers:
                raise ValueError(f"sampling_weights has {len(weights)} values but the model has "
                                 f"{num_layers} decoder layers: give one weight per layer")
            if not any(w > 0 for w in weights):
                raise ValueError("sampling_weights are all zero: no layer can be sampled; give positive weights or "
                                 "use sampling_strategy='uniform'")
            return [i for i, w in enumerate(weights) if w > 0]
        if self.needs_profile() and ratios is not None:
            if len(ratios) != num_layers:
                raise ValueError(f"the outlier profile has {len(ratios)} layers but the model has {num_layers} decoder "
                                 "layers: profile this model (`ows analyze`) or drop the profile")
            if self.sampling_strategy == "gradient":  # the prior only orders the first visits: every layer is drawn
                return None
            if not any(r > 0 for r in ratios):
                raise ValueError("the outlier profile's ratios are all zero: no layer can be sampled; use "
                                 "sampling_strategy='uniform' or a lower outlier_threshold")
            return None if self.sampling_temperature == 0 else [i for i, r in enumerate(ratios) if r > 0]
        return None

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OWSConfig":
        """Build from a dict; unknown keys are an error that lists the valid ones."""
        if not isinstance(data, dict):
            raise ValueError(f"OWSConfig expects a mapping of field names to values, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"OWSConfig has no field {unknown[0]!r}: remove it or use one of {', '.join(sorted(known))}"
            )
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON; also write it (atomically) to ``path`` when given."""
        return write_json(self.to_dict(), path, sort_keys=True)

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> "OWSConfig":
        """Load from a JSON file path or a JSON string."""
        return cls.from_dict(read_json(path_or_text, "OWS config file", "check the path or fix the file"))

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Help text of every field, in declaration order."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}
