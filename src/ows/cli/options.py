"""Options of every ``ows`` command from dataclasses: YAML file first, ``--field value`` flags override it.

Every field keeps its dataclass name (snake_case) in YAML and as a flag; older spellings stay as
aliases (``--num-samples`` for ``--calibration_samples``). A YAML file may hold the fields of any ows
command: each command takes the ones it knows and ignores the others, so one file serves ``ows
train``, ``ows analyze``, ``ows memory`` and ``ows eval``; a key no command knows is an error. Values
from YAML are type-checked against the field's annotation, values from flags are converted with it;
both fail as one ``UsageError`` line that names the field as the user wrote it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from .common import ArgumentParser, UsageError, did_you_mean
from .types import FALSE, TRUE, article, check_value, convert, simple, type_name

logger = logging.getLogger("ows.cli")

YAML_SUFFIXES = (".yaml", ".yml")
# An alias: old flag -> (field, constant). A constant alias takes no value (``--gradient-checkpointing``).
Aliases = dict[str, tuple[str, Any]]


class FieldSet:
    """The fields a command takes: ``sections`` of (dataclass, help title, field names or None for all).

    A name taken by an earlier section is not taken again from a later one.
    """

    def __init__(self, sections: list[tuple[type, str, Iterable[str] | None]]) -> None:
        import typing

        self.fields: dict[str, tuple[type, dataclasses.Field, Any]] = {}
        self.titles: dict[type, str] = {}
        for cls, title, names in sections:
            self.titles.setdefault(cls, title)
            wanted = set(names) if names is not None else None
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if f.init and f.name not in self.fields and not f.name.startswith("_") and (
                        wanted is None or f.name in wanted):
                    self.fields[f.name] = (cls, f, hints.get(f.name, str))

    def help_text(self, name: str) -> str:
        cls, f, tp = self.fields[name]
        text = " ".join(str(f.metadata.get("help", "")).split())
        default = "" if f.default is dataclasses.MISSING or f.default is None else f"; default {f.default}"
        return f"{text} [{type_name(tp)}{default}; {cls.__name__}]"

    def ecosystem(self) -> dict[str, str]:
        """The TRL / LLaMA-Factory names (``ALIASES``) of this command's fields: alias -> field."""
        from ..recipe.arguments import ALIASES

        return {alias: name for alias, name in ALIASES.items() if name in self.fields}

    def add_to(self, parser: argparse.ArgumentParser, aliases: Aliases) -> None:
        """One ``--name VALUE`` flag per field, grouped by section; booleans may stand alone (= true)."""
        by_field: dict[str, list[str]] = {}
        for flag, (name, constant) in aliases.items():
            if constant is None:
                by_field.setdefault(name, []).append(flag)
        sections = {cls: parser.add_argument_group(title) for cls, title in self.titles.items()}
        for name, (cls, f, tp) in self.fields.items():
            _, _, is_list = simple(tp)
            flags = [f"--{name}", *by_field.get(name, [])]
            kwargs: dict[str, Any] = dict(dest=name, metavar="VALUE", default=argparse.SUPPRESS,
                                          help=self.help_text(name).replace("%", "%%"))
            if is_list:  # repeatable, comma-separated; a field may take several words (--compare a.json b.json)
                kwargs.update(action="extend", nargs=f.metadata.get("nargs", 1))
            sections[cls].add_argument(*flags, **kwargs)
            for alias in [a for a, n in self.ecosystem().items() if n == name]:  # own dest: a disagreement is seen
                sections[cls].add_argument(f"--{alias}", **dict(kwargs, dest=f"_alias_{alias}",
                                                                help=f"the same as --{name} (TRL / LLaMA-Factory)"))
        for flag, (name, constant) in aliases.items():
            if constant is not None and name in self.fields:
                parser.add_argument(flag, dest=f"_const_{name}", action="store_const", const=constant,
                                    default=argparse.SUPPRESS, help=f"the same as --{name} {constant}")

    def from_yaml(self, path: str) -> tuple[dict[str, Any], list[str], dict[str, str]]:
        """``(values of this command's fields, other keys, the key each field was given as)`` of a YAML config
        file, type-checked; a TRL / LLaMA-Factory name counts as its field (a disagreement is a ``UsageError``)."""
        data = read_yaml(path)
        out, other, keys = {}, [], {}
        for key, value in data.items():
            name = self.ecosystem().get(key, key)
            if name not in self.fields:
                other.append(key)
                continue
            value = check_value(value, self.fields[name][2], key, path)
            if name in out and out[name] != value:
                raise UsageError(f"config file {path!r}: {keys[name]}={out[name]!r} and {key}={value!r} name the "
                                 f"same setting ({name}) with different values: keep one")
            out[name], keys[name] = value, key
        return out, other, keys

    def bool_flags(self, aliases: Aliases) -> set[str]:
        """The flags of boolean fields (their aliases included), which may stand alone for true."""
        names = {n for n, (_, _, tp) in self.fields.items() if simple(tp)[0] is bool and not simple(tp)[2]}
        return {f"--{n}" for n in names} | {flag for flag, (n, c) in aliases.items() if n in names and c is None}

    def from_flags(self, namespace: argparse.Namespace, spelled: dict[str, str]) -> dict[str, Any]:
        """Values given as flags; ``spelled`` gets the flag each field was given with."""
        values: dict[str, Any] = {}
        given: dict[str, str] = {}
        items = sorted(vars(namespace).items(), key=lambda item: item[0].startswith("_alias_"))  # own names first
        for key, value in items:
            if key.startswith("_const_"):
                name = key[len("_const_"):]
                values.setdefault(name, value)
                continue
            alias = key[len("_alias_"):] if key.startswith("_alias_") else None
            name = self.ecosystem()[alias] if alias else key
            if name not in self.fields:
                continue
            flag = f"--{alias}" if alias else spelled.get(key, f"--{key}")
            flag = f"--{key}" if not alias and flag[2:] in self.ecosystem() else flag  # this value came as --key
            if isinstance(value, list):
                parts = [convert(part, self.fields[name][2], flag) for part in value]
                value = None if parts == [None] else [item for part in parts if part for item in part]
            else:
                value = convert(value, self.fields[name][2], flag)
            if name in given and values[name] != value:
                raise UsageError(f"{given[name]} {values[name]!r} and {flag} {value!r} name the same setting ({name}) "
                                 "with different values: give one of them")
            values[name], given[name] = value, flag
        return values

    def split(self, values: dict[str, Any]) -> dict[type, dict[str, Any]]:
        """Values grouped by the dataclass that owns each field."""
        out: dict[type, dict[str, Any]] = {}
        for name, value in values.items():
            owner = self.fields[name][0]
            out.setdefault(owner, {})[name] = value
        return out


class _UniqueKeyLoader:
    """A yaml SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    @staticmethod
    def make() -> Any:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`, merged by SafeLoader itself
                    continue
                key = loader.construct_object(key_node, deep=deep)
                if key in seen:
                    raise UsageError(f"key {key!r} appears twice (lines {seen[key]} and {key_node.start_mark.line + 1}): "
                                     "keep one")
                seen[key] = key_node.start_mark.line + 1
            return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

        Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
        return Loader


def read_yaml(path: str) -> dict[str, Any]:
    """The mapping in a YAML config file; a missing, unreadable or non-mapping file is a ``UsageError``."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"config file {path!r} does not exist: check the path")
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader.make()) or {}
    except UsageError as err:
        raise UsageError(f"config file {path!r}: {err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0]
        raise UsageError(f"config file {path!r} is not valid YAML ({first}): fix the file") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path!r} must be a mapping of field: value, got {type(data).__name__}")
    return data


def known_field(name: str) -> bool:
    """Whether ``name`` is a field of any ows command. ``TrainingArguments``' fields come from a list kept
    here (so ``ows memory CONFIG.yaml`` loads no torch); only a name not in it is looked up in transformers."""
    if name in _ows_names():
        return True
    from transformers import TrainingArguments

    return name in {f.name for f in dataclasses.fields(TrainingArguments)}


def _ows_names() -> set[str]:
    """Every field name of every ows command, their TRL / LLaMA-Factory aliases and TrainingArguments' fields."""
    from ..config import OWSConfig
    from ..recipe.arguments import ALIASES
    from .arguments import TRAINING_ARGUMENT_FIELDS, AnalyzeArguments, EvalArguments, MemoryArguments, ScriptArguments

    classes = (ScriptArguments, OWSConfig, AnalyzeArguments, MemoryArguments, EvalArguments)
    return {f.name for cls in classes for f in dataclasses.fields(cls)} | set(ALIASES) | TRAINING_ARGUMENT_FIELDS


@dataclasses.dataclass
class Parsed:
    """One command line: values per owning dataclass, the config file and how each field was given."""

    groups: dict[type, dict[str, Any]]
    config_file: str | None
    spelled: dict[str, str]

    def values(self, cls: type) -> dict[str, Any]:
        """The values given for the fields of ``cls``."""
        return dict(self.groups.get(cls, {}))

    def spelling(self, name: str) -> str:
        """How the user gave field ``name`` (``--seq-len``, ``config.yaml: name``), for error messages."""
        return self.spelled.get(name, f"--{name}")


def _spellings(argv: list[str], fields: FieldSet, aliases: Aliases) -> dict[str, str]:
    spelled = {}
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in aliases:
            spelled[aliases[flag][0]] = flag
        elif flag.startswith("--") and flag[2:] in fields.fields:
            spelled[flag[2:]] = flag
        elif flag.startswith("--") and flag[2:] in fields.ecosystem():
            spelled[fields.ecosystem()[flag[2:]]] = flag
    return spelled


def parse_command(parser: ArgumentParser, fields: FieldSet, argv: list[str], *, aliases: Aliases | None = None,
                  takes_model: bool = True,
                  defaults_without_file: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Parsed | int:
    """Parse ``[CONFIG.yaml] [MODEL] [--field value ...]`` for a command; an int is argparse's exit code (--help).

    ``defaults_without_file(flag values)`` gives the values of fields that no flag set, when no config
    file is given (the demo of ``ows train``, the quick estimate of ``ows memory``).
    """
    aliases = aliases or {}
    parser.add_argument("positional", nargs="*", metavar="CONFIG.yaml" + (" MODEL" if takes_model else ""),
                        help="a YAML file of fields (any ows command's; the ones this command does not take are "
                             "ignored)" + ("; MODEL is the same as --model" if takes_model else ""))
    fields.add_to(parser, aliases)
    argv = _explicit_booleans(argv, fields.bool_flags(aliases))
    try:
        namespace = parser.parse_intermixed_args(argv)
    except SystemExit as stop:  # --help
        return int(stop.code or 0)
    config_file, model = _positionals(namespace.positional, takes_model)
    del namespace.positional
    spelled = _spellings(argv, fields, aliases)
    values: dict[str, Any] = {}
    if config_file is not None:
        values, other, keys = fields.from_yaml(config_file)
        spelled.update({k: f"{config_file}: {keys[k]}" for k in values if k not in spelled})
        unknown = next((k for k in other if not known_field(k)), None)
        if unknown is not None:
            hint = did_you_mean(unknown, _ows_names()) or ": see `ows train --help` for the fields"
            raise UsageError(f"config file {config_file!r}: unknown field {unknown!r}{hint}")
        if other:
            logger.info("config file %s: fields of other ows commands, not used by %s: %s", config_file, parser.prog,
                        ", ".join(other))
    flags = fields.from_flags(namespace, spelled)
    if model is not None and "model" not in flags:
        flags["model"], spelled["model"] = model, "MODEL"
    if config_file is None and defaults_without_file is not None:
        values.update({k: v for k, v in defaults_without_file(flags).items() if k in fields.fields})
    values.update(flags)
    return Parsed(fields.split(values), config_file, spelled)


def _explicit_booleans(argv: list[str], flags: set[str]) -> list[str]:
    """``argv`` with ``true`` after every boolean flag that stands alone (not followed by a boolean word), so that
    ``--json MODEL`` keeps MODEL as the positional it is."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1].strip().lower() if i + 1 < len(argv) else None
        if arg in flags and following not in TRUE | FALSE:
            out.append("true")
    return out


def _positionals(items: list[str], takes_model: bool) -> tuple[str | None, str | None]:
    if not takes_model:  # the command's one positional is its config file, whatever its name
        if len(items) > 1:
            raise UsageError(f"too many positional arguments {items!r}: give one config file; other settings as "
                             "--field value")
        return (items[0] if items else None), None
    config = [p for p in items if p.lower().endswith(YAML_SUFFIXES)]
    rest = [p for p in items if p not in config]
    if len(config) > 1 or len(rest) > (1 if takes_model else 0):
        what = "one YAML config file" + (" and one MODEL" if takes_model else "")
        raise UsageError(f"too many positional arguments {items!r}: give at most {what}; other settings as --field value")
    return (config[0] if config else None), (rest[0] if rest else None)


_FIELD_AT_START = re.compile(r"^(?:[A-Za-z]+[.:] ?)?([a-z_][a-z0-9_]*)=")


def in_user_terms(message: str, parsed: Parsed) -> str:
    """``message`` with a leading ``field=value`` (or ``Class.field=value``) rewritten as the user gave it."""
    match = _FIELD_AT_START.match(message)
    if match is None or match.group(1) not in parsed.spelled:
        return message
    spelling = parsed.spelling(match.group(1))
    joiner = "=" if ":" in spelling else " "
    return f"{spelling}{joiner}{message[match.end():]}"


def instantiate(cls: type, values: dict[str, Any], parsed: Parsed | None = None,
                builder: Callable[..., Any] | None = None) -> Any:
    """Build ``cls(**values)``; a ``ValueError``/``TypeError`` from it becomes a ``UsageError`` in the user's terms."""
    try:
        return (builder or cls)(**values)
    except (ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if parsed is not None:
            translated = in_user_terms(first, parsed)
            if translated != first:
                raise UsageError(translated) from None
        raise UsageError(first if first.startswith(cls.__name__) else f"{cls.__name__}: {first}") from None


__all__ = ["Aliases", "FieldSet", "Parsed", "UsageError", "article", "in_user_terms", "instantiate", "parse_command",
           "read_yaml"]
