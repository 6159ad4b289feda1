"""The data of a run: training, evaluation and held-out rows, encoded before any model loads; a stored profile."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import tasks as reasoning
from ..methods import get_method
from ..outliers import OutlierProfile
from .arguments import ScriptArguments
from .run_folder import PROFILE
from ..config import OWSConfig

logger = logging.getLogger(__name__)

@dataclass
class Datasets:
    """Encoded training/evaluation examples, prompt/completion records for held-out metrics, and the training rows'
    text as the model reads it (calibration text when no other is installed)."""

    train: list[dict]
    eval: list[dict] = field(default_factory=list)
    heldout: list[dict] = field(default_factory=list)
    reasoning: bool = False
    texts: list[str] = field(default_factory=list)


CALIBRATION_ROWS = 2000  # training rows kept as calibration text


PROFILE_KEYS = ("model", "calibration", "calibration_samples", "calibration_seq_len", "calibration_batch_size",
                "calibration_seed", "outlier_threshold", "layers_attr", "dataset", "template")


def load_profile(script: ScriptArguments, config: OWSConfig, out: Path) -> tuple[OutlierProfile | None, str | None]:
    """The given profile, else the one a previous attempt of this run stored in ``out`` (None: compute), and its
    path. A stored profile is reused only when the folder's run measured it with the same settings (model,
    calibration, threshold; a folder being overwritten holds another run)."""
    from .run_folder import read_run_record

    stored = out / PROFILE
    record = read_run_record(out) or {}
    now = {**vars(script), **config.to_dict()}
    same = all(json.dumps(record.get(k), default=str) == json.dumps(now.get(k), default=str) for k in PROFILE_KEYS)
    source = script.profile or (str(stored) if stored.is_file() and same and not script.overwrite_output_dir else None)
    return (OutlierProfile.from_json(source), source) if source is not None else (None, None)


def load_datasets(script: ScriptArguments, tokenizer: Any) -> Datasets:
    """Generate or read the rows, check the format, encode, split; before any model is loaded.

    Rows are rendered in the style ``script.template`` gives (:func:`ows.data.records.render_style`); a Jinja
    template file becomes the tokenizer's chat template (and is saved with the model)."""
    from ..data import encode as encoding, records as data
    from ..losses import IGNORE_INDEX

    if script.task == "dpo":
        return _preference_datasets(script, tokenizer)
    use_template_file(tokenizer, script.template)
    tasks = reasoning.parse_spec(script.dataset)
    if tasks:
        records = reasoning.make_records(tasks, script.num_train_examples, script.dataset_seed)
        heldout = reasoning.make_records(tasks, script.num_heldout_examples, script.heldout_seed)
        heldout = reasoning.drop_overlap(heldout, records)
        fmt, eval_records = "prompt_completion", []
    else:
        records = _text_field(data.load_records(script.dataset, script.dataset_split), script, script.dataset)
        fmt = data.detect_format(records, script.dataset_format, script.dataset)
        if script.eval_dataset:
            eval_records = _text_field(data.load_records(script.eval_dataset, script.dataset_split), script,
                                       script.eval_dataset)
            data.detect_format(eval_records, fmt, script.eval_dataset)
        else:
            records, eval_records = data.split_train_eval(records, script.eval_split_ratio, script.dataset_seed)
        heldout = eval_records if fmt in ("alpaca", "prompt_completion") else []
    style = data.render_style(fmt, script.template, tokenizer, plain_prompts=bool(tasks))
    heldout = [_as_prompt_completion(r, fmt, style, tokenizer) for r in heldout]
    encode = dict(tokenizer=tokenizer, max_seq_length=script.max_seq_length, completion_only_loss=script.completion_only_loss,
                  style=style)
    train, stats = encoding.encode_dataset(records, fmt, packing=script.packing, **encode)
    if not any(label != IGNORE_INDEX for example in train for label in example["labels"][1:]):
        raise ValueError(f"dataset={script.dataset!r}: no example has a token to learn after its first (each is a "
                         "single labelled token, e.g. an empty text and its end token): add text to the rows")
    evaluation = encoding.encode_dataset(eval_records, fmt, **encode)[0] if eval_records else []
    logger.info("data: %d training examples (%s, rendered %s), %d evaluation, %d held-out", len(train), fmt,
                _STYLE_NAMES[style], len(evaluation), len(heldout))
    texts = [data.row_text(r, fmt, style, tokenizer) for r in records[:CALIBRATION_ROWS]]
    return Datasets(train, evaluation, heldout, reasoning=bool(tasks), texts=texts)


_STYLE_NAMES = {"chat": "with the chat template", "alpaca": "with the Alpaca prompt", "plain": "as written"}


def use_template_file(tokenizer: Any, template: str) -> None:
    """A Jinja file given as ``template`` becomes the tokenizer's chat template (auto, alpaca and none change nothing)."""
    from .arguments import TEMPLATES

    if template not in TEMPLATES:
        tokenizer.chat_template = Path(template).expanduser().read_text(encoding="utf-8")
        logger.info("chat template: %s", template)


def _text_field(records: list[dict], script: ScriptArguments, source: str) -> list[dict]:
    """Rows whose ``dataset_text_field`` column is copied to ``text`` (the format text reads that column)."""
    name = script.dataset_text_field
    if name == "text":
        return records
    if name not in records[0]:
        raise ValueError(f"dataset_text_field={name!r} is not a column of {source} (columns: {', '.join(records[0])}): "
                         "name the column that holds the text")
    return [{**{k: v for k, v in r.items() if k != name}, "text": r.get(name)} for r in records]


def _preference_datasets(script: ScriptArguments, tokenizer: Any) -> Datasets:
    """task dpo: checked prompt/chosen/rejected rows (TRL tokenizes them), an evaluation split if asked."""
    from ..data import records as data
    from ..data.preference import check_prompt_lengths, load_preference_rows

    rows = load_preference_rows(script.dataset, script.dataset_split)
    check_prompt_lengths(rows, tokenizer, script.max_seq_length, f"dataset={script.dataset!r}")
    if script.eval_dataset:
        evaluation = load_preference_rows(script.eval_dataset, script.dataset_split)
    else:
        rows, evaluation = data.split_train_eval(rows, script.eval_split_ratio, script.dataset_seed)
    logger.info("data: %d preference pairs for training, %d for evaluation", len(rows), len(evaluation))
    return Datasets(rows, evaluation)


def _as_prompt_completion(record: dict, fmt: str, style: str, tokenizer: Any) -> dict:
    """A held-out record as the model reads it: prompt and completion in ``style``. In the chat style the prompt is
    the rendered conversation up to the assistant's turn (``chat``: no BOS added) and the completion its content."""
    from ..data.chat import render
    from ..data.records import as_messages, to_prompt_completion

    if style == "chat":
        messages = as_messages(record, fmt)
        return {**record, "prompt": render(tokenizer, messages[:-1], True), "completion": messages[-1]["content"],
                "chat": True}
    prompt, completion = to_prompt_completion(record, fmt, style)
    return {**record, "prompt": prompt, "completion": completion}


def wants_profile(script: ScriptArguments, config: OWSConfig) -> bool:
    return get_method(script.method).needs_profile(config)
