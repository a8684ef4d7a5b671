"""Command line from a config dataclass: tyro turns each field and its docstring into a `--flag`."""
from __future__ import annotations

import dataclasses
import sys
from typing import Sequence, TypeVar

import tyro

T = TypeVar("T")


def parse(config_cls: type[T], args: Sequence[str] | None = None, prog: str | None = None,
          description: str | None = None, default: T | None = None) -> T:
    """Parse `args` (default: sys.argv[1:]) into `config_cls`. `--help` lists every field with its default.

    `default`, an instance, replaces the class's defaults (e.g. a checkpoint's config, so that only the
    flags typed override it). Booleans become `--flag` / `--no-flag`. A bad value exits with tyro's
    message and code 2.
    """
    return tyro.cli(
        config_cls,
        args=list(sys.argv[1:] if args is None else args),
        prog=prog,
        description=description,
        default=default,
    )


def as_dict(config) -> dict:
    return dataclasses.asdict(config)


def markdown_table(config) -> str:
    """The config as a markdown table, for TensorBoard's text tab."""
    rows = "\n".join(f"|{k}|{v}|" for k, v in as_dict(config).items())
    return "|param|value|\n|-|-|\n" + rows
