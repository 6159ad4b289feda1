"""The fine-tuned model again from its base and a delta: every fact of the delta verified before a byte is written.

:func:`verify_delta` checks, in this order: ``delta.json`` (format, every field and its type), no linked
file in the delta folder, the SHA-256 of ``delta.safetensors`` against the one recorded, the merge-deciding
fields of the file's header against ``delta.json``, the tensor names against the list, the base's weights
hash, and each tensor's name, shape and dtype against the base. :func:`merge_delta` then takes every other
tensor from the base (cast to the run's dtype when the run saved another one) and writes a normal Hugging Face
folder, tensor for tensor and bit for bit the fine-tuned model (``alpha`` 1), through a staging folder.
Tensors are read one at a time from the memory-mapped files: a 7B model never sits in memory twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..jsonio import write_json
from .delta import DECIDING, DELTA_INFO, HEADER_KEY, check_alpha, read_delta_info
from .folders import MODEL_FILES, check_new_folder, check_no_links, copy_model_files, staged
from .weights import DELTA_FILE, FLOAT_DTYPES, Weights, file_sha256, interpolate, save_tensors, weights_hash

logger = logging.getLogger(__name__)
SHARD_BYTES = 4 * 2**30  # merged models are written in safetensors shards of at most this size


@dataclass
class VerifiedDelta:
    """A delta whose every fact was checked against its own hash and against the base."""

    info: dict[str, Any]
    tensors: Weights
    base: Weights
    dtype: torch.dtype | None


def check_base(base: str | Path, info: dict[str, Any]) -> None:
    """A ``ValueError`` unless ``base``'s weights hash to the delta's recorded base."""
    actual = weights_hash(base)
    if actual != info["base_sha256"]:
        raise ValueError(f"BASE {str(base)!r} is not the model the delta was made from (its weights' SHA-256 "
                         f"{actual[:12]}... is not {info['base_sha256'][:12]}... of {info['base_model']!r}): give "
                         "that base model")


def _refuse(delta: Path, what: str) -> ValueError:
    return ValueError(f"DELTA {str(delta)!r}: {what}: export the delta again with `ows export delta RUN OUT`")


def _check_own_hash(folder: Path, info: dict[str, Any]) -> Weights:
    """The delta's tensors, once their file matches its recorded hash and its header matches ``delta.json``."""
    if file_sha256(folder / DELTA_FILE) != info["delta_sha256"]:
        raise _refuse(folder, f"{DELTA_FILE} does not match the SHA-256 recorded in {DELTA_INFO} (the file was "
                              "changed or damaged)")
    tensors = Weights(folder, [folder / DELTA_FILE])
    try:
        header = json.loads(tensors.metadata.get(HEADER_KEY, ""))
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise _refuse(folder, f"{DELTA_FILE} has no ows header")
    for key in DECIDING:
        if header.get(key) != info[key]:
            raise _refuse(folder, f"{DELTA_INFO} says {key}={str(info[key])[:60]} but {DELTA_FILE} was written with "
                                  f"{str(header.get(key))[:60]} ({DELTA_INFO} was edited)")
    listed = set(info["tensors"])
    if set(tensors.names) != listed or len(info["tensors"]) != len(listed):
        missing, extra = sorted(listed - set(tensors.names)), sorted(set(tensors.names) - listed)
        what = f"{missing[0]!r} is listed but not in {DELTA_FILE}" if missing else \
            f"{extra[0]!r} is in {DELTA_FILE} but not listed" if extra else "a tensor is listed twice"
        raise _refuse(folder, f"tensor {what} in {DELTA_INFO}")
    return tensors


def _check_against_base(folder: Path, tensors: Weights, base: Weights, info: dict[str, Any]) -> None:
    """Every delta tensor is a tensor of the base, of its shape, in the run's dtype; what is dropped is the base's."""
    run_dtype = FLOAT_DTYPES[info["dtype"]] if info["dtype"] else None
    for name in tensors.names:
        if name not in base:
            raise _refuse(folder, f"tensor {name!r} is not a tensor of the base model")
        if tensors.shape(name) != base.shape(name):
            raise _refuse(folder, f"tensor {name!r} has shape {tensors.shape(name)}, the base's is {base.shape(name)}")
        expected = run_dtype or base.dtype(name)
        if tensors.dtype(name) != expected:
            found, wanted = (str(d).removeprefix("torch.") for d in (tensors.dtype(name), expected))
            raise _refuse(folder, f"tensor {name!r} is {found}, the run saved {wanted}")
    dropped = set(info["dropped"])
    if not dropped <= set(base.names) or dropped & set(tensors.names) or len(dropped) >= len(base.names):
        raise _refuse(folder, "its 'dropped' list is not a few tensors of the base that the delta does not hold")


def verify_delta(base: str | Path, delta: str | Path) -> VerifiedDelta:
    """Check ``delta`` and its fit to ``base`` (see the module's docstring); a ``ValueError`` names the first fault."""
    folder = Path(delta)
    info = read_delta_info(folder)
    check_no_links(folder, MODEL_FILES, "DELTA")
    tensors = _check_own_hash(folder, info)
    check_base(base, info)
    base_weights = Weights(base)
    _check_against_base(folder, tensors, base_weights, info)
    return VerifiedDelta(info, tensors, base_weights, FLOAT_DTYPES[info["dtype"]] if info["dtype"] else None)


def _shards(weights: Weights, limit: int, skip: set[str]) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for name in (n for n in weights.names if n not in skip):
        nbytes = weights.nbytes(name)
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _write_shards(delta: VerifiedDelta, folder: Path, shard_bytes: int, alpha: float) -> None:
    shards = _shards(delta.base, shard_bytes, set(delta.info["dropped"]))
    index: dict[str, str] = {}
    total = 0
    for number, names in enumerate(shards, 1):
        file = "model.safetensors" if len(shards) == 1 else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        part = {}
        for name in names:
            tensor = delta.base.get(name)
            tensor = tensor.to(delta.dtype) if delta.dtype is not None else tensor
            if name in delta.tensors:
                tensor = interpolate(tensor, delta.tensors.get(name), alpha)
            part[name] = tensor
            index[name] = file
            total += tensor.numel() * tensor.element_size()
        save_tensors(part, folder / file)
    if len(shards) > 1:
        write_json({"metadata": {"total_size": total}, "weight_map": index}, folder / "model.safetensors.index.json")


def merge_delta(base: str | Path, delta: str | Path, out: str | Path, shard_bytes: int = SHARD_BYTES,
                alpha: float = 1.0) -> Path:
    """The fine-tuned model again: ``base``'s tensors with the delta's in their place, in the run's dtype.

    ``alpha`` (0, 2]: each changed tensor becomes ``base + alpha * (delta's - base)``; 1 is the delta's model bit for
    bit. ``out`` must be new or empty; everything is verified before it is written, through a staging folder."""
    alpha = check_alpha(alpha)
    verified = verify_delta(base, delta)
    folder = check_new_folder(out)
    with staged(folder) as staging:
        _write_shards(verified, staging, shard_bytes, alpha)
        copy_model_files([(Path(delta), False), (Path(base), True)], staging)  # the run's config first
    logger.info("merged %s into %s (alpha %g): %s", delta, base, alpha, folder)
    return folder
