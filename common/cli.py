"""Command line from a config dataclass: tyro turns each field and its docstring into a `--flag`."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sys
import types
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
    unknown = _unknown_flag(config_cls, args) or _repeated_list_flag(config_cls, args)
    if unknown:
        fail(unknown + (f"; see {prog} --help" if prog else "; see --help"), code=2)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(config_cls, args=args, prog=prog, description=description, default=default)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        fail(_one_line(captured.getvalue(), prog), code=2)


# What users of CleanRL, Stable-Baselines3 and RL Zoo type for our flags: a typo of one of these is
# pointed at the flag that does what they meant, which string similarity alone does not find (--lr is
# closer to --lr-schedule than to --learning-rate).
_SYNONYMS = {
    "learning-rate": ("lr", "learning-rate", "step-size", "alpha-lr"),
    "total-timesteps": ("steps", "timesteps", "total-steps", "n-timesteps", "num-timesteps", "max-steps",
                        "num-steps-total", "iterations"),
    "env": ("env-id", "gym-id", "env-name", "game", "environment", "task"),
    "num-envs": ("n-envs", "num-env", "envs", "n-env", "num-workers"),
    "batch-size": ("batch", "bs", "minibatch-size", "mini-batch-size"),
    "update-epochs": ("epochs", "n-epochs", "ppo-epochs", "num-epochs"),
    "device": ("cuda", "gpu", "cpu", "no-cuda"),
    "buffer-size": ("buffer", "replay-size", "memory-size", "replay-buffer-size", "capacity"),
    "logdir": ("log-dir", "save-dir", "output-dir", "tensorboard-log", "run-dir"),
    "num-steps": ("n-steps", "rollout-length", "horizon"),
    "learning-starts": ("warmup", "warmup-steps", "start-steps", "learning-start"),
    "seed": ("seeds", "random-seed"),
    "gamma": ("discount",),
    "target-network-frequency": ("target-update", "target-update-interval", "target-update-freq"),
    "eval-episodes": ("n-eval-episodes", "eval-episode"),
}


def _aliases(config_cls) -> set[str]:
    """The earlier names that fields still accept (common.config.alias: tyro's `aliases`), without dashes."""
    hints = typing.get_type_hints(config_cls, include_extras=True)
    return {a.lstrip("-") for hint in hints.values() for meta in typing.get_args(hint)[1:]
            for a in (getattr(meta, "aliases", None) or ()) if isinstance(a, str)}


def _unknown_flag(config_cls, args: list[str]) -> str | None:
    """`unknown flag --lr (did you mean --learning-rate?)` for the first `--flag` that no field has, with
    the flags it most likely meant: the synonyms above, then close spellings, then flags that contain
    it; None when every flag is known (tyro then judges the values). Configs with nested dataclasses
    are left to tyro."""
    import difflib

    fields = dataclasses.fields(config_cls)
    hints = typing.get_type_hints(config_cls)
    if any(dataclasses.is_dataclass(hints.get(f.name)) for f in fields):
        return None
    names = {f.name.replace("_", "-") for f in fields}
    known = names | {f"no-{n}" for n in names} | {"help"} | _aliases(config_cls)
    for arg in args:
        if arg == "--":
            return None  # what follows is positional
        if not arg.startswith("--"):
            continue
        flag = arg[2:].split("=", 1)[0].replace("_", "-")
        if flag in known:
            continue
        meant = [n for n, said in _SYNONYMS.items() if flag in said and n in names]
        pool = sorted(known - {"help"}) if flag.startswith("no-") else sorted(names)
        meant += [m for m in difflib.get_close_matches(flag, pool, n=3, cutoff=0.7) if m not in meant]
        # --lr: the flags with an `lr` part (--g-lr, --lr-schedule); --epochs: --update-epochs
        meant += [n for n in sorted(names) if (flag in n.split("-") or (len(flag) >= 4 and flag in n))
                  and n not in meant]
        said = ", ".join(f"--{m}" for m in meant[:4])
        return f"unknown flag --{flag}" + (f" (did you mean {said}?)" if said else "")
    return None


def _repeated_list_flag(config_cls, args: list[str]) -> str | None:
    """`--set given twice: ...` for a list flag typed more than once: tyro alone would keep the last
    occurrence's values and drop the others without a word (`--set a=1 --set b=2` runs b=2 only)."""
    hints = typing.get_type_hints(config_cls)

    def is_sequence(hint) -> bool:
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(inner) == 1:  # Optional[X], X | None
            hint = inner[0]
        return typing.get_origin(hint) in (tuple, list)

    sequences = {f.name.replace("_", "-") for f in dataclasses.fields(config_cls) if is_sequence(hints.get(f.name))}
    seen = set()
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("_", "-")
            if name in sequences:
                if name in seen:
                    return f"--{name} given twice: give all its values after one --{name} (--{name} A B)"
                seen.add(name)
    return None


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
