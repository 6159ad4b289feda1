"""Rows of ``ows train``'s data: read local datasets, detect and check their format, render prompt/completion.

Formats: ``alpaca`` (instruction, optional input, output), ``messages`` (a list of {role, content}),
``prompt_completion`` and ``text``; ``auto`` picks one by the columns. ``datasets`` is imported inside
the functions that need it.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMATS = ("auto", "alpaca", "messages", "prompt_completion", "text")
QUIET_FILE_BYTES = 16 * 2**20  # files below this load without datasets' progress bars
_LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_REQUIRED = {"alpaca": ("instruction", "output"), "messages": ("messages",),
             "prompt_completion": ("prompt", "completion"), "text": ("text",)}
_NEEDS = {"messages": "messages needs messages", "alpaca": "alpaca needs instruction, output; optional input",
          "prompt_completion": "prompt_completion needs prompt, completion", "text": "text needs text"}
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "ipython", "function")
_ALPACA_HEAD = ("Below is an instruction that describes a task{}. "
                "Write a response that appropriately completes the request.\n\n")
_ALPACA_WITH_INPUT = ", paired with an input that provides further context"

def _one_line(error: BaseException) -> str:
    """First line of the innermost cause of ``error``, at most 200 characters."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"{type(error).__name__}: {text[:200]}"


def _load_folder(folder: Path, split: str | None) -> Any:
    """A Dataset from a ``save_to_disk`` folder; a DatasetDict gives its ``split`` (default train)."""
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(folder))
    except Exception as error:
        raise ValueError(f"dataset={str(folder)!r} is a folder but not one saved with datasets' save_to_disk "
                         f"({_one_line(error)}): point dataset at a .json/.jsonl/.csv/.parquet file") from error
    if not isinstance(loaded, DatasetDict):
        return loaded
    name = split or "train"
    if name not in loaded:
        raise ValueError(f"dataset={str(folder)!r} has no split {name!r} (splits: {', '.join(loaded)}): "
                         "set dataset_split to one of them")
    return loaded[name]


def _csv_options(path: Path) -> dict:
    """Read every CSV column as text (no number parsing, which would turn ' 19' into 19); only empty
    cells are null ('NA' or 'None' stay text)."""
    import csv

    from datasets import Features, Value

    with path.open(newline="", encoding="utf-8") as file:
        header = next(csv.reader(file))
    return {"features": Features({name: Value("string") for name in header}),
            "keep_default_na": False, "na_values": [""]}


def load_records(path: str, split: str | None = None) -> list[dict]:
    """Rows of a local dataset: a .json (list of objects or JSON lines) / .jsonl / .csv / .parquet file,
    or a folder saved with ``datasets``' ``save_to_disk`` (a DatasetDict gives ``split``, default train).

    Files go through ``datasets.load_dataset`` (Arrow-backed, cached), so large files load efficiently.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset={str(path)!r} does not exist: give a .json/.jsonl/.csv/.parquet file "
                                "or a folder saved with datasets' save_to_disk")
    if not p.is_dir():
        builder = _LOADERS.get(p.suffix.lower())
        if builder is None:
            raise ValueError(f"dataset={str(path)!r} has unsupported extension {p.suffix!r}: "
                             f"use one of {', '.join(_LOADERS)} or a save_to_disk folder")
        if split not in (None, "train"):
            logger.warning("dataset_split=%r is ignored for the single file %s", split, path)
        import datasets

        shown = datasets.is_progress_bar_enabled()
        if p.stat().st_size < QUIET_FILE_BYTES:  # a small file loads in a moment: no progress bar before an error
            datasets.disable_progress_bars()
        try:
            kwargs = _csv_options(p) if builder == "csv" else {}
            rows = datasets.load_dataset(builder, data_files=str(p), split="train", **kwargs).to_list()  # checks UTF-8
        except Exception as error:
            if p.stat().st_size == 0 or any(s in _one_line(error) for s in ("corresponds to no data", "StopIter")):
                rows = []
            else:
                raise ValueError(f"dataset={str(path)!r} could not be read as {builder} ({_one_line(error)}): "
                                 f"fix the file (UTF-8, valid {p.suffix.lstrip('.')})") from error
        finally:
            if shown:
                datasets.enable_progress_bars()
    else:
        rows = _load_folder(p, split).to_list()
    if not rows:
        raise ValueError(f"dataset={str(path)!r} has no rows: add examples or point dataset at another file")
    return rows


def _missing_field(record: dict, fmt: str) -> str | None:
    """The first required field of ``fmt`` that ``record`` lacks (or has null / malformed), else None."""
    for name in _REQUIRED[fmt]:
        if record.get(name) is None:
            return name
    if fmt == "messages":
        messages = record["messages"]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") is not None and m.get("content") is not None for m in messages):
            return "messages (a non-empty list of {role, content} objects)"
    return None


def detect_format(records: list[dict], requested: str = "auto", source: str = "dataset") -> str:
    """The dataset format: ``requested`` checked against every row, or for 'auto' picked by columns
    (messages -> messages; instruction+output -> alpaca; prompt+completion -> prompt_completion; text -> text).
    """
    if requested not in FORMATS:
        raise ValueError(f"dataset_format={requested!r} is unknown: use one of {', '.join(FORMATS)}")
    if not records:
        raise ValueError(f"{source} has no rows: add examples")
    fmt = requested
    if fmt == "auto":
        columns = list(records[0])
        fmt = next((f for f in ("messages", "alpaca", "prompt_completion", "text")
                    if all(c in columns for c in _REQUIRED[f])), "")
        if not fmt:
            raise ValueError(f"{source} has columns {columns} that match no format ({'; '.join(_NEEDS.values())}): "
                             "rename the columns or set dataset_format")
    for row, record in enumerate(records, start=1):
        missing = _missing_field(record, fmt)
        if missing is not None:
            raise ValueError(f"{source} row {row} is missing field {missing!r} (format {_NEEDS[fmt]}): "
                             "fix the file or set dataset_format")
        if fmt == "messages":
            check_messages(record["messages"], f"{source} row {row}")
        for name in _TEXT_FIELDS.get(fmt, ()):
            check_text_value(record.get(name), name, f"{source} row {row}")
    trained = _TRAINED.get(fmt)
    if trained is not None and all(_text(r[trained]) == "" for r in records):
        raise ValueError(f"{source}: every row's {trained!r} is empty, so there is no token to train on: fill the "
                         "rows or point dataset at another file")
    return fmt


_TEXT_FIELDS = {"alpaca": ("instruction", "input", "output"), "prompt_completion": ("prompt", "completion"),
                "text": ("text",)}
_TRAINED = {"alpaca": "output", "prompt_completion": "completion", "text": "text"}  # the text a row teaches


def check_text_value(value: Any, name: str, where: str) -> None:
    """A cell that is trained on as text is a string, or a whole or finite number (written as its digits); NaN,
    infinity, true/false, lists and objects are refused (``ValueError`` naming the row and the field). None is
    left to the missing-field check."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        shown = json.dumps(value, default=str)[:40] if not isinstance(value, float) else repr(value)
        raise ValueError(f"{where} field {name!r} is {type(value).__name__} {shown}, not text: write it as a JSON "
                         "string (a number is read as its digits)")


def check_messages(messages: list[dict], where: str) -> None:
    """Every message has a known role and text content (a list of parts, as in multimodal data, is refused)."""
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role not in CHAT_ROLES:
            raise ValueError(f"{where} message {index} has role {role!r}: use one of {', '.join(CHAT_ROLES)} (e.g. "
                             "rename human to user and gpt to assistant)")
        if not isinstance(content, str):
            raise ValueError(f"{where} message {index} has {type(content).__name__} content: give the text as a string "
                             "(lists of content parts are not supported)")


def has_assistant_turn(record: dict) -> bool:
    """Whether a messages row has at least one assistant message (the text a chat model learns)."""
    return any(m.get("role") == "assistant" for m in record.get("messages") or [])


def _text(value: Any) -> str:
    """A cell as text (a JSON number becomes its digits)."""
    return value if isinstance(value, str) else str(value)


STYLES = ("chat", "alpaca", "plain")  # how a row becomes text: the chat template, the Alpaca prompt, as written


def render_style(fmt: str, template: str, tokenizer: Any = None, plain_prompts: bool = False) -> str:
    """The style (one of ``STYLES``) in which rows of ``fmt`` are rendered under ``template`` (auto, alpaca, none or
    a Jinja file, already set as the tokenizer's chat template).

    ``auto``: the tokenizer's chat template when it has one (``plain_prompts``: prompts that define their own form,
    such as reasoning-gym's, stay plain); without one, alpaca rows get the Alpaca prompt and others stay plain.
    ``text`` rows are always plain; ``messages`` rows need a chat template."""
    if fmt == "text":
        return "plain"
    if fmt == "messages":
        if template in ("alpaca", "none"):
            raise ValueError(f"template={template!r} cannot render messages rows (they need a chat template): use "
                             "template auto or the path of a Jinja chat template file")
        return "chat"
    if template == "alpaca":
        return "alpaca"
    if template == "none":
        return "plain"
    if template != "auto" or (getattr(tokenizer, "chat_template", None) and not plain_prompts):
        return "chat"
    return "alpaca" if fmt == "alpaca" else "plain"


def _instruction(record: dict, fmt: str) -> tuple[str, str]:
    """(the request, its extra input) of an alpaca or prompt/completion row."""
    if fmt == "alpaca":
        extra = record.get("input")
        return _text(record["instruction"]), "" if extra is None else _text(extra)
    return _text(record["prompt"]), ""


def as_messages(record: dict, fmt: str) -> list[dict]:
    """An alpaca or prompt/completion row as a conversation: [system (a ``system`` column)], user, assistant."""
    request, extra = _instruction(record, fmt)
    answer = _text(record["output"] if fmt == "alpaca" else record["completion"])
    system = record.get("system")
    head = [{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []
    user = request.strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": answer.strip()}]


def to_prompt_completion(record: dict, fmt: str, style: str | None = None) -> tuple[str, str]:
    """One row as (prompt, completion) text in ``style`` (``alpaca``: the Stanford Alpaca prompt; ``plain``: as
    written, an alpaca row's instruction and input on their own lines; None: alpaca for alpaca rows, else plain);
    text gives ('', text).

    'messages' rows and the ``chat`` style need the tokenizer's chat template: see :func:`encode_example`.
    """
    if fmt == "text":
        return "", _text(record["text"])
    if fmt not in ("alpaca", "prompt_completion") or style == "chat":
        raise ValueError(f"dataset_format={fmt!r} has no (prompt, completion) rendering{' in style chat' * (style == 'chat')}: "
                         "use encode_example for messages, or one of alpaca, prompt_completion, text")
    style = style or ("alpaca" if fmt == "alpaca" else "plain")
    request, extra = _instruction(record, fmt)
    completion = _text(record["output"] if fmt == "alpaca" else record["completion"])
    if style == "plain":
        return (request + (f"\n{extra}" if extra else "") + "\n" if fmt == "alpaca" else request), completion
    prompt = _ALPACA_HEAD.format(_ALPACA_WITH_INPUT if extra else "") + f"### Instruction:\n{request}\n\n"
    if extra:
        prompt += f"### Input:\n{extra}\n\n"
    return prompt + "### Response:\n", completion


def row_text(record: dict, fmt: str, style: str, tokenizer: Any = None) -> str:
    """The whole text of one row as the model reads it (prompt and completion, or the chat rendering)."""
    if fmt == "messages" or style == "chat":
        from .chat import render

        return render(tokenizer, record["messages"] if fmt == "messages" else as_messages(record, fmt), False)
    return "".join(to_prompt_completion(record, fmt, style))


def split_train_eval(examples: list, eval_ratio: float, seed: int) -> tuple[list, list]:
    """Deterministic shuffle-split into (train, eval); ``eval_ratio`` 0 gives (all rows, [])."""
    if not 0 <= eval_ratio < 1:
        raise ValueError(f"eval_split_ratio={eval_ratio} must be in [0, 1): use e.g. 0.05, or 0 for no eval split")
    if eval_ratio == 0:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * eval_ratio))
    if n_eval >= len(examples):
        raise ValueError(f"eval_split_ratio={eval_ratio} leaves no training rows out of {len(examples)}: "
                         "lower it or add data")
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]
