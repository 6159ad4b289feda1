"""Frozen decoder-layer weights held quantized (NF4 or int8, bitsandbytes); sampled ones train on their exact weights.

OWS trains gamma of N decoder layers (or that many layers' worth of single weights) at a time, so the
rest can be held in low precision. :class:`FrozenLayers` keeps, for every frozen ``nn.Linear`` of the
decoder layers, only a quantized copy on the
device (``weight.data`` becomes an empty tensor; the ``Parameter`` object stays, so the optimizer's
groups and the controller are unchanged) and a forward that multiplies by it, as QLoRA's base does:

- ``nf4``: bitsandbytes' 4-bit NormalFloat, blocks of 64 with an fp32 absmax each (0.14x fp32 bytes);
  the product is ``bitsandbytes.matmul_4bit``, which saves only the quantized weight for backward;
- ``int8``: bitsandbytes' row-wise int8 (``int8_vectorwise_quant``), 0.25x fp32 bytes; weight-only,
  dequantized for the matmul (activations stay in the model's dtype).

The exact weights never pass through the quantizer: a layer's weights, when it leaves the sampled
set, are copied exactly to the host (pinned memory on CUDA) and quantized from that copy; when it is
sampled again they move back bit for bit. A layer that was never sampled is read back from the
model's safetensors files (memory-mapped, converted to the model's dtype as loading does) when those
are given, else from a host copy. ``state_dict()`` reports the exact weights, so checkpoints and the
saved model are exact and ``from_pretrained`` loads them with nothing to merge; ``load_state_dict``
puts loaded weights of frozen layers back into the exact copies. bitsandbytes is imported on use.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .choices import FROZEN_QUANTIZATIONS

logger = logging.getLogger(__name__)
INSTALL = "pip install 'ows[memory]' (bitsandbytes)"


def _bnb() -> tuple[Any, Any]:
    try:
        import bitsandbytes
        import bitsandbytes.functional as functional
    except ImportError:
        raise FileNotFoundError(f"frozen_quantization needs bitsandbytes: {INSTALL}") from None
    return bitsandbytes, functional


class _Int8Matmul(torch.autograd.Function):
    """x @ dequant(W)^T + b for a row-wise int8 weight; saves only the int8 weight for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        weight = _bnb()[1].int8_vectorwise_dequant(codes, scales).to(x.dtype)
        ctx.save_for_backward(codes, scales)
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        codes, scales = ctx.saved_tensors
        weight = _bnb()[1].int8_vectorwise_dequant(codes, scales).to(grad.dtype)
        return grad @ weight, None, None, None


def quantize(weight: torch.Tensor, mode: str) -> dict[str, Any]:
    """The quantized form of a 2-D weight (``nf4`` or ``int8``) as a dict of tensors and the quantization state."""
    _, functional = _bnb()
    if mode == "nf4":
        packed, state = functional.quantize_4bit(weight.detach(), blocksize=64, quant_type="nf4")
        return {"mode": mode, "packed": packed, "state": state}
    codes, scales, _ = functional.int8_vectorwise_quant(weight.detach().float())
    return {"mode": mode, "codes": codes, "scales": scales}


def quantized_bytes(quantized: dict[str, Any]) -> int:
    """Bytes the quantized form holds on the device."""
    if quantized["mode"] == "nf4":
        state = quantized["state"]
        return quantized["packed"].nbytes + state.absmax.nbytes + state.code.nbytes
    return quantized["codes"].nbytes + quantized["scales"].nbytes


def _forward_with(quantized: dict[str, Any], module: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if quantized["mode"] == "nf4":
            bnb, _ = _bnb()
            out = bnb.matmul_4bit(x, quantized["packed"].t(), quant_state=quantized["state"])
            return out + module.bias if module.bias is not None else out
        return _Int8Matmul.apply(x, quantized["codes"], quantized["scales"], module.bias)
    return forward


class SafetensorsSource:
    """Exact original weights read on demand from a model folder's ``*.safetensors`` files (memory-mapped)."""

    def __init__(self, folder: str | Path) -> None:
        from safetensors import safe_open

        self._files: dict[str, Path] = {}
        for path in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(str(path), framework="pt") as handle:
                self._files.update({key: path for key in handle.keys()})

    def get(self, name: str, dtype: torch.dtype) -> torch.Tensor | None:
        """The tensor ``name`` in ``dtype`` on the CPU, or None when no file holds it."""
        from safetensors import safe_open

        path = self._files.get(name)
        if path is None:
            return None
        with safe_open(str(path), framework="pt") as handle:
            return handle.get_tensor(name).to(dtype)


class FrozenLayers:
    """Quantized residency of frozen decoder-layer weights: :meth:`keep_exact` holds exactly the given linears
    in their exact weights (the sampled ones), every other linear of the decoder layers quantized.

    Residency is per ``nn.Linear``, so single-weight sampling (``sampling_granularity: module``) keeps
    only the drawn weights exact, not their whole layers; ``enter(i)`` / ``leave(i)`` move all of layer
    i's linears. ``source``: a :class:`SafetensorsSource` for the exact weights of linears that never
    trained (None: host copies are made). ``swap_seconds`` adds up the time spent moving weights.
    """

    def __init__(self, model: nn.Module, layers: nn.ModuleList, mode: str, source: SafetensorsSource | None = None,
                 trained: set[int] | None = None) -> None:
        if mode not in FROZEN_QUANTIZATIONS or mode == "none":
            raise ValueError(f"frozen_quantization={mode!r} is invalid here: use one of nf4, int8")
        _bnb()
        self.model, self.layers, self.mode, self.source = model, layers, mode, source
        self.names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        self.linears = [[m for m in layer.modules() if isinstance(m, nn.Linear)] for layer in layers]
        for index, linears in enumerate(self.linears):
            if not linears:
                raise ValueError(f"frozen_quantization needs nn.Linear modules in the decoder layers; layer {index} "
                                 "has none (e.g. GPT-2's Conv1D): set frozen_quantization none")
        self.linear_of = {id(m.weight): m for ms in self.linears for m in ms}  # a weight's parameter -> its linear
        self.quantized: dict[int, dict[str, Any]] = {}  # id(module) -> quantized form
        self.host: dict[int, torch.Tensor] = {}  # id(module) -> exact weight on the host (trained, or no source)
        self.trained = set(trained or ())  # id(module) of linears whose weights differ from the source's
        self.resident = {id(m) for ms in self.linears for m in ms}  # linears holding their exact weights
        self.swap_seconds = 0.0
        self.embedding: Any = None  # a frozen_embeddings.QuantizedEmbedding when the input embedding is held too
        self._hooks = [model._register_state_dict_hook(self._state_dict_hook),
                       model._register_load_state_dict_pre_hook(self._load_hook, with_module=True)]

    # --- moving weights in and out --------------------------------------------------------------------
    def linears_of(self, params: Any) -> list[nn.Linear]:
        """The decoder-layer linears whose weight is among ``params`` (parameters of sampled blocks)."""
        return [self.linear_of[id(p)] for p in params if id(p) in self.linear_of]

    def keep_exact(self, linears: list[nn.Linear]) -> None:
        """Hold exactly ``linears`` (the sampled weights) exact on the device; quantize every other one."""
        wanted = {id(m) for m in linears}
        self._leave([m for ms in self.linears for m in ms if id(m) not in wanted])
        self._enter(linears)

    def leave(self, index: int) -> None:
        """Layer ``index`` is frozen now: keep its exact weights on the host and quantize them for the device."""
        self._leave(self.linears[index])

    def enter(self, index: int) -> None:
        """Layer ``index`` is sampled: its exact weights come back to the device, the quantized copies go."""
        self._enter(self.linears[index])

    def _leave(self, linears: list[nn.Linear]) -> None:
        started = time.perf_counter()
        for module in (m for m in linears if id(m) in self.resident):
            weight = module.weight
            if id(module) in self.trained or self._source_of(module) is None:
                self.host[id(module)] = _to_host(weight.detach())
            self.quantized[id(module)] = quantize(weight, self.mode)
            weight.data = torch.empty(0, dtype=weight.dtype, device=weight.device)
            module.forward = _forward_with(self.quantized[id(module)], module)
            self.resident.discard(id(module))
        self.swap_seconds += time.perf_counter() - started

    def _enter(self, linears: list[nn.Linear]) -> None:
        started = time.perf_counter()
        for module in linears:
            self.trained.add(id(module))  # it trains from now on: when it leaves, its exact copy comes from the device
            if id(module) in self.resident:
                continue
            module.weight.data = self.exact(module).to(module.weight.device, non_blocking=True)
            self.quantized.pop(id(module))
            self.host.pop(id(module), None)
            del module.forward  # back to nn.Linear.forward
            self.resident.add(id(module))
        self.swap_seconds += time.perf_counter() - started

    def exact(self, module: nn.Linear) -> torch.Tensor:
        """The exact weight of a frozen ``module`` (host copy, else the source file), on the host."""
        if id(module) in self.host:
            return self.host[id(module)]
        tensor = self._source_of(module)
        if tensor is None:
            raise RuntimeError(f"no exact copy of {self.names.get(id(module.weight))}: it was frozen without one")
        return tensor

    def _source_of(self, module: nn.Linear) -> torch.Tensor | None:
        if self.source is None:
            return None
        return self.source.get(self.names[id(module.weight)], module.weight.dtype)

    def materialize(self) -> None:
        """Bring every layer (and a held input embedding) back to its exact weights on the device (before
        evaluating and saving the model)."""
        self._enter([m for ms in self.linears for m in ms])
        if self.embedding is not None:
            self.embedding.restore()

    def frozen_weight_bytes(self) -> int:
        """Device bytes of the frozen weights held quantized now (the layers' linears, a held input embedding)."""
        held = self.embedding.device_bytes() if self.embedding is not None and self.embedding.quantized else 0
        return held + sum(quantized_bytes(q) for q in self.quantized.values())

    # --- state dicts: always exact ------------------------------------------------------------------
    def _frozen_modules(self) -> dict[str, nn.Linear]:
        return {self.names[id(m.weight)]: m for ms in self.linears for m in ms if id(m) not in self.resident}

    def _state_dict_hook(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, metadata: Any) -> None:
        for name, linear in self._frozen_modules().items():
            if prefix + name in state_dict:
                state_dict[prefix + name] = self.exact(linear)

    def _load_hook(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Loaded weights of frozen layers become their exact copies (and are quantized again); the empty
        parameter gets an empty tensor, so a strict load finds nothing missing."""
        for name, linear in self._frozen_modules().items():
            tensor = state_dict.get(prefix + name)
            if tensor is None or tensor.numel() == 0:
                continue
            device = linear.weight.device
            self.host[id(linear)] = _to_host(tensor.detach().to(linear.weight.dtype))
            self.quantized[id(linear)] = quantize(tensor.detach().to(device, linear.weight.dtype), self.mode)
            linear.forward = _forward_with(self.quantized[id(linear)], linear)
            self.trained.add(id(linear))
            state_dict[prefix + name] = torch.empty(0, dtype=linear.weight.dtype)

    def remove(self) -> None:
        """Bring every layer back and remove the state-dict hooks."""
        self.materialize()
        for hook in self._hooks:
            hook.remove()


def _to_host(tensor: torch.Tensor) -> torch.Tensor:
    """An exact copy on the CPU (pinned when CUDA is in use, so that moving it back overlaps with compute)."""
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
    host.copy_(tensor, non_blocking=tensor.is_cuda)
    return host
