"""Command-line options derived from :class:`~tamegrad.train.config.TrainConfig`'s fields.

Every field becomes an option (``batch_size`` -> ``--batch-size``), typed from its annotation:
``int``/``float``/``str`` values, ``bool`` as ``--x/--no-x``, tuples as several values, dicts as a
repeatable ``KEY=VALUE`` option. Choices come from the field's ``metadata["choices"]``, else from
a ``Literal`` annotation, else from the config module's ``<FIELD>S`` constant (``SCHEDULES``);
they are shown in the help and checked by ``TrainConfig.validate``. Help text is the field's
``metadata["help"]``, else its entry in the ``TrainConfig`` docstring. A field added to
``TrainConfig`` therefore appears here without any change. Left-out options are ``None`` in the
parsed namespace, so :func:`given_fields` returns exactly what was typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import tamegrad.train.config as config_module
from tamegrad.train.config import TrainConfig

from ._errors import CLIError
from ._parse import parse_kv

#: Short names of the dict-valued fields (everything else is ``--<field-with-dashes>``).
_OPTION_NAMES = {"optimizer_kwargs": "--opt", "model_options": "--model-opt",
                 "dataset_options": "--dataset-opt"}
#: Where the valid values of a name field are listed.
_LISTED = {"dataset": "datasets", "model": "models", "optimizer": "optimizers"}
#: A docstring entry that starts with the default value ("0.1", '"sgd"; ...').
_DEFAULT_FIRST = re.compile(r'^("[^"]*"|-?[\d.]+(e-?\d+)?|None|True|False)(;|$)')


@dataclass(frozen=True)
class ConfigOption:
    """One ``TrainConfig`` field as a command-line option."""

    field: str
    flag: str
    kind: str  # "value" | "bool" | "list" | "dict"
    type: Any
    choices: tuple[Any, ...] | None
    help: str

    @property
    def dest(self) -> str:
        return self.field


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _docstring_help() -> dict[str, str]:
    """``field -> text`` from the ``TrainConfig`` docstring's "``name`` (text)" entries (also
    "``a`` / ``b`` (text)", which documents both)."""
    doc = " ".join((TrainConfig.__doc__ or "").split())
    found: dict[str, str] = {}
    for m in re.finditer(r"((?:``\w+`` / )*)``(\w+)`` \(((?:[^()]|\([^()]*\))*)\)", doc):
        for name in [*re.findall(r"``(\w+)``", m.group(1)), m.group(2)]:
            found.setdefault(name, m.group(3).replace("``", ""))
    return found


def config_options(exclude: frozenset[str] = frozenset()) -> list[ConfigOption]:
    """The options of every ``TrainConfig`` field not in ``exclude``, in field order."""
    hints = typing.get_type_hints(TrainConfig)
    docs = _docstring_help()
    options = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in exclude:
            continue
        tp = _strip_optional(hints[f.name])
        origin = typing.get_origin(tp)
        choices = f.metadata.get("choices")
        if choices is None and origin is Literal:
            choices = typing.get_args(tp)
        if choices is None:
            choices = getattr(config_module, f"{f.name.upper()}S", None)
        if origin is dict:
            kind, typ = "dict", str
        elif tp is bool:
            kind, typ = "bool", None
        elif origin in (tuple, list):
            kind, typ = "list", (typing.get_args(tp) or (str,))[0]
        elif tp in (int, float, str):
            kind, typ = "value", tp
        elif origin is Literal:
            kind, typ = "value", type(typing.get_args(tp)[0])
        else:
            kind, typ = "value", str
        text = str(f.metadata.get("help") or docs.get(f.name) or f"TrainConfig.{f.name}")
        if _DEFAULT_FIRST.match(text):
            text = f"default {text}"
        if choices and not all(str(c) in text for c in choices):
            text += f"; one of {', '.join(map(str, choices))}"
        if f.name in _LISTED:
            text += f"; see `tamegrad list {_LISTED[f.name]}`"
        flag = _OPTION_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        options.append(ConfigOption(f.name, flag, kind, typ,
                                    tuple(choices) if choices else None, text))
    return options


def add_config_options(
    parser: argparse.ArgumentParser, exclude: frozenset[str] = frozenset(),
    title: str = "run configuration (TrainConfig fields)",
) -> None:
    """Add one option per ``TrainConfig`` field (except ``exclude``) to ``parser``."""
    group = parser.add_argument_group(title)
    for opt in config_options(exclude):
        help_text = opt.help.replace("%", "%%")
        if opt.kind == "dict":
            group.add_argument(opt.flag, dest=opt.dest, action="append", metavar="KEY=VALUE",
                               help=f"{help_text} (Python literal values, repeatable)")
        elif opt.kind == "bool":
            group.add_argument(opt.flag, dest=opt.dest, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif opt.kind == "list":
            group.add_argument(opt.flag, dest=opt.dest, nargs="+", type=opt.type, help=help_text)
        else:
            metavar = "{" + ",".join(map(str, opt.choices)) + "}" if opt.choices else None
            group.add_argument(opt.flag, dest=opt.dest, type=opt.type, metavar=metavar,
                               help=help_text)


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """``TrainConfig`` fields given on the command line (options left out are not included)."""
    given: dict[str, Any] = {}
    for opt in config_options():
        value = getattr(args, opt.dest, None)
        if value is None:
            continue
        if opt.kind == "dict":
            value = dict(parse_kv(item) for item in value)
        elif opt.kind == "list":
            value = tuple(value)
        given[opt.field] = value
    return given


def flag_of(field_name: str) -> str:
    """The option that sets ``field_name``."""
    return _OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def build_config(fields: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A validated ``TrainConfig``: ``base`` (or the defaults) with ``fields`` changed."""
    try:
        if base is None:
            return TrainConfig(**fields).validate()
        return dataclasses.replace(base, **fields).validate()
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value
