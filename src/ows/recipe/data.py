"""The data of a run: training, evaluation and held-out rows, encoded before any model loads; a stored profile."""

from __future__ import annotations

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
    """Encoded training/evaluation examples and prompt/completion records for held-out metrics."""

    train: list[dict]
    eval: list[dict] = field(default_factory=list)
    heldout: list[dict] = field(default_factory=list)
    reasoning: bool = False


def load_profile(script: ScriptArguments, out: Path) -> tuple[OutlierProfile | None, str | None]:
    """The given profile, else the one a previous attempt of this run stored in ``out`` (None: compute), and its
    path. A folder being overwritten holds another run: its profile is not reused."""
    stored = out / PROFILE
    source = script.profile or (str(stored) if stored.is_file() and not script.overwrite_output_dir else None)
    return (OutlierProfile.from_json(source), source) if source is not None else (None, None)


def load_datasets(script: ScriptArguments, tokenizer: Any) -> Datasets:
    """Generate or read the rows, check the format, encode, split; before any model is loaded."""
    from ..data import encode as encoding, records as data
    from ..losses import IGNORE_INDEX

    if script.task == "dpo":
        return _preference_datasets(script, tokenizer)
    tasks = reasoning.parse_spec(script.dataset)
    if tasks:
        records = reasoning.make_records(tasks, script.num_train_examples, script.dataset_seed)
        heldout = reasoning.make_records(tasks, script.num_heldout_examples, script.heldout_seed)
        heldout = reasoning.drop_overlap(heldout, records)
        fmt, eval_records = "prompt_completion", []
    else:
        records = data.load_records(script.dataset, script.dataset_split)
        fmt = data.detect_format(records, script.dataset_format, script.dataset)
        if script.eval_dataset:
            eval_records = data.load_records(script.eval_dataset, script.dataset_split)
            data.detect_format(eval_records, fmt, script.eval_dataset)
        else:
            records, eval_records = data.split_train_eval(records, script.eval_split_ratio, script.dataset_seed)
        heldout = [_as_prompt_completion(r, fmt) for r in eval_records] if fmt in ("alpaca", "prompt_completion") else []
    encode = dict(tokenizer=tokenizer, max_seq_length=script.max_seq_length, completion_only_loss=script.completion_only_loss)
    train, stats = encoding.encode_dataset(records, fmt, packing=script.packing, **encode)
    if not any(label != IGNORE_INDEX for example in train for label in example["labels"][1:]):
        raise ValueError(f"dataset={script.dataset!r}: no example has a token to learn after its first (each is a "
                         "single labelled token, e.g. an empty text and its end token): add text to the rows")
    evaluation = encoding.encode_dataset(eval_records, fmt, **encode)[0] if eval_records else []
    logger.info("data: %d training examples (%s), %d evaluation, %d held-out", len(train), fmt, len(evaluation), len(heldout))
    return Datasets(train, evaluation, heldout, reasoning=bool(tasks))


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


def _as_prompt_completion(record: dict, fmt: str) -> dict:
    from ..data.records import to_prompt_completion

    prompt, completion = to_prompt_completion(record, fmt)
    return {"prompt": prompt, "completion": completion}


def wants_profile(script: ScriptArguments, config: OWSConfig) -> bool:
    return get_method(script.method).needs_profile(config)
