"""Several processes (torchrun, accelerate launch): same active layers everywhere, DDP and FSDP2 support.

- :func:`check_same_active`: one all-reduce per resample proves every rank trains the same layers.
- :class:`LayerGradSync`: DDP builds its gradient buckets from ``requires_grad`` at wrap time, so
  layers frozen then would never be synchronised and layers frozen later would keep bucket memory.
  The decoder layers are therefore hidden from DDP and their gradients averaged here, by a hook on
  each parameter that fires only when the parameter received a gradient (only sampled layers do).
- :func:`shard_model`: FSDP2 (``fully_shard``) with one unit per decoder layer, then the root.
- GaLore on a DTensor weight (gather the full gradient, the same update on every rank, apply the
  local shard) lives with the optimizer, in :mod:`ows.optim.sharded`.

Every function is a no-op (or the plain path) when ``torch.distributed`` is not initialised or has
one process.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .optim.sharded import is_dtensor

logger = logging.getLogger(__name__)


def _dist() -> Any:
    return torch.distributed if torch.distributed.is_available() else None


def world_size() -> int:
    """Number of processes in the default group (1 without ``torch.distributed``)."""
    d = _dist()
    return d.get_world_size() if d is not None and d.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group; before it is initialised, the launcher's ``RANK`` (else 0)."""
    d = _dist()
    return d.get_rank() if d is not None and d.is_initialized() else int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialised with more than one process."""
    return world_size() > 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        torch.distributed.barrier()


def shutdown() -> None:
    """Tear down the default process group at the end of a finished run (no-op without one).

    Call it on every rank once training has finished, after dropping the trainer and model. A gloo group
    left to the interpreter's exit can abort the process (``terminate called without an active
    exception``, SIGABRT); a group whose last owner is a DDP wrapper freed later can hang the process at
    exit (the wrapper's destructor joins gloo's threads while holding the GIL one of them waits for). So
    this collects the dropped wrappers while the group is still registered, waits at a barrier (the GIL
    free, gloo's threads finish their last work), then destroys the group. Not for a failing run: the
    barrier would wait for ranks that are elsewhere.
    """
    d = _dist()
    if d is None or not d.is_initialized():
        return
    gc.collect()
    barrier()
    d.destroy_process_group()


def _collective_device() -> torch.device:
    backend = str(torch.distributed.get_backend())
    return torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend else torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; returned unchanged in one process)."""
    if not is_distributed():
        return obj
    holder = [obj if rank() == src else None]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over every rank, on the CPU (``tensor`` itself in one process)."""
    if not is_distributed():
        return tensor
    buffer = tensor.to(_collective_device())
    torch.distributed.all_reduce(buffer)
    return buffer.cpu()


def check_same_active(active: Sequence[int], num_layers: int, period: int) -> None:
    """Raise ``RuntimeError`` unless every rank passes the same ``active`` set (of layers, or of weights with
    ``sampling_granularity: module``; ``num_layers`` is then the number of weights).

    One all-reduce (MAX) of a ``2 * num_layers`` int tensor holding the set's indicator and its
    negation: the sets agree iff the maximum and the minimum indicator are equal everywhere.
    """
    if not is_distributed():
        return
    mask = torch.zeros(2 * num_layers, dtype=torch.int64, device=_collective_device())
    mask[list(active)] = 1
    mask[num_layers:] = -mask[:num_layers]
    torch.distributed.all_reduce(mask, op=torch.distributed.ReduceOp.MAX)
    if torch.equal(mask[:num_layers], -mask[num_layers:]):
        return
    sets: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(sets, tuple(active))
    other = next(r for r, s in enumerate(sets) if s != sets[0])
    raise RuntimeError(
        f"ranks sampled different active layers in period {period}: rank 0 has {list(sets[0])}, rank {other} has "
        f"{list(sets[other])}: give every rank the same seed, sampling strategy and outlier profile"
    )


def layer_parameter_names(model: nn.Module, layers: nn.ModuleList) -> list[str]:
    """Fully qualified names (as ``model.named_parameters()`` gives them) of the parameters in ``layers``."""
    ids = {id(p) for p in layers.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


class LayerGradSync:
    """Average the gradients of decoder-layer parameters across ranks, outside DDP.

    Construct before the model is wrapped in ``DistributedDataParallel``: it tells DDP to ignore the
    layers' parameters (no buckets, no unused-parameter errors), broadcasts their values from rank 0
    (what DDP would have done) and registers a post-accumulate-grad hook per parameter. The first hook
    of a backward pass queues a callback on the autograd engine; when the pass ends, the callback
    all-reduces, in one fixed order on every rank, the gradient of every parameter that requires one
    (zeros where this rank got none, e.g. an expert no token reached), so collectives always pair up.
    Frozen layers fire no hook and cost nothing. A forward pre-hook re-arms the callback, so a failed
    backward cannot leave it stuck. Under gradient accumulation every micro-batch is reduced: the
    result is the same average, with one all-reduce per sampled parameter and micro-batch.
    """

    def __init__(self, model: nn.Module, layers: nn.ModuleList, fused: Any = None) -> None:
        from torch.nn.parallel import DistributedDataParallel

        d = torch.distributed
        self.world = d.get_world_size()
        names = layer_parameter_names(model, layers)
        ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []) or [])
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored + names)
        # A group of our own: its collectives never interleave with DDP's on the default group.
        self.group = d.new_group(backend=str(d.get_backend()))
        self.params = list(dict.fromkeys(layers.parameters()))
        device = _collective_device()
        with torch.no_grad():
            for p in self.params:
                buffer = p.data.to(device)
                d.broadcast(buffer, src=0, group=self.group)
                p.data.copy_(buffer)
        self._queued = False
        self.reductions = 0
        if fused is not None:  # the fused step averages each layer gradient in its own hook, then updates;
            fused.reduce = self.reduce_now  # what DDP reduces (outside the layers) is stepped after backward
            layer_ids = {id(p) for p in self.params}
            fused.step_later(p for p in model.parameters() if id(p) not in layer_ids)
            self._handles: list[Any] = []
        else:
            self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in self.params]
            self._handles.append(model.register_forward_pre_hook(self._rearm))
        logger.info("DDP: %d decoder-layer parameters synchronised by OWS hooks", len(self.params))

    def _rearm(self, module: nn.Module, args: Any) -> None:
        self._queued = False

    def _on_grad(self, param: torch.Tensor) -> None:
        if not self._queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._finish)
            self._queued = True

    def _finish(self) -> None:
        pending = []
        for p in self.params:
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            pending.append((p.grad, torch.distributed.all_reduce(p.grad, group=self.group, async_op=True)))
        for grad, handle in pending:
            handle.wait()
            grad.div_(self.world)
        self.reductions += len(pending)
        self._queued = False

    def reduce_now(self, grad: torch.Tensor) -> None:
        """Average one gradient across ranks in place (the fused step's per-parameter reduction).

        Every rank must reach it for the same parameters in the same order, which holds when every
        sampled parameter receives a gradient on every rank (dense models; not for experts that no
        token reached on some rank: use fused_step false there).
        """
        torch.distributed.all_reduce(grad, group=self.group)
        grad.div_(self.world)
        self.reductions += 1

    def remove(self) -> None:
        """Remove the hooks (the DDP ignore list stays on the model)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def outside_layers_trainable(model: nn.Module, layers: nn.ModuleList) -> bool:
    """Whether any parameter outside the decoder layers requires a gradient."""
    ids = {id(p) for p in layers.parameters()}
    return any(p.requires_grad for p in model.parameters() if id(p) not in ids)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` holds DTensor parameters (FSDP2 / tensor parallel)."""
    return any(is_dtensor(p) for p in model.parameters())


def setup_ddp(model: nn.Module, layers: nn.ModuleList, fused: Any = None) -> LayerGradSync | None:
    """Prepare ``model`` for DDP with OWS when several processes run; idempotent; None otherwise.

    ``fused`` (the optimizer's ``FusedStep``): the layer gradients are averaged inside its hooks.

    Raises ``ValueError`` when nothing outside the decoder layers trains: DDP refuses to wrap a
    model whose every trainable parameter it was told to ignore.
    """
    if not is_distributed() or is_sharded(model):
        return None
    existing = getattr(model, "_ows_layer_sync", None)
    if existing is not None:
        return existing
    if not outside_layers_trainable(model, layers):
        raise ValueError(
            "train_embeddings, train_lm_head and train_final_norm are all false: under DDP OWS synchronises the "
            "decoder layers itself and DDP needs at least one other trainable parameter: set train_final_norm=true "
            "(a few KB) or use FSDP2"
        )
    sync = LayerGradSync(model, layers, fused)
    model._ows_layer_sync = sync  # type: ignore[assignment]
    return sync


def shard_model(model: nn.Module, layers: nn.ModuleList, **fully_shard_kwargs: Any) -> nn.Module:
    """FSDP2: ``fully_shard`` every decoder layer (one unit each), then the root; returns ``model``.

    Build the optimizer (``ows.create_ows``) after this call: sharding replaces the parameters.
    ``fully_shard_kwargs`` go to ``torch.distributed.fsdp.fully_shard`` (mesh, reshard_after_forward, ...).
    """
    from torch.distributed.fsdp import fully_shard

    for layer in layers:
        fully_shard(layer, **fully_shard_kwargs)
    fully_shard(model, **fully_shard_kwargs)
    return model
