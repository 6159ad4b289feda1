"""A delta: the tensors a fine-tune changed, whole and exact (not differences), with what it takes to verify them.

OWS changes only the decoder layers it sampled and the parts outside them that trained; a 7B fine-tune is
13 GB, its delta a fraction. A delta folder holds ``delta.safetensors`` (the changed tensors) and
``delta.json``: the base model's name, a SHA-256 of its weights (every tensor's name, dtype, shape and
bytes, in name order), a SHA-256 of ``delta.safetensors`` itself, the tensors kept, the tensors the run
does not save (tied), the dtype the run saved in, ``alpha`` and the source run. The fields that decide the
merge (base hash, dtype, dropped, alpha) are also in the tensor file's own header, which the file hash
covers: an edited ``delta.json`` is caught. With ``alpha`` other than 1 each changed tensor is
``base + alpha * (tuned - base)`` (weight-space interpolation: less of the fine-tune, or more).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..jsonio import write_json
from .folders import MODEL_FILES, check_no_links, copy_model_files, staged
from .weights import DELTA_FILE, FLOAT_DTYPES, Weights, file_sha256, interpolate, save_tensors, weights_hash

logger = logging.getLogger(__name__)
DELTA_INFO, DELTA_FORMAT = "delta.json", "ows-delta/2"
HEADER_KEY = "ows_delta"  # the merge-deciding fields, in the tensor file's header
DECIDING = ("base_sha256", "dtype", "dropped", "alpha")
ALPHA_RANGE = "a number in (0, 2]: 1 is the fine-tune itself, 0.5 half of its change, 2 twice it"


def check_alpha(alpha: Any, flag: str = "--alpha") -> float:
    """``alpha`` as a float in (0, 2], else a one-line ``ValueError``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 2:
        raise ValueError(f"{flag} {alpha!r} is invalid: give {ALPHA_RANGE}")
    return float(alpha)


@dataclass
class Delta:
    """What changed between a base model and a fine-tuned one; ``dtype``: the run's, when it differs from the base's."""

    changed: dict[str, torch.Tensor]
    unchanged: int
    dtype: str | None = None
    dropped: list[str] = field(default_factory=list)  # tensors of the base that the run does not save (tied)
    alpha: float = 1.0


def _same(reference: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` equals ``reference`` cast to its dtype, by a cast that loses nothing."""
    if reference.dtype == tensor.dtype:
        return torch.equal(reference, tensor)
    cast = reference.to(tensor.dtype)
    return torch.equal(cast, tensor) and torch.equal(cast.to(reference.dtype), reference)


def compute_delta(base: str | Path, tuned: str | Path, alpha: float = 1.0) -> Delta:
    """The tensors of ``tuned`` that differ from ``base`` (same names and shapes required); with ``alpha``, each
    changed tensor is ``base + alpha * (tuned - base)``."""
    alpha = check_alpha(alpha)
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
            changed[name] = interpolate(reference, tensor, alpha)
    if len(dtypes) > 1:
        raise ValueError(f"{str(tuned)!r} holds tensors in several dtypes ({', '.join(sorted(dtypes))}) other than the "
                         "base's: save the run in one dtype")
    dropped = [name for name in base_weights.names if name not in tuned_weights]
    return Delta(changed, unchanged, next(iter(dtypes), None), dropped, alpha)


def write_delta(delta: Delta, base: str | Path, base_name: str, out: str | Path, source: str,
                replace: bool = False) -> Path:
    """Write ``delta.safetensors``, ``delta.json`` and the run's config and tokenizer into ``out`` (staged: a
    failure leaves nothing); ``replace``: an existing ``out`` is replaced once the new delta is complete."""
    run = Path(source)
    check_no_links(run, MODEL_FILES, "RUN")
    deciding = {"base_sha256": weights_hash(base), "dtype": delta.dtype, "dropped": delta.dropped,
                "alpha": delta.alpha}
    folder = Path(out)
    with staged(folder, replace=replace) as staging:
        save_tensors(delta.changed, staging / DELTA_FILE, {HEADER_KEY: json.dumps(deciding, sort_keys=True)})
        info = {"format": DELTA_FORMAT, "base_model": base_name, **deciding, "source_run": source,
                "delta_sha256": file_sha256(staging / DELTA_FILE), "tensors": sorted(delta.changed),
                "changed_params": sum(v.numel() for v in delta.changed.values()), "unchanged_tensors": delta.unchanged}
        write_json(info, staging / DELTA_INFO)
        copy_model_files([(run, False)], staging)
    logger.info("delta: %d changed tensors (%d parameters), %d unchanged, alpha %g, in %s", len(delta.changed),
                info["changed_params"], delta.unchanged, delta.alpha, folder)
    return folder


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} {what}: export the delta again with `ows export delta RUN OUT`")


def read_delta_info(delta: str | Path) -> dict[str, Any]:
    """``delta.json`` of a delta folder, its fields checked; a folder that is not one is an error naming it and the
    fix. The tensor file is not read here (see :func:`ows.export.merge.verify_delta`)."""
    folder = Path(delta)
    path = folder / DELTA_INFO
    check_no_links(folder, (DELTA_INFO, DELTA_FILE), "DELTA")
    if not path.is_file() or not (folder / DELTA_FILE).is_file():
        raise FileNotFoundError(f"DELTA {str(delta)!r} is not an ows delta folder ({DELTA_INFO} and {DELTA_FILE}): "
                                "make one with `ows export delta RUN OUT`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise _fail(path, "is not valid JSON") from None
    found = info.get("format") if isinstance(info, dict) else None
    if found == "ows-delta/1":
        raise _fail(path, "was written by an older ows, without a SHA-256 of its tensor file (it cannot be verified)")
    if found != DELTA_FORMAT:
        raise _fail(path, f"is not an ows delta (format {found!r}, expected {DELTA_FORMAT!r})")
    _check_fields(info, path)
    return info


def _check_fields(info: dict[str, Any], path: Path) -> None:
    """Every field the merge reads is there with its type (one line naming the first that is not)."""
    def is_names(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(n, str) for n in value)

    checks = {"base_sha256": lambda v: isinstance(v, str) and len(v) == 64,
              "delta_sha256": lambda v: isinstance(v, str) and len(v) == 64,
              "base_model": lambda v: isinstance(v, str), "tensors": is_names, "dropped": is_names,
              "dtype": lambda v: v is None or v in FLOAT_DTYPES,
              "alpha": lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v <= 2}
    for key, ok in checks.items():
        if key not in info:
            raise _fail(path, f"has no {key!r}")
        if not ok(info[key]):
            raise _fail(path, f"has an invalid {key!r} ({str(info[key])[:60]!r})")
