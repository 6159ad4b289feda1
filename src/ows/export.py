"""Compact outputs of a fine-tune: the tensors that changed (a delta) and the full model again.

OWS changes only the decoder layers it sampled and the parts outside them that trained; a 7B
fine-tune is 13 GB, its delta a fraction. A delta folder holds ``delta.safetensors`` (the changed
tensors, whole and exact, not differences) and ``delta.json``: the base model's name, a SHA-256 of its
weights (every tensor's name, dtype, shape and bytes, in name order), the tensors kept, the dtype the
run saved in and the source run. :func:`merge_delta` checks the hash, takes every other tensor from
the base (cast to the run's dtype when the run saved another one: only casts that lose nothing count
as unchanged) and writes a normal Hugging Face folder equal, tensor for tensor and bit for bit, to the
fine-tuned model. Tensors are read one at a time from the memory-mapped files: a 7B model never sits
in memory twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from .jsonio import write_json

logger = logging.getLogger(__name__)
DELTA_FILE, DELTA_INFO, DELTA_FORMAT = "delta.safetensors", "delta.json", "ows-delta/1"
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
               "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "added_tokens.json")
SHARD_BYTES = 4 * 2**30  # merged models are written in safetensors shards of at most this size


class Weights:
    """The tensors of a model folder's ``*.safetensors`` files (or of the ``files`` given), by name, read one at a
    time (memory-mapped)."""

    def __init__(self, folder: str | Path, files: list[Path] | None = None) -> None:
        from safetensors import safe_open

        files = files if files is not None else [f for f in sorted(Path(folder).glob("*.safetensors"))
                                                 if f.name != DELTA_FILE and not f.name.startswith("adapter_")]
        if not files:
            raise FileNotFoundError(f"{str(folder)!r} holds no *.safetensors weights: give a Hugging Face model "
                                    "folder saved with safetensors")
        self.folder = Path(folder)
        self._handles: dict[str, Any] = {}
        for path in files:
            handle = safe_open(str(path), framework="pt")
            self._handles.update({name: handle for name in handle.keys()})
        self.names = sorted(self._handles)

    def __contains__(self, name: str) -> bool:
        return name in self._handles

    def get(self, name: str) -> torch.Tensor:
        return self._handles[name].get_tensor(name)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor ``name`` without reading it."""
        return tuple(self._handles[name].get_slice(name).get_shape())

    def nbytes(self, name: str) -> int:
        """Bytes of tensor ``name`` without reading it."""
        count = 1
        for size in self.shape(name):
            count *= size
        return count * _DTYPE_BYTES[self._handles[name].get_slice(name).get_dtype()]

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.names:
            yield name, self.get(name)


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


def weights_hash(folder: str | Path) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: the identity of a model's weights."""
    digest = hashlib.sha256()
    for name, tensor in Weights(folder).items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Delta:
    """What changed between a base model and a fine-tuned one; ``dtype``: the run's, when it differs from the base's."""

    changed: dict[str, torch.Tensor]
    unchanged: int
    dtype: str | None = None
    dropped: list[str] = field(default_factory=list)  # tensors of the base that the run does not save (tied)


def _same(reference: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` equals ``reference`` cast to its dtype, by a cast that loses nothing."""
    if reference.dtype == tensor.dtype:
        return torch.equal(reference, tensor)
    cast = reference.to(tensor.dtype)
    return torch.equal(cast, tensor) and torch.equal(cast.to(reference.dtype), reference)


def compute_delta(base: str | Path, tuned: str | Path) -> Delta:
    """The tensors of ``tuned`` that differ from ``base`` (same names and shapes required)."""
    base_weights, tuned_weights = Weights(base), Weights(tuned)
    changed, unchanged, dtypes = {}, 0, set()
    for name, tensor in tuned_weights.items():
        if name not in base_weights:
            raise ValueError(f"{str(tuned)!r} is not a fine-tune of {str(base)!r}: it has tensor {name!r} that the "
                             "base lacks: export the delta against the model the run started from")
        reference = base_weights.get(name)
        if reference.shape != tensor.shape:
            raise ValueError(f"{str(tuned)!r} is not a fine-tune of {str(base)!r}: tensor {name!r} is "
                             f"{tuple(tensor.shape)} against {tuple(reference.shape)}: export the delta against the "
                             "model the run started from")
        if reference.dtype != tensor.dtype:
            dtypes.add(str(tensor.dtype).removeprefix("torch."))
        if _same(reference, tensor):
            unchanged += 1
        else:
            changed[name] = tensor
    if len(dtypes) > 1:
        raise ValueError(f"{str(tuned)!r} holds tensors in several dtypes ({', '.join(sorted(dtypes))}) other than the "
                         "base's: save the run in one dtype")
    dropped = [name for name in base_weights.names if name not in tuned_weights]
    return Delta(changed, unchanged, next(iter(dtypes), None), dropped)


def write_delta(delta: Delta, base: str | Path, base_name: str, out: str | Path, source: str) -> Path:
    """Write ``delta.safetensors`` and ``delta.json`` (with the base's identity) into ``out``."""
    from safetensors.torch import save_file

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in delta.changed.items()}, str(folder / DELTA_FILE),
              metadata={"format": "pt"})
    info = {"format": DELTA_FORMAT, "base_model": base_name, "base_sha256": weights_hash(base), "source_run": source,
            "dtype": delta.dtype, "tensors": sorted(delta.changed), "dropped": delta.dropped,
            "changed_params": sum(v.numel() for v in delta.changed.values()), "unchanged_tensors": delta.unchanged}
    write_json(info, folder / DELTA_INFO)
    for name in MODEL_FILES:  # the run's config (its dtype) and tokenizer, for the merged folder
        source_file = Path(source) / name
        if source_file.is_file():
            shutil.copy2(source_file, folder / name)
    logger.info("delta: %d changed tensors (%d parameters), %d unchanged, in %s", len(delta.changed),
                info["changed_params"], delta.unchanged, folder)
    return folder


def read_delta_info(delta: str | Path) -> dict[str, Any]:
    """``delta.json`` of a delta folder; a folder that is not one is an error naming it and the fix."""
    path = Path(delta) / DELTA_INFO
    if not path.is_file() or not (Path(delta) / DELTA_FILE).is_file():
        raise FileNotFoundError(f"DELTA {str(delta)!r} is not an ows delta folder ({DELTA_INFO} and {DELTA_FILE}): "
                                "make one with `ows export delta RUN OUT`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ValueError(f"{path} is not valid JSON: export the delta again") from None
    if not isinstance(info, dict) or info.get("format") != DELTA_FORMAT:
        raise ValueError(f"{path} is not an ows delta (format {info.get('format') if isinstance(info, dict) else None!r}"
                         f", expected {DELTA_FORMAT!r}): export the delta again")
    return info


def check_base(base: str | Path, info: dict[str, Any]) -> None:
    """A ``ValueError`` unless ``base``'s weights hash to the delta's recorded base."""
    actual = weights_hash(base)
    if actual != info["base_sha256"]:
        raise ValueError(f"BASE {str(base)!r} is not the model the delta was made from (its weights' SHA-256 "
                         f"{actual[:12]}... is not {info['base_sha256'][:12]}... of {info['base_model']!r}): give "
                         "that base model")


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


def merge_delta(base: str | Path, delta: str | Path, out: str | Path, shard_bytes: int = SHARD_BYTES) -> Path:
    """The fine-tuned model again: ``base``'s tensors with the delta's in their place, in the run's dtype."""
    from safetensors.torch import save_file

    info = read_delta_info(delta)
    check_base(base, info)
    base_weights, changed = Weights(base), Weights(delta, [Path(delta) / DELTA_FILE])
    dtype = getattr(torch, info["dtype"]) if info.get("dtype") else None
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    shards = _shards(base_weights, shard_bytes, set(info.get("dropped", ())))
    index: dict[str, str] = {}
    total = 0
    for number, names in enumerate(shards, 1):
        file = "model.safetensors" if len(shards) == 1 else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        part = {}
        for name in names:
            tensor = changed.get(name) if name in changed else base_weights.get(name)
            part[name] = (tensor.to(dtype) if dtype is not None else tensor).contiguous()
            index[name] = file
            total += part[name].numel() * part[name].element_size()
        save_file(part, str(folder / file), metadata={"format": "pt"})
    if len(shards) > 1:
        write_json({"metadata": {"total_size": total}, "weight_map": index}, folder / "model.safetensors.index.json")
    for name in MODEL_FILES:  # the run's config first (saved with the delta), else the base's
        for source in (Path(delta) / name, Path(base) / name):
            if source.is_file():
                shutil.copy2(source, folder / name)
                break
    logger.info("merged %s into %s: %s", delta, base, folder)
    return folder
