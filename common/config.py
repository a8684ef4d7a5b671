"""Config: the fields every trainer has, fields whose default comes from a preset, and a config read
back from a checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Optional

import tyro

from common.checks import between, flag
from common.errors import fail
from common.seeding import MAX_SEED

# Config fields whose default comes from the trainer's preset (None until `fill_preset`); `--help`
# says so instead of showing "None".
_FROM_PRESET = "(default: preset)"

PresetInt = Annotated[Optional[int], tyro.conf.arg(metavar="INT", help_behavior_hint=_FROM_PRESET)]

PresetFloat = Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT", help_behavior_hint=_FROM_PRESET)]

PresetStr = Annotated[Optional[str], tyro.conf.arg(metavar="STR", help_behavior_hint=_FROM_PRESET)]

PresetInts = Annotated[Optional[tuple[int, ...]],
                       tyro.conf.arg(metavar="INT [INT ...]", help_behavior_hint=_FROM_PRESET)]


@dataclass
class RunConfig:
    """Fields every trainer has: seed, device, where runs go, and which checkpoint to start from."""

    seed: Annotated[int, between(0, MAX_SEED, "the range ALE's C++ side accepts")] = 1
    """Seed of torch, numpy, python and the envs (0 to 2,147,483,647)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    logdir: str = "runs"
    """Folder that holds the run folders ({env}__{algo}__{seed}__{unix_time})."""
    resume: str | None = None
    """Checkpoint to continue from, in its run folder, with its config; flags typed beside it override
    that config (e.g. a larger step budget), except those that fix the networks and optimizers."""
    eval: str | None = None
    """Evaluate this checkpoint and print its score; no training."""


# Chosen by each invocation, never taken from a checkpoint's config.
PER_INVOCATION = ("resume", "eval", "device", "capture_video")


def fill_preset(cfg, preset: dict):
    """`cfg` with its None fields taken from `preset`."""
    return dataclasses.replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})

def describe_preset(name: str, preset: dict, cfg) -> str:
    """`preset NAME: a=1, b=2`: what a run takes from its preset. Trainers print it once the run's
    parts are built (so that a refused setting stays the only line a user sees)."""
    taken = ", ".join(f"{flag(k)}={v}" for k, v in preset.items() if getattr(cfg, k) == v and v != ())
    return f"preset {name}: {taken}"

def config_from_checkpoint(config_cls: type, saved: dict, path: str):
    """The config a checkpoint was trained with (fields this version does not know are dropped)."""
    values = saved.get("config")
    if not isinstance(values, dict):
        fail(f"{path} holds no config this version can read")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    try:
        cfg = config_cls(**{k: v for k, v in values.items() if k in fields})
    except TypeError as e:
        fail(f"{path} holds a config this version cannot read ({e})")
    for name, value in list(dataclasses.asdict(cfg).items()):
        if isinstance(value, list):  # json/torch round trips make tuples lists
            setattr(cfg, name, tuple(value))
    return cfg
