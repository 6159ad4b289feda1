"""``sampling_strategy: gradient``: blocks drawn by an online importance signal, measured while they train.

- **Signal**: at every optimizer step, each active block's RMS gradient ``||g||_2 / sqrt(numel)`` over its
  2-D weights, i.e. the gradient the optimizer applies (accumulated, averaged across DDP ranks, clipped).
  :class:`GradientMeter` measures it in the optimizer's step pre-hook, or with the fused step inside each
  weight's gradient hook (where the gradient is freed), and all-reduces it under DDP.
- **Score**: when a period ends, a block drawn in it gets the mean of its steps' RMS; its score is that mean the
  first time, then ``ema * score + (1 - ema) * mean``. A block not drawn keeps its score (stale scores are kept,
  as GRASS does: gradients shrink as training goes on, so an old score tends to be high and brings the block
  back; a score is never trusted from nothing).
- **Draw** (exponential keys of (seed, period), as every strategy): blocks never visited come first, in the
  order of the prior (uniform, or the outlier profile with ``sampling_prior: owl``), so every block is visited
  before the signal is used; the rest follow with p proportional to ``score ** sampling_temperature`` (a block
  drawn but never measured counts as the mean score). Layers: the first gamma; weights: every block that still
  fits in the parameter budget.

The draw of period k is a pure function of (seed, k, the state when period k begins). The state (scores,
visits, the running period's sums, the draws so far) is saved with the optimizer's state dict under
``ows_sampler`` (:func:`attach_state`), so that a resumed run continues bit-identically.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

import torch

from . import distributed
from .validation import check_active_layers
from .granularity import check_budget, fill_budget
from .sampling import _normalise, _PeriodSampler, draw_order

logger = logging.getLogger(__name__)
STATE_KEY = "ows_sampler"


def score_probabilities(scores: Sequence[float | None], temperature: float) -> list[float]:
    """p proportional to ``score ** temperature``; a ``None`` score (never measured) counts as the mean of the others.

    All scores zero or unknown, or a temperature of 0: uniform.
    """
    known = [s for s in scores if s is not None]
    mean = sum(known) / len(known) if known else 0.0
    filled = [mean if s is None else s for s in scores]
    if temperature == 0 or not any(s > 0 for s in filled):
        return [1.0 / len(filled)] * len(filled)
    return _normalise([s**temperature if s > 0 else 0.0 for s in filled], "gradient scores")


def updated_score(score: float | None, mean: float, ema: float) -> float:
    """The score after a period in which the block measured ``mean``: the mean itself the first time."""
    return mean if score is None else ema * score + (1.0 - ema) * mean


class GradientSampler(_PeriodSampler):
    """The ``gradient`` strategy's sampler: its draws depend on the scores measured so far (see the module).

    ``prior``: the order of first visits (probabilities); ``sizes`` and ``budget``: block sizes and the budget of
    a draw (layers: sizes 1 and budget gamma); ``ema``: beta of the scores; ``temperature``: tau of p ~ score**tau.
    """

    stateful = True

    def __init__(self, prior: Sequence[float], sizes: Sequence[int], budget: int, interval: int, seed: int = 0, *,
                 ema: float = 0.5, temperature: float = 1.0) -> None:
        self.prior = _normalise(prior, "prior probabilities")
        self.sizes = [int(s) for s in sizes]
        self.num_blocks = len(self.sizes)
        if len(self.prior) != self.num_blocks:
            raise ValueError(f"{len(self.prior)} prior probabilities for {self.num_blocks} blocks: give one per block")
        if all(s == 1 for s in self.sizes):
            check_active_layers(budget, self.num_blocks)
        else:
            check_budget(budget, self.sizes)
        if not 0 <= ema < 1:
            raise ValueError(f"sampling_ema={ema!r} is invalid: must be >= 0 and < 1")
        self.budget, self.ema, self.temperature = int(budget), float(ema), float(temperature)
        self._set_interval(interval, seed)
        self.reset()

    def reset(self) -> None:
        """Forget everything measured and drawn (a new run)."""
        n = self.num_blocks
        self.scores: list[float | None] = [None] * n
        self.visits = [0] * n
        self.last_visit = [-1] * n
        self.sums, self.counts = [0.0] * n, [0] * n  # the running period's RMS values
        self.current: int | None = None  # the period of the latest draw
        self.history: dict[int, tuple[int, ...]] = {}

    # --- measuring ----------------------------------------------------------------------------------
    def observe(self, values: dict[int, float]) -> None:
        """One optimizer step's RMS gradient of each measured block (non-finite values are left out)."""
        for block, value in sorted(values.items()):
            if math.isfinite(value):
                self.sums[block] += value
                self.counts[block] += 1

    def _close_period(self) -> None:
        """Fold the running period's means into the scores."""
        for block in range(self.num_blocks):
            if self.counts[block]:
                self.scores[block] = updated_score(self.scores[block], self.sums[block] / self.counts[block], self.ema)
        self.sums, self.counts = [0.0] * self.num_blocks, [0] * self.num_blocks

    # --- drawing ------------------------------------------------------------------------------------
    def period_blocks(self, period: int) -> tuple[int, ...]:
        """The blocks of ``period``: recorded when it has run, else drawn now from the state (closing the running
        period first). Periods must be asked for in order: a draw changes the state."""
        if period in self.history:
            return self.history[period]
        if self.current is not None and period < self.current:
            raise ValueError(f"period {period} was not run by this sampler and its draw depended on the state then: "
                             "load the sampler state of that run")
        if self.current is not None:
            self._close_period()
        blocks = self._draw(period)
        self.history[period] = blocks
        self.current = period
        for block in blocks:
            self.visits[block] += 1
            self.last_visit[block] = period
        return blocks

    def current_probabilities(self) -> list[float]:
        """The probabilities of the visited blocks now (what the draw uses once every block was visited)."""
        return score_probabilities(self.scores, self.temperature)

    def _draw(self, period: int) -> tuple[int, ...]:
        fresh = [v == 0 for v in self.visits]
        scored = self.current_probabilities()
        weights = [self.prior[b] if fresh[b] else scored[b] for b in range(self.num_blocks)]
        order = draw_order(weights, self.seed, period, groups=[0 if f else 1 for f in fresh], include_zero=True)
        blocks = fill_budget(order, self.sizes, self.budget)
        if any(fresh):
            logger.debug("period %d: %d blocks not visited yet come first", period, sum(fresh))
        return blocks

    def ran(self, num_steps: int) -> list[tuple[int, tuple[int, ...]]]:
        """(period, blocks) of the periods drawn so far that start before ``num_steps``."""
        return [(k, self.history[k]) for k in sorted(self.history) if k * self.interval < num_steps]

    def schedule(self, num_steps: int) -> list[tuple[int, ...]]:
        """The blocks of the periods that ran (not recomputable from the seed: they depend on the measurements)."""
        return [blocks for _, blocks in self.ran(num_steps)]

    # --- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the next draws depend on, as plain lists (saved with the optimizer state)."""
        return {"num_blocks": self.num_blocks, "scores": list(self.scores), "visits": list(self.visits),
                "last_visit": list(self.last_visit), "sums": list(self.sums), "counts": list(self.counts),
                "current": self.current, "history": [[k, list(v)] for k, v in sorted(self.history.items())]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (before the first draw of a resumed run)."""
        if state.get("num_blocks") != self.num_blocks:
            raise ValueError(f"the saved sampler state has {state.get('num_blocks')} blocks but this run samples "
                             f"{self.num_blocks}: resume with the sampling settings of the run that saved it")
        self.scores = [None if s is None else float(s) for s in state["scores"]]
        self.visits, self.last_visit = [int(v) for v in state["visits"]], [int(v) for v in state["last_visit"]]
        self.sums, self.counts = [float(v) for v in state["sums"]], [int(v) for v in state["counts"]]
        self.current = None if state["current"] is None else int(state["current"])
        self.history = {int(k): tuple(int(b) for b in v) for k, v in state["history"]}


def attach_state(optimizer: torch.optim.Optimizer, sampler: GradientSampler) -> None:
    """Save ``sampler``'s state in ``optimizer.state_dict()`` (key ``ows_sampler``) and restore it in
    ``optimizer.load_state_dict``: every checkpoint that holds the optimizer holds the sampler (torch hooks, so
    any torch optimizer works)."""
    def save(opt: Any, state: dict[str, Any]) -> dict[str, Any]:
        state[STATE_KEY] = sampler.state_dict()
        return state

    def load(opt: Any, state: dict[str, Any]) -> dict[str, Any]:
        saved = state.pop(STATE_KEY, None)
        if saved is not None:
            sampler.load_state_dict(saved)
        return state

    optimizer.register_state_dict_post_hook(save)
    optimizer.register_load_state_dict_pre_hook(load)


class GradientMeter:
    """Measures each active block's RMS gradient at every optimizer step and hands it to the sampler.

    ``matrices[b]``: the 2-D weights of block b; ``active()``: the blocks training now. Non-fused: read in the
    optimizer's step pre-hook. Fused step (``optimizer.fused``): each weight's squared norm arrives through
    ``observe`` from its gradient hook, before the gradient is freed. The step's values are summed over ranks
    (one all-reduce of 2 x blocks numbers) in the step post-hook, so every rank keeps the same state.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, matrices: Sequence[Sequence[torch.Tensor]],
                 sampler: GradientSampler, active: Callable[[], Sequence[int]]) -> None:
        self.sampler, self.matrices, self.active = sampler, [list(m) for m in matrices], active
        self.block_of = {id(p): b for b, params in enumerate(self.matrices) for p in params}
        self.numel = {id(p): p.numel() for params in self.matrices for p in params}
        self._squares: dict[int, list[torch.Tensor]] = {}
        self._elements: dict[int, int] = {}
        self._handles = [optimizer.register_step_pre_hook(self._before_step),
                         optimizer.register_step_post_hook(self._after_step)]
        fused = getattr(optimizer, "fused", None)
        if fused is not None:
            fused.observe = self.observe

    def observe(self, param: torch.Tensor, square: torch.Tensor) -> None:
        """Record the squared norm of the gradient ``param`` is updated with (ignored outside the blocks)."""
        block = self.block_of.get(id(param))
        if block is not None:
            self._squares.setdefault(block, []).append(square.detach().double())
            self._elements[block] = self._elements.get(block, 0) + self.numel[id(param)]

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        for block in self.active():
            for param in self.matrices[block]:
                if param.grad is not None:
                    self.observe(param, param.grad.detach().float().pow(2).sum())

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        rms = torch.zeros(2, self.sampler.num_blocks, dtype=torch.float64)
        if self._squares:
            blocks = sorted(self._squares)
            squares = torch.stack([torch.stack(self._squares[b]).sum() for b in blocks]).cpu()
            for i, block in enumerate(blocks):
                rms[0, block] = (squares[i] / self._elements[block]).sqrt()
                rms[1, block] = 1.0
        self._squares, self._elements = {}, {}
        rms = distributed.all_reduce_sum(rms)
        self.sampler.observe({b: float(rms[0, b] / rms[1, b]) for b in range(self.sampler.num_blocks) if rms[1, b] > 0})

    def remove(self) -> None:
        """Stop measuring."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
