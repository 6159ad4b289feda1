"""A frozen input embedding held quantized (NF4 or int8, bitsandbytes); each lookup dequantizes only its rows.

With ``frozen_quantization`` and ``train_embeddings: false`` the input embedding never trains, so, like
the frozen decoder layers (:mod:`ows.frozen`), it can stay on the device in low precision: a Llama-3.1
8B's 128,256 x 4,096 table takes 1.0 GiB in bf16 and 0.27 GiB in NF4 (2.0 and 0.53 GiB at 70B).
A lookup gathers the quantized blocks of the requested rows and dequantizes just those (NF4 blocks of 64
values never straddle a row when the hidden size is a multiple of 64; int8 has one scale per row), so
no full-size copy ever exists. The exact table is read back from the model's safetensors (or a host
copy) for ``state_dict()``, checkpoints and the saved model, and put back on the device by
:meth:`QuantizedEmbedding.restore` before the final evaluation and save.

Only a plain ``nn.Embedding`` that is not tied to the output head qualifies: a tied head multiplies by the
whole table, and subclasses (Gemma's scaled embedding) compute more than a lookup.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .frozen import SafetensorsSource, _bnb, _to_host, quantize, quantized_bytes

logger = logging.getLogger(__name__)
NF4_BLOCK = 64


def can_quantize(model: nn.Module, mode: str) -> str | None:
    """None when ``model``'s input embedding can be held in ``mode``; else the reason it cannot."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if type(embedding) is not nn.Embedding:
        return "it is not a plain nn.Embedding"
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and head.weight is embedding.weight:
        return "it is tied to the output head"
    if mode == "nf4" and embedding.weight.shape[1] % NF4_BLOCK:
        return f"its width {embedding.weight.shape[1]} is not a multiple of {NF4_BLOCK}"
    return None


class QuantizedEmbedding:
    """The input embedding of ``model`` held in ``mode`` on the device; exact weights from ``source`` or the host."""

    def __init__(self, model: nn.Module, mode: str, source: SafetensorsSource | None = None) -> None:
        why = can_quantize(model, mode)
        if why is not None:
            raise ValueError(f"frozen_quantization={mode!r} cannot hold the input embedding: {why}")
        self.model, self.mode, self.source = model, mode, source
        self.module: nn.Embedding = model.get_input_embeddings()
        weight = self.module.weight
        self.name = next(n for n, p in model.named_parameters(remove_duplicate=False) if p is weight)
        self.shape, self.dtype = tuple(weight.shape), weight.dtype
        self.host = None if self._from_source() is not None else _to_host(weight.detach())
        self.quantized: dict[str, Any] | None = quantize(weight, mode)
        weight.data = torch.empty(0, dtype=weight.dtype, device=weight.device)
        self.module.forward = self.lookup
        self._hooks = [model._register_state_dict_hook(self._state_dict_hook),
                       model._register_load_state_dict_pre_hook(self._load_hook, with_module=True)]
        logger.info("the frozen input embedding %s is held in %s (%.2f GiB on the device)", self.name, mode,
                    self.device_bytes() / 2**30)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedding rows of ``ids``, dequantized from their own blocks only."""
        flat = ids.reshape(-1)
        rows, width = self.shape
        q = self.quantized
        if q["mode"] == "int8":
            from bitsandbytes.functional import int8_vectorwise_dequant

            values = int8_vectorwise_dequant(q["codes"][flat], q["scales"][flat])
        else:
            from bitsandbytes.functional import QuantState, dequantize_4bit

            state = q["state"]
            packed = q["packed"].reshape(rows, width // 2)[flat].reshape(-1, 1)
            absmax = state.absmax.reshape(rows, width // NF4_BLOCK)[flat].reshape(-1)
            picked = QuantState(absmax=absmax, shape=torch.Size((flat.numel(), width)), code=state.code,
                                blocksize=NF4_BLOCK, quant_type="nf4", dtype=state.dtype)
            values = dequantize_4bit(packed, picked)
        return values.to(self.dtype).reshape(*ids.shape, width)

    def device_bytes(self) -> int:
        """Device bytes of the table as it is held now."""
        return quantized_bytes(self.quantized) if self.quantized is not None else self.module.weight.nbytes

    def exact(self) -> torch.Tensor:
        """The exact table on the host."""
        return self.host if self.host is not None else self._from_source()

    def _from_source(self) -> torch.Tensor | None:
        return None if self.source is None else self.source.get(self.name, self.dtype)

    def restore(self) -> None:
        """Put the exact table back on the device and the plain lookup back (before evaluating and saving)."""
        if self.quantized is None:
            return
        device = self.module.weight.device
        self.module.weight.data = self.exact().to(device)
        self.quantized = None
        del self.module.forward
        for hook in self._hooks:
            hook.remove()

    def _state_dict_hook(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, metadata: Any) -> None:
        if self.quantized is not None and prefix + self.name in state_dict:
            state_dict[prefix + self.name] = self.exact()

    def _load_hook(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A loaded table becomes the exact copy (quantized again); the empty parameter gets an empty tensor."""
        tensor = state_dict.get(prefix + self.name)
        if self.quantized is None or tensor is None or tensor.numel() == 0:
            return
        device = self.module.weight.device
        self.host = _to_host(tensor.detach().to(self.dtype))
        self.quantized = quantize(tensor.detach().to(device, self.dtype), self.mode)
        state_dict[prefix + self.name] = torch.empty(0, dtype=self.dtype)


def quantize_frozen_embedding(model: nn.Module, mode: str, source: SafetensorsSource | None) -> QuantizedEmbedding | None:
    """Hold ``model``'s frozen input embedding in ``mode`` when it qualifies (None, with a log line, when not)."""
    _bnb()
    why = can_quantize(model, mode)
    if why is not None:
        logger.info("the input embedding stays in full precision: %s", why)
        return None
    return QuantizedEmbedding(model, mode, source)
