"""Command line from a config dataclass: tyro turns each field and its docstring into a `--flag`."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sys
import typing
from typing import Sequence, TypeVar

import tyro

from common.errors import fail

T = TypeVar("T")

# 1e6, 2.5E+5: integral values users type for step counts, which int() refuses.
_SCIENTIFIC = re.compile(r"[+-]?\d+(\.\d*)?[eE][+]?\d+")


def parse(config_cls: type[T], args: Sequence[str] | None = None, prog: str | None = None,
          description: str | None = None, default: T | None = None) -> T:
    """Parse `args` (default: sys.argv[1:]) into `config_cls`. `--help` lists every field with its default.

    `default`, an instance, replaces the class's defaults (e.g. a checkpoint's config, so that only the
    flags typed override it). Booleans become `--flag` / `--no-flag`. Integer fields also take
    integral scientific notation (`--total-timesteps 1e6`). A bad value is one line on stderr, exit 2
    (tyro's boxed message is folded into it).
    """
    args = _integral_scientific(config_cls, list(sys.argv[1:] if args is None else args))
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(config_cls, args=args, prog=prog, description=description, default=default)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        fail(_one_line(captured.getvalue(), prog), code=2)


def _integral_scientific(config_cls, args: list[str]) -> list[str]:
    """Rewrite `--int-field 1e6` (or `--int_field=1e6`) as `--int-field 1000000`; other values are
    left for tyro to judge."""
    hints = typing.get_type_hints(config_cls)
    int_flags = {f.name.replace("_", "-") for f in dataclasses.fields(config_cls)
                 if hints.get(f.name) in (int, typing.Optional[int])}

    def is_int_flag(token: str) -> bool:
        return token.startswith("--") and token[2:].replace("_", "-") in int_flags

    def integral(value: str) -> str:
        if _SCIENTIFIC.fullmatch(value) and float(value).is_integer():
            return str(int(float(value)))
        return value

    out = []
    for arg in args:
        if arg.startswith("--") and "=" in arg and is_int_flag(arg.split("=", 1)[0]):
            name, value = arg.split("=", 1)
            arg = f"{name}={integral(value)}"
        elif out and is_int_flag(out[-1]):
            arg = integral(arg)
        out.append(arg)
    return out


def _one_line(message: str, prog: str | None) -> str:
    """tyro's framed error as one sentence: the box's text without borders, markup or help."""
    lines = []
    for raw in message.splitlines():
        if raw.strip().startswith("╭"):  # the box's title ("Value error"), said by the text below
            continue
        text = raw.strip().strip("│╭╮╰╯─ ").strip()
        if not text or set(text) <= set("─━"):
            continue
        if text.startswith(("Argument helptext", "For full helptext", "Usage:", "usage:")):
            break
        lines.append(text)
    head = " ".join(lines) if lines else "invalid command line"
    head = re.sub(r"\[/?[a-z ]+\]", "", head)  # rich markup: [bold]...[/bold]
    # `int | None` fields: only the int alternative's complaint is worth reading
    head = re.sub(r"no type matching \{None\}\|.*? could be instantiated from \[.*?\]\. Got errors: "
                  r"- <class 'NoneType'>: .*? - [^:]+: ", "", head)
    head = re.sub(r"\s+", " ", head).strip().rstrip(".")
    hint = f"; see {prog} --help" if prog else "; see --help"
    return head[:400] + hint


def as_dict(config) -> dict:
    return dataclasses.asdict(config)


def markdown_table(config) -> str:
    """The config as a markdown table, for TensorBoard's text tab."""
    rows = "\n".join(f"|{k}|{v}|" for k, v in as_dict(config).items())
    return "|param|value|\n|-|-|\n" + rows
