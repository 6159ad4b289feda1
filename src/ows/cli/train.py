"""``ows train [CONFIG.yaml] [--field value ...]``: fine-tune with OWS or a baseline method.

Parses the YAML file and flags into the run's fields and calls :func:`ows.train` (``ows.recipe``), which
checks every input before the model loads and writes nothing until they all pass.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import OWSConfig
from ..recipe.arguments import DEMO, ScriptArguments
from ..recipe.run import prepare
from .common import ArgumentParser
from .options import FieldSet, instantiate, parse_command

EPILOG = """examples:
  ows train                                         # the demo (SmolLM2-135M, reasoning-gym chain_sum, CPU)
  ows train configs/demo.yaml --max_steps 20 --output_dir outputs/short
  ows train --model ./my-model --dataset data.jsonl --output_dir out --method lisa --num_active_layers 2
"""


def _fields(help_only: bool = False) -> FieldSet:
    """The fields of ``ows train``; for ``--help`` without TrainingArguments' (importing transformers takes seconds:
    their names are listed from ``cli/arguments.py`` instead)."""
    sections: list = [(ScriptArguments, "model, data and method", None), (OWSConfig, "OWS (layer sampling, GaLore)", None)]
    if not help_only:
        from transformers import TrainingArguments

        sections.append((TrainingArguments, "transformers.TrainingArguments", None))
    return FieldSet(sections)


def _training_fields_help() -> str:
    import textwrap

    from .arguments import TRAINING_ARGUMENT_FIELDS

    names = ", ".join(f"--{name}" for name in sorted(TRAINING_ARGUMENT_FIELDS))
    return ("\ntransformers.TrainingArguments: every field is a flag and a YAML key, e.g. --learning_rate 3e-4 (help: "
            "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments):\n"
            + textwrap.fill(names, 118, initial_indent="  ", subsequent_indent="  "))


def _demo_unless_chosen(flags: dict[str, Any]) -> dict[str, Any]:
    """The demo's settings when neither a model nor a dataset is given; otherwise the fields' own defaults."""
    return {} if "model" in flags or "dataset" in flags else dict(DEMO)


def parse(argv: list[str]) -> tuple[ScriptArguments, OWSConfig, dict[str, Any]] | int:
    """(script arguments, OWS config, TrainingArguments keyword arguments) from YAML + flags, checked by
    :func:`ows.recipe.prepare`; argparse's exit code for ``--help``, as every command's ``parse``."""
    help_only = any(arg in ("-h", "--help") for arg in argv)
    parser = ArgumentParser(prog="ows train", usage="ows train [CONFIG.yaml] [--field value ...]",
                            description="Fine-tune a causal LM with OWS or a baseline method. Every field below "
                            "can also be a key of the YAML file; flags override it. With no config file, no "
                            "--model and no --dataset: the demo.",
                            epilog=EPILOG + (_training_fields_help() if help_only else ""),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parsed = parse_command(parser, _fields(help_only), argv, takes_model=False, defaults_without_file=_demo_unless_chosen)
    if isinstance(parsed, int):
        return parsed
    from transformers import TrainingArguments

    values = {**parsed.values(ScriptArguments), **parsed.values(OWSConfig), **parsed.values(TrainingArguments)}
    script = instantiate(ScriptArguments, parsed.values(ScriptArguments))
    script.given = frozenset(parsed.spelled)  # by flag or in the config file (not the demo's defaults)
    ows_values = parsed.values(OWSConfig)
    if "seed" in values:  # one seed for the data order and the layer schedule
        ows_values["seed"] = values["seed"]
    config = instantiate(OWSConfig, ows_values)
    training = parsed.values(TrainingArguments)
    if "seed" in values:
        training["seed"] = values["seed"]
    return prepare(script, config, training)


def run(argv: list[str]) -> int:
    """Entry point of ``ows train``: 0 done, 2 bad input, 1 failure, 130 stopped by a signal (resumable)."""
    from ..recipe.run import train

    parsed = parse(argv)
    if isinstance(parsed, int):  # --help
        return parsed
    script, config, training = parsed
    return train(script, config, training, echo=print).exit_code
