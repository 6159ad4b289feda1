"""OWSController: applies the layer schedule to a model and its optimizer.

At every period boundary it unfreezes the newly sampled decoder layers, freezes the others and
releases everything the optimizer held for layers that left the active set (moments, projector,
step count) together with their gradients. A layer sampled again later starts afresh: new moments
and a projector computed from its first new gradient. A layer that stays active across a boundary
keeps its state.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable

from torch import nn
from torch.optim import Optimizer

from .config import OWSConfig
from .distributed import check_same_active, is_distributed, is_main_process
from .layers import DecoderLayers, locate_decoder_layers, set_trainable
from .memory.measure import tensor_bytes
from .optim.fused import enable_fused_step
from .optim.galore_adamw import GaLoreAdamW
from .optim.param_groups import build_param_groups
from .sampling import LayerSampler, sampling_probabilities

logger = logging.getLogger(__name__)


def release_optimizer_state(optimizer: Optimizer, params: list[nn.Parameter]) -> int:
    """Drop the optimizer state and gradients of ``params``; returns the bytes released."""
    released = 0
    for p in params:
        state = optimizer.state.pop(p, None)
        if state:
            released += tensor_bytes(state.values())
        p.grad = None
    return released


class OWSController:
    """Keeps the trainable decoder layers of ``model`` in sync with ``sampler``, and records the schedule it ran.

    Call :meth:`begin_step` with the 0-based optimizer step before each optimizer step's forward
    passes (once per step, not per micro-batch under gradient accumulation). ``schedule`` holds
    ``(step, active layers)`` of every resample, ``visits`` how many periods each layer was active.
    ``layers`` (from :func:`ows.locate_decoder_layers`) saves locating the decoder layers again.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        sampler: LayerSampler,
        layers_attr: str | None = None,
        on_resample: Callable[[int, tuple[int, ...]], None] | None = None,
        *,
        layers: DecoderLayers | None = None,
        residency: Any = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.sampler = sampler
        found = layers if layers is not None else locate_decoder_layers(model, layers_attr)
        self.layers = found.modules
        if len(self.layers) != sampler.num_layers:
            raise ValueError(
                f"the sampler has probabilities for {sampler.num_layers} layers but {found.path} has "
                f"{len(self.layers)}: build the profile/weights for this model"
            )
        self._check_optimizer_covers_layers()
        self.on_resample = on_resample
        self.active: tuple[int, ...] | None = None
        self.period: int | None = None
        self.visits: Counter[int] = Counter()
        self.schedule: list[tuple[int, tuple[int, ...]]] = []
        self.released_bytes = 0
        self.residency = residency  # ows.frozen.FrozenLayers when frozen layers are held quantized
        self.swaps: list[tuple[int, float]] = []  # (step, seconds spent moving weights) per resample

    def _check_optimizer_covers_layers(self) -> None:
        in_optimizer = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        missing = [i for i, layer in enumerate(self.layers) if any(id(p) not in in_optimizer for p in layer.parameters())]
        if missing:
            raise ValueError(
                f"decoder layer {missing[0]} has parameters the optimizer does not hold (a layer frozen before the "
                "optimizer was built never trains, and sharding with fully_shard replaces the parameters): build the "
                "optimizer from ows.build_param_groups(model, config), after sharding"
            )

    def begin_step(self, step: int) -> tuple[int, ...]:
        """Apply the active set of optimizer step ``step``; resamples only at period changes."""
        period = self.sampler.period(step)
        if period == self.period and self.active is not None:
            return self.active
        new_active = self.sampler.active_layers(step)
        check_same_active(new_active, len(self.layers), period)
        if self.active is None:  # sharding (FSDP2) after the optimizer was built replaces the parameters
            self._check_optimizer_covers_layers()
            if self.residency is not None:  # a resumed run: the layers of earlier periods hold trained weights
                self.residency.trained.update(i for k in range(period) for i in self.sampler.active_layers(
                    k * self.sampler.interval))
        swapped = self.residency.swap_seconds if self.residency is not None else 0.0
        self._apply(new_active)
        self.period = period
        self.visits.update(new_active)
        self.schedule.append((step, tuple(new_active)))
        swap = ""
        if self.residency is not None:
            self.swaps.append((step, self.residency.swap_seconds - swapped))
            swap = f"; weights moved in {self.swaps[-1][1]:.2f} s"
        if is_main_process():
            logger.info("step %d: active decoder layers %s%s", step, list(new_active), swap)
        if self.on_resample is not None:
            self.on_resample(step, new_active)
        return new_active

    def _apply(self, new_active: tuple[int, ...]) -> None:
        previous = set(self.active) if self.active is not None else None
        keep = set(new_active)
        # On the first call every non-active layer is frozen and stale state (e.g. from a loaded
        # checkpoint of an earlier period) dropped; later only the layers that left are touched.
        leaving = [i for i in range(len(self.layers)) if i not in keep and (previous is None or i in previous)]
        released = 0
        for i in leaving:
            params = list(self.layers[i].parameters())
            set_trainable([self.layers[i]], False)
            released += release_optimizer_state(self.optimizer, params)
            if self.residency is not None:
                self.residency.leave(i)
        # Entering layers need no release: their state was dropped when they left, and state present
        # now can only come from a checkpoint of this very period.
        for i in new_active:
            if self.residency is not None:
                self.residency.enter(i)
        set_trainable([self.layers[i] for i in new_active], True)
        self.released_bytes += released
        self.active = tuple(new_active)
        logger.debug("active layers %s; released %d optimizer-state bytes", self.active, released)

    def schedule_record(self, num_steps: int | None = None) -> dict[str, Any]:
        """The schedule as JSON-ready data: ``schedule`` [[step, layers], ...] and ``visits`` per layer.

        ``num_steps`` given: the whole run's schedule over steps 0 .. num_steps-1, recomputed from the
        sampler (a pure function of seed and period), so a resumed run records its periods before the
        resume too. None: the resamples this controller applied.
        """
        if num_steps is None:
            schedule, visits = self.schedule, self.visits
        else:
            interval = self.sampler.interval
            schedule = [(k * interval, active) for k, active in enumerate(self.sampler.schedule(num_steps))]
            visits = Counter(i for _, active in schedule for i in active)
        return {"schedule": [[step, list(active)] for step, active in schedule],
                "visits": {str(k): v for k, v in sorted(visits.items())}}

    def trainable_parameter_count(self) -> int:
        """Number of parameters with ``requires_grad`` in the model right now."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def build_sampler(config: OWSConfig, num_layers: int, profile: Any | None = None) -> LayerSampler:
    """The :class:`LayerSampler` that ``config`` asks for; ``profile`` (an ``OutlierProfile``) for 'owl' strategies."""
    config.check_for(num_layers, profile.ratios if profile is not None else None)
    probabilities = sampling_probabilities(
        profile.ratios if profile is not None else None,
        config.sampling_strategy,
        num_layers=num_layers,
        weights=config.sampling_weights,
        temperature=config.sampling_temperature,
    )
    return LayerSampler(probabilities, config.num_active_layers, config.sample_interval, config.seed)


def create_ows(
    model: nn.Module,
    config: OWSConfig,
    profile: Any | None = None,
    *,
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    on_resample: Callable[[int, tuple[int, ...]], None] | None = None,
    max_grad_norm: float = 0.0,
    weights_source: str | None = None,
) -> tuple[GaLoreAdamW, OWSController]:
    """Build the optimizer and controller for ``model`` from ``config`` (and an outlier ``profile``).

    All validation (layer count, gamma, profile match) happens here, before any training. The decoder
    layers are located once and handed to the param groups and the controller. With
    ``config.fused_step``, ``max_grad_norm`` is the fused step's clipping norm (0: no clipping; the
    Hugging Face integration takes it from ``TrainingArguments``). With ``config.frozen_quantization``,
    ``weights_source`` (the model's folder of safetensors files) gives the exact weights of layers never
    trained, so that no host copy of them is needed.
    """
    found = locate_decoder_layers(model, config.layers_attr)
    sampler = build_sampler(config, len(found.modules), profile)
    optimizer = GaLoreAdamW(build_param_groups(model, config, weight_decay, layers=found), lr=lr, betas=betas, eps=eps)
    if config.fused_step:
        enable_fused_step(optimizer, model, max_grad_norm)
    residency = None
    if config.frozen_quantization != "none":
        if is_distributed():
            raise ValueError(f"frozen_quantization={config.frozen_quantization!r} is not supported with several "
                             "processes yet: set frozen_quantization none, or train in one process")
        from .frozen import FrozenLayers, SafetensorsSource

        source = SafetensorsSource(weights_source) if weights_source else None
        residency = FrozenLayers(model, found.modules, config.frozen_quantization, source)
        if not config.train_embeddings:  # the input embedding never trains: held quantized too, when it can be
            from .frozen_embeddings import quantize_frozen_embedding

            residency.embedding = quantize_frozen_embedding(model, config.frozen_quantization, source)
    controller = OWSController(model, optimizer, sampler, on_resample=on_resample, layers=found, residency=residency)
    return optimizer, controller
