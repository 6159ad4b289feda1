"""The tensors of a model folder read one at a time, their hashes, and safetensors files written with the usual mode."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator

import torch

from ..jsonio import give_usual_mode

DELTA_FILE = "delta.safetensors"
# dtypes a delta or a merged model may be written in, by the name delta.json records
FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                "float64": torch.float64}
# safetensors' dtype codes: bytes per element and the torch dtype
_DTYPES = {"F64": (8, torch.float64), "F32": (4, torch.float32), "F16": (2, torch.float16),
           "BF16": (2, torch.bfloat16), "I64": (8, torch.int64), "I32": (4, torch.int32), "I16": (2, torch.int16),
           "I8": (1, torch.int8), "U8": (1, torch.uint8), "BOOL": (1, torch.bool),
           "F8_E4M3": (1, torch.float8_e4m3fn), "F8_E5M2": (1, torch.float8_e5m2)}


def _open(path: Path) -> Any:
    """A safetensors handle; a damaged file is a ``ValueError`` naming it."""
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # SafetensorError for a truncated or foreign file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ValueError(f"{str(path)!r} cannot be read as safetensors ({first}): the file is damaged or not "
                         "safetensors; write it again") from None


class Weights:
    """The tensors of a model folder's ``*.safetensors`` files (or of the ``files`` given), by name, read one at a
    time (memory-mapped)."""

    def __init__(self, folder: str | Path, files: list[Path] | None = None) -> None:
        files = files if files is not None else [f for f in sorted(Path(folder).glob("*.safetensors"))
                                                 if f.name != DELTA_FILE and not f.name.startswith("adapter_")]
        if not files:
            raise FileNotFoundError(f"{str(folder)!r} holds no *.safetensors weights: give a Hugging Face model "
                                    "folder saved with safetensors")
        self.folder = Path(folder)
        self._handles: dict[str, Any] = {}
        self.metadata: dict[str, str] = {}
        for path in files:
            handle = _open(path)
            self.metadata.update(handle.metadata() or {})
            self._handles.update({name: handle for name in handle.keys()})
        self.names = sorted(self._handles)

    def __contains__(self, name: str) -> bool:
        return name in self._handles

    def get(self, name: str) -> torch.Tensor:
        """Tensor ``name``, read from its file."""
        return self._handles[name].get_tensor(name)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor ``name`` without reading it."""
        return tuple(self._handles[name].get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        """dtype of tensor ``name`` without reading it."""
        return _DTYPES[self._handles[name].get_slice(name).get_dtype()][1]

    def nbytes(self, name: str) -> int:
        """Bytes of tensor ``name`` without reading it."""
        count = 1
        for size in self.shape(name):
            count *= size
        return count * _DTYPES[self._handles[name].get_slice(name).get_dtype()][0]

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` in name order."""
        for name in self.names:
            yield name, self.get(name)


def weights_hash(folder: str | Path) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: the identity of a model's weights."""
    digest = hashlib.sha256()
    for name, tensor in Weights(folder).items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file with the usual mode under the umask (safetensors itself leaves it 0600)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt", **(metadata or {})})
    give_usual_mode(path)


def interpolate(base: torch.Tensor, tuned: torch.Tensor, alpha: float) -> torch.Tensor:
    """``base + alpha * (tuned - base)`` in ``tuned``'s dtype (computed in float32, float64 for float64 tensors);
    ``alpha`` 1 returns ``tuned`` itself, and a tensor that is not floating point is ``tuned`` whatever ``alpha``."""
    if alpha == 1 or not tuned.is_floating_point():
        return tuned
    wide = torch.float64 if tuned.dtype == torch.float64 else torch.float32
    start = base.to(tuned.dtype).to(wide)
    return (start + alpha * (tuned.to(wide) - start)).to(tuned.dtype)
