"""Find the decoder layers of any causal LM and switch them between trainable and frozen.

Discovery is generic: the longest ``nn.ModuleList`` whose blocks belong to the model's
``_no_split_modules`` classes (what Hugging Face uses for device maps), else the longest
``ModuleList`` of at least two blocks of one class. ``layers_attr`` overrides both.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, NamedTuple

import torch
from torch import nn


class DecoderLayers(NamedTuple):
    """Where the decoder layers live: dotted ``path`` from the model root and the ``modules`` list."""

    path: str
    modules: nn.ModuleList


def _resolve(model: nn.Module, dotted: str) -> nn.Module | None:
    module: object = model
    for part in dotted.split("."):
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and part.isdigit():
            index = int(part)
            module = module[index] if index < len(module) else None
        else:
            module = getattr(module, part, None)
        if module is None:
            return None
    return module if isinstance(module, nn.Module) else None


def _module_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]


def _homogeneous(modules: nn.ModuleList) -> bool:
    first = type(modules[0])
    return all(type(m) is first for m in modules)


def _candidates(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    lists = [(n, m) for n, m in _module_lists(model) if len(m) >= 1 and _homogeneous(m)]
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    preferred = [(n, m) for n, m in lists if type(m[0]).__name__ in no_split]
    if preferred:
        return preferred
    return [(n, m) for n, m in lists if len(m) >= 2]


def locate_decoder_layers(model: nn.Module, layers_attr: str | None = None) -> DecoderLayers:
    """Return the dotted path and ``ModuleList`` of the decoder blocks of ``model``.

    Raises ``ValueError`` naming the ``layers_attr`` to pass when nothing (or a non-list) is found.
    """
    if layers_attr:
        found = _resolve(model, layers_attr)
        if not isinstance(found, (nn.ModuleList, nn.Sequential)) or len(found) == 0:
            lists = ", ".join(repr(n) for n, _ in _module_lists(model)[:8]) or "none"
            raise ValueError(
                f"layers_attr={layers_attr!r} does not name a non-empty nn.ModuleList in {type(model).__name__}: "
                f"use one of the module lists found ({lists})"
            )
        return DecoderLayers(layers_attr, found)  # type: ignore[arg-type]
    candidates = _candidates(model)
    if not candidates:
        raise ValueError(
            f"could not find the decoder layers of {type(model).__name__}: pass layers_attr='<dotted path to the "
            "nn.ModuleList of decoder blocks>' (e.g. layers_attr='model.layers')"
        )
    # Longest list wins; ties go to the one closest to the root (shortest path).
    name, modules = max(candidates, key=lambda item: (len(item[1]), -item[0].count(".")))
    return DecoderLayers(name, modules)


def find_decoder_layers(model: nn.Module, layers_attr: str | None = None) -> nn.ModuleList:
    """The ``nn.ModuleList`` of decoder blocks of ``model`` (see :func:`locate_decoder_layers`)."""
    return locate_decoder_layers(model, layers_attr).modules


def weight_in_out(module: nn.Module) -> torch.Tensor | None:
    """The module's weight as (out_features, in_features), or None if it is not a linear map.

    Handles ``nn.Linear`` and GPT-2 style ``Conv1D`` (weight stored as (in, out), with ``nf`` outputs).
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    if isinstance(module, nn.Linear):
        return weight
    nf = getattr(module, "nf", None)
    if isinstance(nf, int) and weight.shape[1] == nf and not isinstance(module, nn.Embedding):
        return weight.t()
    return None


def linear_modules(layer: nn.Module) -> list[tuple[str, nn.Module]]:
    """All linear maps (``nn.Linear`` and ``Conv1D``) inside one decoder layer, in module order."""
    return [(name, m) for name, m in layer.named_modules() if weight_in_out(m) is not None]


class Block(NamedTuple):
    """What one draw can pick: a whole decoder layer, or one 2-D weight of a layer (``sampling_granularity``).

    ``layer``: its layer's index; ``name``: the layer index (``"3"``) or the weight's name in the model's layers
    (``"3.self_attn.q_proj.weight"``); ``params``: what trains while it is drawn (all the layer's parameters, or
    the weight); ``matrices``: its 2-D weights (the ``gradient`` strategy measures their gradients).
    """

    layer: int
    name: str
    params: tuple[nn.Parameter, ...]
    matrices: tuple[nn.Parameter, ...]

    @property
    def size(self) -> int:
        """Parameters in the block's 2-D weights."""
        return sum(p.numel() for p in self.matrices)


def _unique(named: Iterable[tuple[str, nn.Parameter]], seen: set[int]) -> list[tuple[str, nn.Parameter]]:
    out = []
    for name, param in named:
        if id(param) not in seen:
            seen.add(id(param))
            out.append((name, param))
    return out


def sampling_blocks(layers: nn.ModuleList, granularity: str = "layer") -> list[Block]:
    """The blocks of ``layers`` in layer order: one per layer (``layer``) or one per 2-D weight (``module``).

    A module block is any 2-D parameter of a layer (the weights of ``nn.Linear``, GPT-2's ``Conv1D``, ...); the
    layer's other parameters (norms, biases) train while any of its weights does (see ``layer_rest``).
    """
    if granularity not in ("layer", "module"):
        raise ValueError(f"sampling_granularity={granularity!r} is unknown: use layer or module")
    blocks, seen = [], set()
    for index, layer in enumerate(layers):
        named = _unique(layer.named_parameters(), seen)
        matrices = [(n, p) for n, p in named if p.dim() == 2]
        if not matrices:
            raise ValueError(f"decoder layer {index} has no 2-D weight: check layers_attr")
        if granularity == "layer":
            blocks.append(Block(index, str(index), tuple(p for _, p in named), tuple(p for _, p in matrices)))
        else:
            blocks.extend(Block(index, f"{index}.{n}", (p,), (p,)) for n, p in matrices)
    return blocks


def layer_rest(layers: nn.ModuleList, blocks: list[Block]) -> list[list[nn.Parameter]]:
    """Per layer, its parameters in no block (empty for layer blocks): they train while any block of the layer does."""
    in_blocks = {id(p) for block in blocks for p in block.params}
    rest: list[list[nn.Parameter]] = []
    seen: set[int] = set()
    for layer in layers:
        rest.append([p for _, p in _unique(layer.named_parameters(), seen) if id(p) not in in_blocks])
    return rest


def set_trainable(layers: Iterable[nn.Module], active: bool) -> None:
    """Set ``requires_grad`` of every parameter of ``layers``; freezing also drops their gradients."""
    for layer in layers:
        for param in layer.parameters():
            param.requires_grad_(active)
            if not active:
                param.grad = None


def _detach_output(module: nn.Module, args: object, output: object) -> object:
    return output.detach() if hasattr(output, "detach") else output


def input_embeddings(model: nn.Module) -> nn.Module | None:
    """``model.get_input_embeddings()`` when the model has one (a module), else None."""
    get_inputs = getattr(model, "get_input_embeddings", None)
    embeddings = get_inputs() if callable(get_inputs) else None
    return embeddings if isinstance(embeddings, nn.Module) else None


def input_gradient_stopped(model: nn.Module) -> bool:
    """Whether :func:`stop_gradient_at_input_embeddings` has cut the input embeddings from autograd."""
    return getattr(input_embeddings(model), "_ows_stop_gradient", None) is not None


def stop_gradient_at_input_embeddings(model: nn.Module, stop: bool = True) -> bool:
    """Make the input-embedding lookup's output a constant for autograd; True when a hook was added.

    With the input embeddings not trained, no gradient needs to flow below the lowest sampled
    layer, so autograd neither stores activations for the frozen layers under it nor runs their
    backward. For a tied input/output matrix this means the matrix trains through its output-head
    role only. ``stop=False`` removes the hook again. Idempotent; models without
    ``get_input_embeddings`` are left alone. Returns whether the hook was added or removed.
    """
    embeddings = input_embeddings(model)
    handle = getattr(embeddings, "_ows_stop_gradient", None)
    if embeddings is None or (handle is not None) == stop:
        return False
    if stop:
        embeddings._ows_stop_gradient = embeddings.register_forward_hook(_detach_output)
    else:
        handle.remove()
        embeddings._ows_stop_gradient = None
    return True


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block; the previous training mode comes back even on errors."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
