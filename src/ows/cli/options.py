"""Options of ``ows train`` from dataclasses: YAML file first, ``--field value`` flags override it.

Every field keeps its dataclass name (snake_case). Values from YAML are type-checked against the
field's annotation, values from flags are converted with it; both fail as one ``UsageError`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable

from .common import UsageError

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}
NONE = {"none", "null", "~"}


def _args_of(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def _simple(tp: Any) -> tuple[Any, bool, bool]:
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


def convert(text: str, tp: Any, name: str) -> Any:
    """Convert one command-line string to the field's type, or raise ``UsageError``."""
    base, optional, is_list = _simple(tp)
    if optional and text.strip().lower() in NONE:
        return None
    if is_list:
        return [convert(part, base, name) for part in text.split(",") if part.strip()]
    try:
        if base is bool:
            low = text.strip().lower()
            if low in TRUE | FALSE:
                return low in TRUE
            raise ValueError
        if base is object:
            return json.loads(text) if text.lstrip().startswith(("{", "[")) else text
        return base(text)
    except ValueError:
        raise UsageError(f"--{name} {text!r} is not {_article(_type_name(tp))}: fix the value") from None


def check_value(value: Any, tp: Any, name: str, source: str) -> Any:
    """Check a YAML value against the field's annotation (ints are accepted for floats)."""
    base, optional, is_list = _simple(tp)
    if value is None:
        if optional or base is object:
            return None
        raise UsageError(f"{source}: {name}: null is not allowed: give {_article(_type_name(tp))}")
    if is_list:
        items = value if isinstance(value, list) else None
        if items is None:
            raise UsageError(f"{source}: {name}={value!r} must be a list of {base.__name__}: write it as [a, b]")
        return [check_value(v, base, name, source) for v in items]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
        object: True,
    }[base]
    if not ok:
        raise UsageError(f"{source}: {name}={value!r} has the wrong type: expected {_article(_type_name(tp))}")
    if base is float:
        return float(value)
    return str(value) if base is str else value


def _type_name(tp: Any) -> str:
    base, optional, is_list = _simple(tp)
    name = {bool: "boolean (true/false)", int: "integer", float: "number", str: "string", object: "value"}[base]
    name = f"list of {name}s" if is_list else name
    return f"{name} or none" if optional else name


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


class FieldSet:
    """The fields of several dataclasses, by name; later classes do not override earlier ones."""

    def __init__(self, classes: list[type]) -> None:
        self.fields: dict[str, tuple[type, dataclasses.Field, Any]] = {}
        for cls in classes:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if f.init and f.name not in self.fields and not f.name.startswith("_"):
                    self.fields[f.name] = (cls, f, hints.get(f.name, str))

    def help_text(self, name: str) -> str:
        cls, f, tp = self.fields[name]
        text = " ".join(str(f.metadata.get("help", "")).split())
        return f"{text} [{_type_name(tp)}; {cls.__name__}]"

    def add_to(self, parser: argparse.ArgumentParser, groups: dict[type, str]) -> None:
        sections = {cls: parser.add_argument_group(title) for cls, title in groups.items()}
        for name, (cls, _, _) in self.fields.items():
            sections[cls].add_argument(f"--{name}", dest=name, metavar="VALUE", default=argparse.SUPPRESS,
                                       help=self.help_text(name).replace("%", "%%"))

    def from_yaml(self, path: str) -> dict[str, Any]:
        """Read and type-check a YAML config file (unknown keys are an error)."""
        import yaml

        file = Path(path)
        if not file.is_file():
            raise UsageError(f"config file {path!r} does not exist: check the path")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            first = str(err).splitlines()[0]
            raise UsageError(f"config file {path!r} is not valid YAML ({first}): fix the file") from None
        if not isinstance(data, dict):
            raise UsageError(f"config file {path!r} must be a mapping of field: value, got {type(data).__name__}")
        out = {}
        for key, value in data.items():
            if key not in self.fields:
                raise UsageError(f"config file {path!r}: unknown field {key!r}: see `ows train --help` for the fields")
            out[key] = check_value(value, self.fields[key][2], key, path)
        return out

    def from_flags(self, namespace: argparse.Namespace) -> dict[str, Any]:
        return {k: convert(v, self.fields[k][2], k) for k, v in vars(namespace).items() if k in self.fields}

    def split(self, values: dict[str, Any]) -> dict[type, dict[str, Any]]:
        """Values grouped by the dataclass that owns each field."""
        out: dict[type, dict[str, Any]] = {}
        for name, value in values.items():
            owner = self.fields[name][0]
            out.setdefault(owner, {})[name] = value
        return out


def instantiate(cls: type, values: dict[str, Any], builder: Callable[..., Any] | None = None) -> Any:
    """Build ``cls(**values)``; a ``ValueError``/``TypeError`` from it becomes a ``UsageError``."""
    try:
        return (builder or cls)(**values)
    except (ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(first if first.startswith(cls.__name__) else f"{cls.__name__}: {first}") from None
