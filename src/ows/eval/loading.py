"""Load a model for evaluation: checks that fail fast (folder, tokenizer), device and dtype."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_for_eval(name: str) -> str:
    """The model's folder or hub id; a local folder must hold a config.json and a tokenizer."""
    from ..models import resolve_model_path

    resolved = resolve_model_path(name)
    folder = Path(resolved)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"model={name!r} is a folder without a tokenizer (none of {', '.join(TOKENIZER_FILES)}): save it "
            "next to the weights with tokenizer.save_pretrained(folder)"
        )
    return resolved


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto`` -> bfloat16 on a GPU that supports it, else float32; other names map to torch dtypes."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is invalid: use one of {', '.join(DTYPES)}")
    if dtype == "auto":
        gpu_bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return getattr(torch, dtype)


def load_for_eval(name: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any, str]:
    """``(model, tokenizer, resolved path)`` in eval mode on ``device``; pad token set to eos when missing."""
    from ..models import load_model_and_tokenizer

    resolved = resolve_for_eval(name)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    logger.info("loading %s (%s, %s)", resolved, device, str(torch_dtype).replace("torch.", ""))
    kwargs = {"device_map": device} if device != "cpu" else {}
    model, tokenizer = load_model_and_tokenizer(resolved, dtype=torch_dtype, **kwargs)
    return model.eval(), tokenizer, resolved
