"""Field types of the command line: convert a flag's text, check a YAML value, name a type for messages."""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from typing import Any

from .common import UsageError

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}
NONE = {"none", "null", "~"}


def _args_of(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def simple(tp: Any) -> tuple[Any, bool, bool]:
    """(base type, optional, is_list) of an annotation; unions with str collapse to str."""
    members = _args_of(tp)
    optional = type(None) in members
    rest = [m for m in members if m is not type(None) and m is not typing.Literal[False]]
    if typing.get_origin(tp) is typing.Literal or any(typing.get_origin(m) is typing.Literal for m in rest):
        return str, optional, False
    lists = [m for m in rest if typing.get_origin(m) is list]
    if lists and len(rest) == 1:
        inner = (typing.get_args(lists[0]) or (str,))[0]
        return (inner if inner in (int, float, str, bool) else str), optional, True
    if len(rest) == 1 and rest[0] in (int, float, str, bool):
        return rest[0], optional, False
    if str in rest or any(isinstance(m, type) and issubclass(m, enum.Enum) for m in rest):
        return str, optional, False
    return object, optional, False  # dicts, config objects: passed through as given


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError
    return value


def convert(text: str, tp: Any, flag: str) -> Any:
    """Convert one command-line string to the field's type, or raise ``UsageError`` naming ``flag``.

    ``flag`` is the flag as given (``--seq-len``) or a field name (``seq_len`` is shown as ``--seq_len``).
    A list field gives a list: its text is split at commas.
    """
    flag = flag if flag.startswith("-") else f"--{flag}"
    base, optional, is_list = simple(tp)
    if optional and text.strip().lower() in NONE:
        return None
    if is_list:
        return [convert(part, base, flag) for part in text.split(",") if part.strip()]
    try:
        if base is bool:
            low = text.strip().lower()
            if low in TRUE | FALSE:
                return low in TRUE
            raise ValueError
        if base is object:
            return json.loads(text) if text.lstrip().startswith(("{", "[")) else text
        return _number(text) if base is float else base(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not {article(type_name(tp))}: fix the value") from None


def check_value(value: Any, tp: Any, name: str, source: str) -> Any:
    """Check a YAML value against the field's annotation; ints and numeric text are accepted for floats.

    YAML 1.1 reads ``3e-4`` as text, so a float field takes any text that is a finite number.
    """
    base, optional, is_list = simple(tp)
    if isinstance(value, dict) and takes_mapping(tp):
        return value
    if value is None:
        if optional or base is object:
            return None
        raise UsageError(f"{source}: {name}: null is not allowed: give {article(type_name(tp))}")
    if is_list:  # a list, or text separated by commas as on the command line (LLaMA-Factory's q_proj,v_proj)
        items = value if isinstance(value, list) else [p.strip() for p in value.split(",") if p.strip()] \
            if isinstance(value, str) else None
        if items is None:
            raise UsageError(f"{source}: {name}={value!r} must be a list of {base.__name__}: write it as [a, b]")
        return [check_value(v, base, name, source) for v in items]
    if base is str and isinstance(value, bool):  # YAML 1.1 reads yes/no/on/off as booleans
        raise UsageError(f"{source}: {name}={value!r} is a boolean to YAML: write the word in quotes, e.g. "
                         f"{name}: \"no\"")
    if base is float and isinstance(value, str):
        try:
            return _number(value)
        except ValueError:
            raise UsageError(f"{source}: {name}={value!r} is not a finite number: write e.g. 3.0e-4") from None
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
        object: True,
    }[base]
    if not ok:
        raise UsageError(f"{source}: {name}={value!r} has the wrong type: expected {article(type_name(tp))}")
    if base is float:
        if not math.isfinite(value):
            raise UsageError(f"{source}: {name}={value!r} is not a finite number: give a real value")
        return float(value)
    return str(value) if base is str else value


def takes_mapping(tp: Any) -> bool:
    """Whether the annotation admits a mapping (``dict | str | None``: kwargs given in YAML as a mapping)."""
    return any(m is dict or typing.get_origin(m) is dict for m in _args_of(tp))


def type_name(tp: Any) -> str:
    """``integer``, ``list of numbers or none``, ... for help texts and messages."""
    base, optional, is_list = simple(tp)
    name = {bool: "boolean (true/false)", int: "integer", float: "number", str: "string", object: "value"}[base]
    name = f"list of {name}s" if is_list else name
    return f"{name} or none" if optional else name


def article(noun: str) -> str:
    """``an integer``, ``a number``."""
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"
