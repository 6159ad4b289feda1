"""Facts about a model read from its config alone (no weights, no torch): built-in shapes, the config of a
name / file / folder / hub id, the decoder-layer count and the position limit.

The one reader of model facts: ``ows memory`` estimates from these dicts, ``ows train`` and ``ows analyze``
check gamma and sequence lengths against them, the estimator's shapes come from them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import UsageError

logger = logging.getLogger(__name__)

# Published config.json values, so that common models need no download (and the demo model no conversion).
def _llama(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, **more: Any) -> dict[str, Any]:
    return dict(model_type="llama", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=False,
                torch_dtype="bfloat16", **more)


# Published config.json values (shapes only, no weights), so that common models need no download.
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(_llama(576, 1536, 30, 9, 3, 49152, head_dim=64, max_position_embeddings=8192),
                         tie_word_embeddings=True),
    "llama-2-7b": dict(_llama(4096, 11008, 32, 32, 32, 32000, max_position_embeddings=4096), torch_dtype="float16"),
    "llama-3.1-8b": _llama(4096, 14336, 32, 32, 8, 128256, head_dim=128, max_position_embeddings=131072),
    "llama-3.1-70b": _llama(8192, 28672, 80, 64, 8, 128256, head_dim=128, max_position_embeddings=131072),
    "mistral-7b": dict(_llama(4096, 14336, 32, 32, 8, 32000, max_position_embeddings=32768), model_type="mistral"),
    "qwen2.5-7b": dict(_llama(3584, 18944, 28, 28, 4, 152064, max_position_embeddings=32768), model_type="qwen2"),
    "gemma-2-9b": dict(_llama(3584, 14336, 42, 16, 8, 256000, head_dim=256, max_position_embeddings=8192),
                       model_type="gemma2", tie_word_embeddings=True),
    "gemma-3-1b": dict(_llama(1152, 6912, 26, 4, 1, 262144, head_dim=256, max_position_embeddings=32768),
                       model_type="gemma3_text", tie_word_embeddings=True),
    "gemma-3-12b": dict(_llama(3840, 15360, 48, 16, 8, 262208, head_dim=256, max_position_embeddings=131072),
                        model_type="gemma3_text", tie_word_embeddings=True),
}
PRESETS["SmolLM2-135M-Instruct"] = PRESETS["smollm2-135m"]


def _read_json(path: Path, model: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"model {model!r}: cannot read {path} as JSON ({err}): give a valid config.json") from None
    if not isinstance(data, dict):
        raise UsageError(f"model {model!r}: {path} holds no JSON object: give a Hugging Face config.json")
    return data


def cached_hub_config(model: str) -> Path | None:
    """The config.json of hub id ``model`` in the local Hugging Face cache, else None (also for a malformed id,
    which the download that follows then reports)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except ValueError:  # huggingface_hub's HFValidationError: not a valid repo id
        return None
    return Path(cached) if isinstance(cached, str) else None


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached now (offline mode, or its host name does not resolve), else None.

    Found in about a second, where a download would first retry for about 30 s and print a warning per retry.
    A name lookup that takes longer than ``timeout`` seconds counts as reachable (the download then decides)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"  # the environment too: huggingface_hub reads it once, at import
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    failed: list[str] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
        except OSError as err:
            failed.append(str(err))

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    return f"{host} cannot be reached: {failed[0]}" if failed else None


_OFFLINE_CHECKED: set[str] = set()


def use_cache_when_offline(model: str) -> bool:
    """True, and offline mode for the rest of this process and its children (``HF_HUB_OFFLINE``), when hub id
    ``model`` is in the local Hugging Face cache and the Hub cannot be reached now: the loads then read the cache
    at once, where each file would first go through the Hub client's retries (minutes for a model). Checked once
    per id; a host that resolves but does not answer is not detected (the client's retries then run)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or model in _OFFLINE_CHECKED or cached_hub_config(model) is None:
        return bool(constants.HF_HUB_OFFLINE)
    _OFFLINE_CHECKED.add(model)
    problem = hub_unreachable()
    if problem is None:
        return False
    constants.HF_HUB_OFFLINE = True  # huggingface_hub and transformers read it at each call
    os.environ["HF_HUB_OFFLINE"] = "1"  # for child processes (DDP workers, lm-eval)
    logger.warning("%s: loading %s from the local Hugging Face cache (offline mode for this run)", problem, model)
    return True


def _hub_config(model: str) -> dict[str, Any]:
    """A hub id's config: from the local Hugging Face cache, else downloaded (unless offline)."""
    offline_fix = "pass a local model folder, a config.json path, or a built-in name (" + ", ".join(
        n for n in PRESETS if n.islower()) + ")"
    try:
        cached = cached_hub_config(model)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise UsageError(f"model {model!r} is not a local path and huggingface_hub is missing: {offline_fix}") from None
    if cached is not None:
        return _read_json(cached, model)
    problem = hub_unreachable()
    if problem is not None:
        raise UsageError(f"model {model!r} is not a local path and its config is not in the Hugging Face cache "
                         f"({problem}): {offline_fix}")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model).to_dict()
    except (OSError, ValueError) as err:
        logger.debug("AutoConfig failed", exc_info=True)
        raise UsageError(f"model {model!r} is not a local path and its config could not be fetched "
                         f"({str(err).splitlines()[0]}): {offline_fix}") from None


def read_model_config(model: str) -> dict[str, Any]:
    """The config dict of ``model``: a built-in name, a config.json, a model folder or a hub id."""
    if model in PRESETS:
        return dict(PRESETS[model])
    path = Path(model).expanduser()
    if path.is_file():
        return _read_json(path, model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model {model!r} is a folder without config.json: give a Hugging Face model folder "
                             "or a config.json path")
        return _read_json(path / "config.json", model)
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith(".json"):
        raise UsageError(f"model {model!r} does not exist: check the path")
    return _hub_config(model)


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config dict (``text_config`` of a multimodal model, else the dict)."""
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) else config


def num_layers(config: dict[str, Any]) -> int | None:
    """Decoder layers of a config dict (``num_hidden_layers``, ``n_layer`` or ``num_layers``); None if absent."""
    text = text_config(config)
    value = next((text[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if k in text), None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def position_limit(config: dict[str, Any]) -> int | None:
    """The positions the model takes (``max_position_embeddings`` or ``n_positions``); None if absent."""
    text = text_config(config)
    value = next((text[k] for k in ("max_position_embeddings", "n_positions") if k in text), None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
