"""Config: the fields every trainer has (RunConfig), the optimizer aids' fields (OptimizerAidsConfig),
fields whose default comes from a preset, old flag names kept as aliases, and a config read back from
a checkpoint."""
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
    compile: bool = False
    """torch.compile the update's loss (forward and backward) and the acting forward; the optimizer
    steps eager. The first update waits tens of seconds for it. Off by default: on a 2-core CPU it pays
    back its compilation only in long runs of the CNN agents (README, Figures); try it on a GPU."""
    logdir: str = "runs"
    """Folder that holds the run folders ({env}__{algo}__{seed}__{unix_time})."""
    resume: str | None = None
    """Checkpoint to continue from, in its run folder, with its config; flags typed beside it override
    that config (e.g. a larger step budget), except those that fix the networks and optimizers."""
    track: bool = False
    """Also log the scalars and the config to Weights & Biases, as CleanRL's --track does (needs the track
    extra: pip install -e '.[track]'; WANDB_MODE=offline keeps the run on disk, `wandb sync` uploads it).
    TensorBoard logs as always."""
    wandb_project: str = "rlgan"
    """With --track: the W&B project."""
    wandb_entity: str | None = None
    """With --track: the W&B team or user (default: yours)."""
    eval: str | None = None
    """Evaluate this checkpoint (or a run folder: its final.pt, else best.pt, else checkpoint.pt) and print its
    score; no training."""


# Chosen by each invocation, never taken from a checkpoint's config.
PER_INVOCATION = ("resume", "eval", "device", "compile", "capture_video")


def fill_preset(cfg, preset: dict):
    """`cfg` with its None fields taken from `preset`."""
    return dataclasses.replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})

def describe_preset(name: str, preset: dict, cfg) -> str:
    """`preset NAME: a=1, b=2`: what a run takes from its preset. Trainers print it once the run's
    parts are built (so that a refused setting stays the only line a user sees)."""
    taken = ", ".join(f"{flag(k)}={v}" for k, v in preset.items() if getattr(cfg, k) == v and v != ())
    return f"preset {name}: {taken}"


def as_current(config_cls: type, values: dict) -> dict:
    """An earlier version's config values as this version reads them: fields renamed since (the config
    class's `RENAMED`) under their new names, fields added since at the value in its `LEGACY` that means
    what the earlier version did."""
    renamed = getattr(config_cls, "RENAMED", {})
    return {**getattr(config_cls, "LEGACY", {}), **{renamed.get(k, k): v for k, v in values.items()}}


def config_from_checkpoint(config_cls: type, saved: dict, path: str):
    """The config a checkpoint was trained with (fields renamed since, in the config class's `RENAMED`, read
    under their new names; fields added since take the value in its `LEGACY` that means what the earlier
    version did, else their default; fields this version does not know are dropped)."""
    values = saved.get("config")
    if not isinstance(values, dict):
        fail(f"{path} holds no config this version can read")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values = as_current(config_cls, values)
    try:
        cfg = config_cls(**{k: v for k, v in values.items() if k in fields})
    except TypeError as e:
        fail(f"{path} holds a config this version cannot read ({e})")
    for name, value in list(dataclasses.asdict(cfg).items()):
        if isinstance(value, list):  # json/torch round trips make tuples lists
            setattr(cfg, name, tuple(value))
    return cfg


@dataclass
class OptimizerAidsConfig:
    """A trainer's optimizer fields beyond the hyper-parameters: a learning rate that follows a named
    schedule (optim.schedules.from_spec), counted in the trainer's updates, after a warmup; per-module
    multipliers; a switch from Adam to SGD. A trainer that has them builds the schedule after its
    optimizers, steps it after each update, saves it in checkpoints and hands it to BestCheckpoint
    (for plateau), and passes optimizer_switch to optim.build."""

    lr_schedule: str = "constant"
    """Learning-rate schedule over the run's optimizer updates: NAME[:key=value,...], stages joined by
    ' then ' (constant, linear, step, multistep, exponential, cosine, cosine-restarts, cyclic, onecycle,
    warmup-cosine, plateau; e.g. 'warmup-linear:steps=1000 then cosine'; python -m optim --schedules
    lists each one's parameters)."""
    lr_mult: tuple[str, ...] = ()
    """PATTERN=FACTOR ...: parameters of the modules a pattern names (anywhere in the dotted name, or
    fnmatch with * ? [) in a group of their own at FACTOR x the learning rate, e.g. torso=0.1 head=1;
    listed at start."""
    optimizer_switch: str = ""
    """sgd@STEP: Adam until update STEP, then SGD with momentum at the learning rate Adam's steps
    estimate, per tensor (SWATS, Keskar & Socher 2017, as optim.SWATS; a tensor whose estimate is not
    positive then stays with Adam until it is); sgd@auto: when that estimate settles (the paper's
    criterion). Only for Adam; the schedule scales the SGD phase's rate too."""
    warmup_steps: int = 0
    """Updates of linear warmup from 0 up to the learning rate, before --lr-schedule. (A resumed run
    goes on with the schedule's state as saved: a larger budget on --resume stretches the closed-form
    stages, constant, linear, cosine and warmup-cosine, to the new length; torch's recursive schedulers go on from
    the lr they had reached. A learning rate changed on --resume scales the rest of the schedule.)"""


@dataclass
class ReplayConfig:
    """A replay-based trainer's (DQN, Rainbow, SAC) choice of whether checkpoint.pt carries its replay
    memory (agents.off_policy.add_replay)."""

    save_replay: bool = False
    """Put the replay memory (Rainbow's with its priorities) in checkpoint.pt (not final.pt or best.pt), so that
    --resume continues with it where it stopped instead of refilling it for --learning-starts steps of
    the restored policy: the resumed run learns from the transitions the uninterrupted one gathered (its
    envs start new episodes there, which cuts one transition per env). Size: the observations stored,
    e.g. 0.7 GB for 100k Atari frames, 7 GB for 1M; 0.1 GB for 1M MuJoCo HalfCheetah steps."""


def alias(*flags: str):
    """An earlier name of a field's flag, still accepted (`--save-every` for --checkpoint-interval)."""
    return tyro.conf.arg(aliases=flags)
