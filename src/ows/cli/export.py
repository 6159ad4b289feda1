"""``ows export delta RUN OUT``, ``ows export lora RUN OUT --rank R`` and ``ows merge BASE DELTA OUT``.

RUN is an ``ows train`` output folder; its base model is the one it was trained from (``ows_run.json``),
unless ``--base`` names another folder. ``--alpha A`` (0 < A <= 2) interpolates in weight space: each changed
tensor becomes base + A * (tuned - base). Every input is checked before anything is written, and OUT must
be new or empty (see :mod:`ows.export`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..recipe.run_folder import read_run_record, run_base
from .common import ArgumentParser, UsageError
from .options import FieldSet, instantiate

EPILOG = """examples:
  ows export delta outputs/demo outputs/demo-delta          # only the tensors the run changed (+ the base's hash)
  ows merge smollm2-135m outputs/demo-delta outputs/demo-again   # the fine-tuned model again, tensor for tensor
  ows merge smollm2-135m outputs/demo-delta outputs/demo-half --alpha 0.5   # half of the fine-tune's change
  ows export lora outputs/demo outputs/demo-lora --rank 16  # a PEFT LoRA adapter of the changed linears
"""
USES = {"delta": ("base", "alpha"), "lora": ("base", "alpha", "rank"), "merge": ("alpha",)}


def _h(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class ExportArguments:
    """Options of ``ows export`` and ``ows merge``."""

    rank: int = _h("LoRA rank of the extracted adapter (ows export lora).", 16)
    base: str | None = _h("The base model folder (default: the model the run was trained from, from ows_run.json).",
                          None)
    alpha: float = _h("Weight-space interpolation, 0 < alpha <= 2: each changed tensor becomes base + alpha * (tuned "
                      "- base); 1 is the fine-tune itself, 0.5 keeps half of its change (forgets less).", 1.0)


def _parse(prog: str, usage: str, positionals: list[str], argv: list[str]) -> tuple[list[str], ExportArguments]:
    parser = ArgumentParser(prog=prog, usage=usage, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                            description=__doc__.split("\n")[0])
    for name in positionals:
        parser.add_argument(name)
    fields = FieldSet([(ExportArguments, "export", None)])
    fields.add_to(parser, {})
    try:
        namespace = parser.parse_intermixed_args(argv)
    except SystemExit as stop:
        raise _Exit(int(stop.code or 0)) from None
    values = [getattr(namespace, name) for name in positionals]
    for name in positionals:
        delattr(namespace, name)
    given = fields.from_flags(namespace, {})
    command = values[0] if positionals[0] == "kind" else "merge"
    unused = [name for name in given if name not in USES.get(command, given)]
    if unused:
        raise UsageError(f"--{unused[0]} is not used by {prog} {command if prog == 'ows export' else ''}".rstrip()
                         + f": drop it (it takes {', '.join('--' + n for n in USES[command])})")
    options = instantiate(ExportArguments, given)
    try:
        from ..export.delta import check_alpha

        check_alpha(options.alpha)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return values, options


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _new_folder(path: str) -> Path:
    from ..export import check_new_folder

    try:
        return check_new_folder(path, "OUT")
    except ValueError as err:
        raise UsageError(str(err)) from None


def export(argv: list[str]) -> int:
    """``ows export delta|lora RUN OUT``."""
    from ..export import compute_delta, write_delta

    try:
        (kind, run, out), options = _parse("ows export", "ows export {delta,lora} RUN OUT [--rank R] [--base FOLDER] "
                                           "[--alpha A]", ["kind", "run", "out"], argv)
    except _Exit as stop:
        return stop.code
    if kind not in ("delta", "lora"):
        raise UsageError(f"ows export {kind!r} is unknown: use `ows export delta RUN OUT` or `ows export lora RUN OUT`")
    if options.rank < 1:
        raise UsageError(f"--rank {options.rank} is invalid: use a rank >= 1")
    base, name = run_base(run, options.base)
    folder = _new_folder(out)
    if kind == "delta":
        delta = compute_delta(base, run, options.alpha)
        write_delta(delta, base, name, folder, str(Path(run).resolve()))
        print(f"{len(delta.changed)} changed tensors ({sum(v.numel() for v in delta.changed.values()):,} parameters), "
              f"{delta.unchanged} unchanged" + (f", alpha {options.alpha:g}" if options.alpha != 1 else "")
              + f": wrote {folder}")
        return 0
    from ..export import extract_lora

    model_type = json.loads((Path(base) / "config.json").read_text(encoding="utf-8")).get("model_type")
    from ..loading import shared_name

    named = shared_name(options.base or read_run_record(Path(run)).get("model"))  # as the user named it, not the cache
    report = extract_lora(base, run, folder, options.rank, model_type=model_type, alpha=options.alpha,
                          base_name=named).summary()
    print(f"LoRA rank {report['rank']} over {report['matrices']} changed linears: captured energy mean "
          f"{report['mean_energy']:.3f}, min {report['min_energy']:.3f}; left out (not a LoRA's): "
          f"{report['left_out_tensors']} tensors, {report['left_out_params']:,} parameters; wrote {folder} "
          f"(base_model_name_or_path {named}; on this machine {base})")
    return 0


def merge(argv: list[str]) -> int:
    """``ows merge BASE DELTA OUT [--alpha A]``."""
    from ..export import merge_delta, read_delta_info
    from ..loading import resolve_model_path

    try:
        (base, delta, out), options = _parse("ows merge", "ows merge BASE DELTA OUT [--alpha A]",
                                             ["base", "delta", "out"], argv)
    except _Exit as stop:
        return stop.code
    resolved = resolve_model_path(base)
    read_delta_info(delta)
    folder = _new_folder(out)
    merge_delta(resolved, delta, folder, alpha=options.alpha)
    print(f"merged {delta} into {resolved}" + (f" with alpha {options.alpha:g}" if options.alpha != 1 else "")
          + f": wrote {folder}")
    return 0


run = export
