"""Command-line options from dataclasses: `ila-hf train`, `demo` and `benchmark` take one `--option` per field of
`TrainingConfig`, `DemoConfig` and `BenchmarkOptions`.

The convention is transformers' `HfArgumentParser`: the flag is the field's name (`num_frames` -> `--num-frames`), the
default is the field's, and the field's `metadata` holds `add_argument` keywords (`help`, `choices`, `metavar`,
`nargs`). `HfArgumentParser` itself is not used because importing it imports transformers (about 2 s and some 570
modules, measured), which `ila-hf train --help` must not; nor does it take fixed-length tuples such as `adam_betas`.
Only the standard library is imported here.
"""

import argparse
import dataclasses
import types
import typing
from typing import Any


def option(default: Any, help: str, **argparse_keywords) -> Any:
    """A dataclass field with `default` and its command-line `help` (plus `choices`, `metavar`, ...) as metadata."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_keywords})


def _without_none(hint: Any) -> Any:
    """`X` of `X | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(option for option in typing.get_args(hint) if option is not type(None))
    return hint


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, dataclass_type: type, exclude: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """
    Add one `--option` per field of `dataclass_type` (but those in `exclude`) to `parser`: `bool` fields as `--x` /
    `--no-x`, `list` and `tuple[X, ...]` fields as one or more values, `tuple[X, X]` as exactly two; a field without
    a default is a required option. Help texts end with the default unless they name it themselves.
    """
    hints = typing.get_type_hints(dataclass_type)
    for config_field in dataclasses.fields(dataclass_type):
        if config_field.name in exclude:
            continue
        kind = _without_none(hints[config_field.name])
        keywords = dict(config_field.metadata)
        if config_field.default is not dataclasses.MISSING:
            keywords["default"] = config_field.default
        elif config_field.default_factory is not dataclasses.MISSING:
            keywords["default"] = config_field.default_factory()
        else:
            keywords["required"] = True
        if kind is bool:
            keywords["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) in (list, tuple):
            item_types = typing.get_args(kind)
            fixed_length = typing.get_origin(kind) is tuple and Ellipsis not in item_types
            keywords.setdefault("nargs", len(item_types) if fixed_length else "+")
            keywords["type"] = str if item_types[0] is Any else item_types[0]
        else:
            keywords["type"] = kind
        if "default" in keywords and "(default" not in keywords.get("help", ""):
            keywords["help"] = f"{keywords.get('help', '')} (default: %(default)s)".lstrip()
        parser.add_argument("--" + config_field.name.replace("_", "-"), **keywords)
    return parser


def dataclass_from_args(dataclass_type: type, args: argparse.Namespace, **values) -> Any:
    """The `dataclass_type` of arguments parsed by a parser set up with `add_dataclass_arguments`; `values` add the
    excluded fields."""
    hints = typing.get_type_hints(dataclass_type)
    for config_field in dataclasses.fields(dataclass_type):
        if config_field.name in values or not hasattr(args, config_field.name):
            continue
        value = getattr(args, config_field.name)
        if isinstance(value, list) and typing.get_origin(_without_none(hints[config_field.name])) is tuple:
            value = tuple(value)
        values[config_field.name] = value
    return dataclass_type(**values)


__all__ = ["add_dataclass_arguments", "dataclass_from_args", "option"]
