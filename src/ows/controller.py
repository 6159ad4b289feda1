"""OWSController: applies the block schedule to a model and its optimizer.

A block is a decoder layer, or one 2-D weight with ``sampling_granularity: module`` (a layer's norms and
biases then train while any of its weights does). At every period boundary the controller unfreezes the
newly sampled blocks, freezes the others and releases everything the optimizer held for parameters that
left the active set (moments, projector, step count) together with their gradients. A block sampled
again later starts afresh: new moments and a projector computed from its first new gradient. A block
that stays active across a boundary keeps its state. Frozen-weight quantization follows the blocks: a
decoder-layer weight holds its exact values while its block trains, and is quantized otherwise.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Iterable

from torch import nn
from torch.optim import Optimizer

from .config import OWSConfig
from .distributed import check_same_active, is_distributed, is_main_process, is_sharded
from .importance import GradientMeter, attach_state
from .layers import Block, DecoderLayers, layer_rest, locate_decoder_layers, sampling_blocks
from .memory.measure import tensor_bytes
from .optim.fused import enable_fused_step
from .optim.galore_adamw import GaLoreAdamW
from .optim.param_groups import build_param_groups
from .samplers import build_sampler

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


def layer_list(layers: Iterable[int]) -> str:
    """``0,2-8,10``: layer indices in order, each run of three or more as a range, so that a log line that
    names the layers of many drawn weights stays short."""
    ordered = sorted(set(layers))
    parts, start = [], 0
    for end in range(1, len(ordered) + 1):
        if end == len(ordered) or ordered[end] != ordered[end - 1] + 1:
            run = ordered[start:end]
            parts += [f"{run[0]}-{run[-1]}"] if len(run) >= 3 else [str(i) for i in run]
            start = end
    return ",".join(parts)


class OWSController:
    """Keeps the trainable blocks of ``model`` (decoder layers, or single weights) in sync with ``sampler``.

    Call :meth:`begin_step` with the 0-based optimizer step before each optimizer step's forward
    passes (once per step, not per micro-batch under gradient accumulation). ``active`` holds the decoder
    layers training now (with any block), ``active_blocks`` the blocks drawn; ``schedule`` holds ``(step,
    blocks)`` of every resample and ``visits`` how many periods each block was drawn. ``layers`` (from
    :func:`ows.locate_decoder_layers`) saves locating the decoder layers again; ``blocks`` (from
    :func:`ows.layers.sampling_blocks`, default: one per layer) must match the sampler. A stateful sampler
    (``sampling_strategy: gradient``) gets its measurements from a :class:`ows.importance.GradientMeter` and
    its state saved in ``optimizer.state_dict()``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        sampler: Any,
        layers_attr: str | None = None,
        on_resample: Callable[[int, tuple[int, ...]], None] | None = None,
        *,
        layers: DecoderLayers | None = None,
        residency: Any = None,
        blocks: list[Block] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.sampler = sampler
        found = layers if layers is not None else locate_decoder_layers(model, layers_attr)
        self.layers = found.modules
        self.blocks = blocks if blocks is not None else sampling_blocks(self.layers, "layer")
        self.granularity = "layer" if all(b.name == str(b.layer) for b in self.blocks) else "module"
        if len(self.blocks) != sampler.num_blocks:
            kind = "layers" if self.granularity == "layer" else "weights"
            raise ValueError(
                f"the sampler has probabilities for {sampler.num_blocks} {kind} but {found.path} has "
                f"{len(self.blocks)}: build the profile/weights for this model"
            )
        self._rest = layer_rest(self.layers, self.blocks)
        self._check_optimizer_covers_layers()
        self.on_resample = on_resample
        self.active: tuple[int, ...] | None = None
        self.active_blocks: tuple[int, ...] | None = None
        self.period: int | None = None
        self.visits: Counter[int] = Counter()
        self.schedule: list[tuple[int, tuple[int, ...]]] = []
        self.released_bytes = 0
        self.residency = residency  # ows.frozen.FrozenLayers when frozen layers are held quantized
        self.swaps: list[tuple[int, float]] = []  # (step, seconds spent moving weights) per resample
        self._trainable: dict[int, nn.Parameter] = {}
        self.meter = None
        if getattr(sampler, "stateful", False):
            attach_state(optimizer, sampler)
            self.meter = GradientMeter(optimizer, [b.matrices for b in self.blocks], sampler,
                                       lambda: self.active_blocks or ())

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
        """Apply the active set of optimizer step ``step``; resamples only at period changes. Returns the
        decoder layers that train (with any block)."""
        period = self.sampler.period(step)
        if period == self.period and self.active is not None:
            return self.active
        if self.active is None:
            self._first_step(step, period)
        new_blocks = self.sampler.active_blocks(step)
        check_same_active(new_blocks, len(self.blocks), period)
        swapped = self.residency.swap_seconds if self.residency is not None else 0.0
        self._apply(new_blocks)
        self.period = period
        self.visits.update(new_blocks)
        self.schedule.append((step, tuple(new_blocks)))
        swap = ""
        if self.residency is not None:
            self.swaps.append((step, self.residency.swap_seconds - swapped))
            swap = f"; weights moved in {self.swaps[-1][1]:.2f} s"
        if is_main_process():
            drawn = "" if self.granularity == "layer" else f" ({len(new_blocks)} weights, {self._size(new_blocks):,} " \
                                                          "parameters)"
            logger.info("step %d: active decoder layers %s%s%s", step, layer_list(self.active), drawn, swap)
        if self.on_resample is not None:
            self.on_resample(step, self.active)
        return self.active

    def _first_step(self, step: int, period: int) -> None:
        """Checks of the first call (sharding after the optimizer was built replaces the parameters), and the
        layers a resumed run trained before (their weights differ from the model's files)."""
        self._check_optimizer_covers_layers()
        stateful = getattr(self.sampler, "stateful", False)
        if (stateful or self.granularity == "module") and is_sharded(self.model):
            option = "sampling_strategy='gradient'" if stateful else "sampling_granularity='module'"
            raise ValueError(f"{option} is not supported with FSDP2 (sharded parameters): use DDP or one process, "
                             "or sample whole layers with a static strategy")
        if stateful and step > 0 and self.sampler.current is None:
            raise RuntimeError(f"resuming at step {step} with sampling_strategy='gradient' needs the sampler state "
                               "saved in the optimizer's state dict ('ows_sampler'): load the checkpoint's optimizer "
                               "state before training, or start from step 0")
        if self.residency is not None:  # weights trained before a resume differ from the model's files
            ran = {b for _, blocks in self.sampler.ran(period * self.sampler.interval) for b in blocks}
            self.residency.trained.update(id(m) for m in self.residency.linears_of(self._params_of(ran)))

    def _params_of(self, blocks: Iterable[int]) -> list[nn.Parameter]:
        return [p for b in sorted(blocks) for p in self.blocks[b].params]

    def _size(self, blocks: tuple[int, ...]) -> int:
        return sum(self.blocks[b].size for b in blocks)

    def _apply(self, new_blocks: tuple[int, ...]) -> None:
        layers_now = tuple(sorted({self.blocks[b].layer for b in new_blocks}))
        wanted = {id(p): p for b in new_blocks for p in self.blocks[b].params}
        wanted.update({id(p): p for i in layers_now for p in self._rest[i]})
        first = self.active is None
        # On the first call every parameter outside the set is frozen and stale state (e.g. from a loaded
        # checkpoint of an earlier period) dropped; later only the parameters that left are touched.
        before = {id(p): p for layer in self.layers for p in layer.parameters()} if first else self._trainable
        leaving = [p for key, p in before.items() if key not in wanted]
        for p in leaving:
            p.requires_grad_(False)
        released = release_optimizer_state(self.optimizer, leaving)
        if self.residency is not None:  # only the drawn weights exact (entering ones hold no optimizer state)
            self.residency.keep_exact(self.residency.linears_of(self._params_of(new_blocks)))
        for p in wanted.values():
            p.requires_grad_(True)
        self._trainable = wanted
        self.released_bytes += released
        self.active, self.active_blocks = layers_now, tuple(new_blocks)
        logger.debug("active blocks %s; released %d optimizer-state bytes", self.active_blocks, released)

    def schedule_record(self, num_steps: int | None = None) -> dict[str, Any]:
        """The schedule as JSON-ready data: ``schedule`` [[step, blocks], ...] and ``visits`` per block (with
        ``sampling_granularity: module`` also ``blocks``: the weights' names, in index order).

        ``num_steps`` given: the whole run's schedule over steps 0 .. num_steps-1 from the sampler (recomputed
        from seed and period; for ``gradient`` the draws that ran, saved with its state), so a resumed run
        records its periods before the resume too. None: the resamples this controller applied.
        """
        if num_steps is None:
            schedule, visits = self.schedule, self.visits
        else:
            schedule = [(k * self.sampler.interval, blocks) for k, blocks in self.sampler.ran(num_steps)]
            visits = Counter(i for _, active in schedule for i in active)
        record: dict[str, Any] = {"schedule": [[step, list(active)] for step, active in schedule],
                                  "visits": {str(k): v for k, v in sorted(visits.items())}}
        if self.granularity == "module":
            record["blocks"] = [b.name for b in self.blocks]
        return record

    def layer_visits(self, num_steps: int) -> dict[int, int]:
        """Periods in which each decoder layer trained (with any block) over steps 0 .. num_steps-1."""
        return dict(Counter(i for _, blocks in self.sampler.ran(num_steps)
                            for i in {self.blocks[b].layer for b in blocks}))

    def trainable_parameter_count(self) -> int:
        """Number of parameters with ``requires_grad`` in the model right now."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


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
    config = config.with_defaults()  # fields left at None: ows's defaults
    found = locate_decoder_layers(model, config.layers_attr)
    blocks = sampling_blocks(found.modules, config.sampling_granularity)
    sampler = build_sampler(config, len(found.modules), profile, blocks=blocks)
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
    controller = OWSController(model, optimizer, sampler, on_resample=on_resample, layers=found, residency=residency,
                               blocks=blocks)
    return optimizer, controller
