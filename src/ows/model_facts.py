"""Facts about a model read from its config alone (no weights, no torch): built-in shapes, the config of a
name / file / folder / hub id, the decoder-layer count and the position limit.

The one reader of model facts: ``ows memory`` estimates from these dicts, ``ows train`` and ``ows analyze``
check gamma and sequence lengths against them, the estimator's shapes come from them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .errors import UsageError

logger = logging.getLogger(__name__)

# Published config.json values, so that common models need no download (and the demo model no conversion).
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                         tie_word_embeddings=True),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False),
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


def _hub_config(model: str) -> dict[str, Any]:
    """A hub id's config: from the local Hugging Face cache, else downloaded (unless offline)."""
    offline_fix = "pass a local model folder, a config.json path, or a built-in name (" + ", ".join(
        n for n in PRESETS if n.islower()) + ")"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise UsageError(f"model {model!r} is not a local path and huggingface_hub is missing: {offline_fix}") from None
    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        return _read_json(Path(cached), model)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise UsageError(f"model {model!r} is not a local path and its config is not in the Hugging Face cache "
                         f"(offline): {offline_fix}")
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
