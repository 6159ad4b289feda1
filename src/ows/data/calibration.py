"""Calibration text for outlier profiling: built-in English news, user files, fixed-length token windows.

The windows follow OWL / SparseGPT's C4 sampling: ``num_samples`` windows of exactly ``seq_len``
tokens with random starts, drawn from one seeded generator so the same seed gives the same windows.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..jsonio import iter_jsonl

logger = logging.getLogger(__name__)

BUILTIN_FILE = "lee_background.cor"
BUILTIN_INSTALL = "pip install gensim==4.4.0"
TEXT_SUFFIXES = (".txt", ".jsonl", ".json")


def builtin_calibration_path() -> Path:
    """Path of gensim's ``lee_background.cor`` (300 English news articles), found without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the built-in calibration text needs the package gensim: {BUILTIN_INSTALL} "
            "(or give a .txt/.jsonl/.json file)"
        )
    path = Path(spec.origin).parent / "test" / "test_data" / BUILTIN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed gensim: {BUILTIN_INSTALL}")
    return path


def builtin_installed() -> bool:
    """Whether the built-in calibration text (gensim's news corpus) is installed."""
    try:
        builtin_calibration_path()
    except FileNotFoundError:
        return False
    return True


def builtin_calibration_texts() -> list[str]:
    """English news articles from gensim's test corpus, one article per line of the file."""
    path = builtin_calibration_path()
    lines = _read_utf8(path).splitlines()
    texts = [line.strip() for line in lines if line.strip()]
    logger.debug("built-in calibration text: %d articles from %s", len(texts), path)
    return texts


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{str(path)!r} is not UTF-8 text (byte {err.start}): convert it to UTF-8 first"
        ) from None


def _split_txt(text: str) -> list[str]:
    """Paragraphs separated by blank lines, or one text per line when there are no blank lines."""
    if re.search(r"\n[ \t]*\r?\n", text.strip()):
        parts = re.split(r"\r?\n[ \t]*\r?\n", text)
    else:
        parts = text.splitlines()
    return [part.strip() for part in parts if part.strip()]


def _text_field(item: Any, where: str) -> str:
    """The ``text`` field of one JSON record (a plain string record is accepted too)."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict) or "text" not in item:
        raise ValueError(f"{where}: no 'text' field: every record needs a string field 'text'")
    value = item["text"]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field 'text' is {type(value).__name__}, not a string")
    return value


def _split_jsonl(text: str, name: str) -> list[str]:
    return [_text_field(item, f"{name} line {number}") for number, item in iter_jsonl(text.splitlines(), name)]


def _split_json(text: str, name: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _split_jsonl(text, name)  # a .json file holding JSON lines
    if isinstance(data, list):
        return [_text_field(item, f"{name} item {index}") for index, item in enumerate(data)]
    return [_text_field(data, name)]


def read_texts(path: str | Path) -> list[str]:
    """Texts of a calibration file: ``.txt`` (paragraphs or lines), ``.jsonl`` / ``.json`` (field ``text``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {str(path)!r} does not exist: check the path")
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(f"calibration file {str(path)!r} has an unknown type: use {', '.join(TEXT_SUFFIXES)}")
    text = _read_utf8(path)
    if suffix == ".txt":
        texts = _split_txt(text)
    elif suffix == ".jsonl":
        texts = _split_jsonl(text, str(path))
    else:
        texts = _split_json(text, str(path))
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"calibration file {str(path)!r} contains no text")
    return texts


class TextTooShortError(ValueError):
    """The calibration text has fewer tokens than one window; ``num_tokens`` says how many it has."""

    def __init__(self, message: str, num_tokens: int) -> None:
        super().__init__(message)
        self.num_tokens = num_tokens


def _check_positive(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: must be an integer >= {minimum}")


def token_stream(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token ids of all ``texts`` concatenated, with the tokenizer's eos id between consecutive texts."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for index, piece in enumerate(encoded):
        if index and eos is not None:
            ids.append(int(eos))
        ids.extend(int(t) for t in piece)
    return ids


def calibration_batches(
    tokenizer: Any, texts: list[str], num_samples: int, seq_len: int, batch_size: int = 4, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """``num_samples`` windows of exactly ``seq_len`` tokens from the concatenated texts, in batches.

    Window starts are uniform over the stream and drawn by a CPU generator seeded with ``seed``
    (windows may overlap when the text is short). Each batch is a dict of LongTensors
    ``input_ids`` and ``attention_mask`` (all ones) of shape (≤ batch_size, seq_len).
    """
    _check_positive("num_samples", num_samples, 1)
    _check_positive("seq_len", seq_len, 2)
    _check_positive("batch_size", batch_size, 1)
    ids = token_stream(tokenizer, texts)
    if len(ids) < seq_len:
        raise TextTooShortError(
            f"calibration text has {len(ids)} tokens, fewer than seq_len={seq_len} needed for one of the "
            f"num_samples={num_samples} windows: use a smaller seq_len or more text",
            len(ids),
        )
    if num_samples * seq_len > len(ids):
        logger.warning(
            "calibration windows overlap: %d x %d tokens drawn from %d tokens of text", num_samples, seq_len, len(ids)
        )
    stream = torch.tensor(ids, dtype=torch.long)
    generator = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, len(ids) - seq_len + 1, (num_samples,), generator=generator)
    windows = torch.stack([stream[s : s + seq_len] for s in starts.tolist()])
    return [
        {"input_ids": chunk.clone(), "attention_mask": torch.ones_like(chunk)}
        for chunk in windows.split(batch_size)
    ]
