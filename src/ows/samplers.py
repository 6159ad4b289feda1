"""The sampler a config asks for: :class:`ows.sampling.LayerSampler` (whole layers), :class:`ows.sampling.BudgetSampler`
(``sampling_granularity: module``) or :class:`ows.importance.GradientSampler` (``sampling_strategy: gradient``), with
the probabilities of layers or single weights from the outlier profile."""

from __future__ import annotations

import logging
from typing import Any

from .config import OWSConfig
from .granularity import resolve_budget
from .importance import GradientSampler
from .layers import Block
from .sampling import BudgetSampler, LayerSampler, sampling_probabilities

logger = logging.getLogger(__name__)


def _matrix_ratios(profile: Any, blocks: list[Block]) -> list[float] | None:
    """Each weight's own outlier ratio from the profile (``extra["matrix_ratios"]``: per layer, weight name ->
    ratio), or None when the profile has none for some weight."""
    table = (getattr(profile, "extra", None) or {}).get("matrix_ratios")
    try:
        return [float(table[b.layer][b.name.split(".", 1)[1]]) for b in blocks]
    except (TypeError, KeyError, IndexError):
        logger.info("the outlier profile has no per-weight ratios: each weight is drawn by its layer's ratio")
        return None


def block_probabilities(config: OWSConfig, layer_probs: list[float], blocks: list[Block],
                        profile: Any | None = None) -> list[float]:
    """Probabilities of single weights: from their own outlier ratios for the owl strategies (and the gradient
    strategy's owl prior) when the profile has them, else their layer's probability (normalised)."""
    ratios = _matrix_ratios(profile, blocks) if config.needs_profile() and profile is not None else None
    if ratios is not None:
        strategy = "owl" if config.sampling_strategy == "gradient" else config.sampling_strategy
        return sampling_probabilities(ratios, strategy, temperature=config.sampling_temperature)
    return sampling_probabilities(None, "weights", weights=[layer_probs[b.layer] for b in blocks])


def build_sampler(config: OWSConfig, num_layers: int, profile: Any | None = None, *,
                  blocks: list[Block] | None = None) -> Any:
    """The sampler ``config`` asks for: a :class:`LayerSampler`, a :class:`BudgetSampler` (``sampling_granularity:
    module``) or a :class:`ows.importance.GradientSampler` (``sampling_strategy: gradient``). ``profile`` (an
    ``OutlierProfile``) for the owl strategies and prior; ``blocks`` (``ows.layers.sampling_blocks``) for module."""
    config = config.with_defaults()  # fields left at None: ows's defaults
    module = config.sampling_granularity == "module"
    if module and blocks is None:
        raise ValueError("sampling_granularity='module' needs the model's weights: use ows.create_ows, or pass "
                         "blocks=ows.layers.sampling_blocks(layers, 'module')")
    ratios = profile.ratios if profile is not None else None
    layer_sizes = [[b.size for b in blocks if b.layer == i] for i in range(num_layers)] if module else None
    config.check_for(num_layers, ratios, layer_sizes)
    gradient = config.sampling_strategy == "gradient"
    if gradient and config.sampling_prior == "owl" and ratios is None:
        raise ValueError("sampling_prior='owl' needs an outlier profile: run ows.profile_outliers(model, batches) or "
                         "use sampling_prior='uniform'")
    probs = sampling_probabilities(ratios if config.needs_profile() or not gradient else None,
                                   config.sampling_strategy, num_layers=num_layers, weights=config.sampling_weights,
                                   temperature=config.sampling_temperature)
    if module:
        probs = block_probabilities(config, probs, blocks, profile)  # type: ignore[arg-type]
        sizes = [b.size for b in blocks]  # type: ignore[union-attr]
        budget, _ = resolve_budget(config.sample_budget_params, config.num_active_layers,
                                   layer_sizes)  # type: ignore[arg-type]
    else:
        sizes, budget = [1] * num_layers, config.num_active_layers
    if gradient:
        return GradientSampler(probs, sizes, budget, config.sample_interval, config.seed, ema=config.sampling_ema,
                               temperature=config.sampling_temperature)
    if module:
        return BudgetSampler(probs, sizes, budget, config.sample_interval, config.seed)
    return LayerSampler(probs, config.num_active_layers, config.sample_interval, config.seed)
