"""Layerwise outlier distribution (OWL): how many large ``|W_ij| * ||X_j||_2`` scores each decoder layer has.

Forward hooks on every linear module inside each decoder layer add up the squared L2 norm of each
input feature over all calibration tokens (padding excluded). Scores are then computed one linear at
a time, so profiling needs no more memory than inference plus one weight-sized temporary.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .jsonio import read_json, write_json
from .layers import eval_mode, linear_modules, locate_decoder_layers, weight_in_out

logger = logging.getLogger(__name__)


def _outlier_counts(weights: Sequence[torch.Tensor], input_sq_norms: Sequence[torch.Tensor],
                    threshold: float) -> list[int]:
    """Per weight, its scores ``A_ij = |W_ij| * ||X_j||_2`` above ``threshold`` times the mean score of all weights."""
    if len(weights) != len(input_sq_norms) or not weights:
        raise ValueError("layer_outlier_ratio needs one input-norm vector per weight and at least one weight")
    norms = [n.double().clamp_min(0).sqrt() for n in input_sq_norms]
    total = sum(float((w.detach().abs().double() @ n).sum()) for w, n in zip(weights, norms))
    count = sum(w.numel() for w in weights)
    cut = threshold * total / count
    above = []
    for w, n in zip(weights, norms):
        scores = w.detach().abs().float() * n.float().unsqueeze(0)
        above.append(int((scores > cut).sum()))
        del scores
    return above


def layer_outlier_ratio(
    weights: Sequence[torch.Tensor], input_sq_norms: Sequence[torch.Tensor], threshold: float
) -> float:
    """Fraction of scores ``A_ij = |W_ij| * ||X_j||_2`` above ``threshold * mean(A)`` over one layer.

    ``weights[k]``: (out, in) weight of linear k; ``input_sq_norms[k]``: (in,) sum over calibration
    tokens of the squared input feature values. All linears of the layer share one mean.
    """
    return sum(_outlier_counts(weights, input_sq_norms, threshold)) / sum(w.numel() for w in weights)


def matrix_outlier_ratios(
    weights: Sequence[torch.Tensor], input_sq_norms: Sequence[torch.Tensor], threshold: float
) -> list[float]:
    """Each weight's own outlier ratio, against its layer's cut (``threshold`` times the mean over the layer, as in
    :func:`layer_outlier_ratio`, whose value is their mean weighted by size): what ``sampling_granularity: module``
    draws single weights by."""
    return [c / w.numel() for c, w in zip(_outlier_counts(weights, input_sq_norms, threshold), weights)]


class _NormAccumulator:
    """Forward hooks that sum squared input features per linear, skipping padded tokens."""

    def __init__(self, layers: nn.ModuleList) -> None:
        self.modules = [linear_modules(layer) for layer in layers]
        self.sums: dict[int, torch.Tensor] = {}
        self.token_mask: torch.Tensor | None = None
        self._warned = False
        self._handles: list[Any] = []

    def __enter__(self) -> "_NormAccumulator":
        for per_layer in self.modules:
            for _, module in per_layer:
                self._handles.append(module.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0].detach()
        flat = x.reshape(-1, x.shape[-1])
        mask = self.token_mask
        if mask is not None:
            if mask.numel() == flat.shape[0]:
                flat = flat[mask.to(flat.device)]
            elif not self._warned:
                logger.warning("a linear input does not match the token layout; padding is counted for it")
                self._warned = True
        sq = flat.float().pow(2).sum(dim=0)
        key = id(module)
        self.sums[key] = self.sums[key] + sq if key in self.sums else sq

    def ratios(self, threshold: float) -> tuple[list[float], list[dict[str, float]]]:
        """Per layer its outlier ratio, and per layer each weight's own ratio by the weight's name in the layer."""
        out, per_weight = [], []
        for index, per_layer in enumerate(self.modules):
            if not per_layer:
                raise ValueError(f"decoder layer {index} has no linear modules: check layers_attr")
            missing = [name for name, m in per_layer if id(m) not in self.sums]
            if missing:
                raise ValueError(
                    f"decoder layer {index} module {missing[0]!r} never ran during calibration: "
                    "check that the batches reach every layer"
                )
            weights = [weight_in_out(m) for _, m in per_layer]
            norms = [self.sums[id(m)] for _, m in per_layer]
            counts = _outlier_counts(weights, norms, threshold)  # type: ignore[arg-type]
            out.append(sum(counts) / sum(w.numel() for w in weights))  # type: ignore[union-attr]
            per_weight.append({f"{name}.weight": c / m.weight.numel() for (name, m), c in zip(per_layer, counts)})
        return out, per_weight


@dataclass
class OutlierProfile:
    """Per-layer outlier ratios of one model, with how they were measured; ``extra["matrix_ratios"]`` holds each
    weight's own ratio (per layer, by its name in the layer), for ``sampling_granularity: module``."""

    ratios: list[float]
    threshold: float = 5.0
    num_tokens: int = 0
    model_name: str | None = None
    layers_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.ratios)

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON (also written atomically to ``path`` when given)."""
        return write_json(asdict(self), path)

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> "OutlierProfile":
        """Load from a JSON file written by :meth:`to_json` (or from the JSON text itself)."""
        data = read_json(path_or_text, "outlier profile", "run `ows analyze` or check the path")
        try:
            profile = cls(**data)
        except TypeError as err:
            raise ValueError(f"outlier profile is not a valid ows profile JSON ({err}): regenerate it") from None
        ratios = profile.ratios
        if not isinstance(ratios, list) or not ratios or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and 0 <= r <= 1 for r in ratios
        ):
            raise ValueError(f"outlier profile ratios {str(ratios)[:80]} must be a non-empty list of fractions in [0, 1] "
                             "(NaN, inf or negative values found): regenerate it with `ows analyze`")
        return profile


def _batch_inputs(batch: Any) -> dict[str, torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return {"input_ids": batch if batch.dim() == 2 else batch.unsqueeze(0)}
    if isinstance(batch, Mapping) and "input_ids" in batch:
        keep = ("input_ids", "attention_mask")
        return {k: batch[k] for k in keep if k in batch and batch[k] is not None}
    raise ValueError(
        "calibration batches must be tensors of token ids or dicts with 'input_ids' (and 'attention_mask')"
    )


def profile_outliers(
    model: nn.Module,
    batches: Iterable[Any],
    threshold: float = 5.0,
    *,
    layers_attr: str | None = None,
    model_name: str | None = None,
) -> OutlierProfile:
    """Measure the layerwise outlier ratio of ``model`` on calibration ``batches``.

    ``batches``: tensors of token ids (batch, seq) or dicts with ``input_ids`` and optional
    ``attention_mask`` (0 marks padding, which is excluded). Runs under ``torch.no_grad()`` in eval
    mode and restores the training mode; the weights are not changed.
    """
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not threshold > 0:
        raise ValueError(f"threshold={threshold!r} is invalid: must be a number > 0 (the paper uses 5)")
    found = locate_decoder_layers(model, layers_attr)
    device = next(model.parameters()).device
    tokens = 0
    with torch.no_grad(), eval_mode(model), _NormAccumulator(found.modules) as acc:
        for index, batch in enumerate(batches):
            inputs = {k: v.to(device) for k, v in _batch_inputs(batch).items()}
            mask = inputs.get("attention_mask")
            acc.token_mask = mask.reshape(-1).bool() if mask is not None else None
            tokens += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            model(**inputs, use_cache=False) if _accepts_use_cache(model) else model(**inputs)
            logger.debug("calibration batch %d done (%d tokens so far)", index + 1, tokens)
        if tokens == 0:
            raise ValueError("calibration batches contain no tokens: give at least one non-empty batch")
        ratios, matrix_ratios = acc.ratios(float(threshold))
    name = model_name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    logger.info("outlier profile of %s: %d layers, %d calibration tokens", name, len(ratios), tokens)
    return OutlierProfile(ratios, float(threshold), tokens, str(name), found.path,
                          extra={"matrix_ratios": matrix_ratios})


def _accepts_use_cache(model: nn.Module) -> bool:
    return hasattr(getattr(model, "config", None), "use_cache")
