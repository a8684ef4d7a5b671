"""The trainers a study can run, and how to drive each: its module, the config fields that name its
environment, its budget and its evaluation interval, the tag that scores a run, and which fields
an optimizer choice sets."""
from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass

from common.errors import fail
from common.seeding import MAX_SEED

MAX_SEEDS = 10_000  # runs per setting: each seed is a whole training run


@dataclass(frozen=True)
class Agent:
    module: str
    env_field: str = "env"
    budget_field: str = "total_timesteps"
    eval_field: str = "eval_interval"
    """Steps between evaluations during training (DCGAN: between sample grids and mode metrics)."""
    metric: str = "eval/episodic_return"
    """The tag that scores a run: the trainer's evaluation with exploration off, during training and
    of the final weights. The DCGAN trainer's on 2D mixtures: modes covered (of 8 or 25)."""
    image_metric: str | None = None
    """The score on image datasets, where it differs (DCGAN: Inception Score, needs rlgan[metrics])."""
    image_eval_field: str | None = None
    """The steps between those scores on image datasets (DCGAN: fidelity_interval)."""
    optimizer_fields: tuple[str, ...] = ("optimizer",)
    """Config fields one optimizer choice sets (the DCGAN trainer's GENERATOR/DISCRIMINATOR pair sets two)."""

    def trainer(self):
        """The module's lifecycle.Trainer (imported on demand: it pulls in torch and gymnasium)."""
        return importlib.import_module(self.module).TRAINER

    def fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.trainer().config_cls)}

    def bool_fields(self) -> set[str]:
        """Fields typed on the command line as --name / --no-name."""
        hints = typing.get_type_hints(self.trainer().config_cls)
        return {name for name, hint in hints.items() if hint is bool}

    def eval_field_for(self, env: str) -> str:
        return self.image_eval_field if self.image_eval_field and env not in ("ring8", "grid25") else self.eval_field

    def metric_for(self, env: str) -> str:
        return self.image_metric if self.image_metric and env not in ("ring8", "grid25") else self.metric


AGENTS = {
    "dqn": Agent("agents.dqn"),
    "rainbow": Agent("agents.rainbow"),
    "ppo": Agent("agents.ppo"),
    "sac": Agent("agents.sac"),
    "dcgan": Agent("gans.dcgan", env_field="dataset", budget_field="steps", eval_field="sample_interval",
                   metric="metrics/modes", image_metric="metrics/is", image_eval_field="fidelity_interval",
                   optimizer_fields=("g_optimizer", "d_optimizer")),
}
NAMES = tuple(AGENTS)

# Fields a study sets itself: a --set may not.
STUDY_FIELDS = ("seed", "logdir", "resume", "eval", "device")


TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def flags(values: dict[str, str], bools: set[str] = frozenset()) -> list[str]:
    """Config fields as command-line flags: a value with spaces ("64 64") is several values of a tuple
    field; a field in `bools` is --name for true and --no-name for false."""
    out = []
    for k, v in values.items():
        name = k.replace("_", "-")
        if k in bools:
            word = str(v).strip().lower()
            if word not in TRUE + FALSE:
                raise ValueError(f"{k}={v}: a yes/no field takes true or false")
            out.append(f"--{name}" if word in TRUE else f"--no-{name}")
        else:
            out += [f"--{name}", *str(v).split()]
    return out


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies (killed with SIGKILL, say), so that no trainer or
    worker outlives the study that started it and races a restarted one. Linux only; elsewhere nothing."""
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def seed_list(spec: tuple[str, ...] | int) -> list[int]:
    """--seeds: one whole number N is seeds 1..N; anything else names the seeds (a list, 3,7,11, ranges 4-6,
    or one seed with a trailing comma). A UserError for anything else."""
    tokens = [spec] if isinstance(spec, int) else [t for part in spec for t in str(part).split(",")]
    if isinstance(spec, int) or (len(spec) == 1 and "," not in spec[0] and "-" not in spec[0].lstrip("-")):
        try:
            count = int(tokens[0])
        except ValueError:
            fail(f"--seeds {spec[0]!r}: a count (5), a list (3 7 11 or 3,7,11) or a range (4-6)")
        if not 1 <= count <= MAX_SEEDS:
            fail(f"--seeds must be 1 to {MAX_SEEDS:,} (got {count}): each seed is a run")
        return list(range(1, count + 1))
    seeds: list[int] = []
    for token in filter(None, (t.strip() for t in tokens)):
        low, dash, high = token.partition("-")
        try:
            span = range(int(low), int(high) + 1) if dash else [int(token)]
        except ValueError:
            fail(f"--seeds {token!r}: seeds are whole numbers, listed (3 7 11 or 3,7,11) or as a range (4-6)")
        if len(span) > MAX_SEEDS or (span and not 0 <= min(span) <= max(span) <= MAX_SEED):
            fail(f"--seeds {token!r}: seeds are 0 to {MAX_SEED:,}, at most {MAX_SEEDS:,} of them")
        seeds.extend(s for s in span if s not in seeds)
    if not seeds or len(seeds) > MAX_SEEDS:
        fail(f"--seeds {' '.join(spec)}: name 1 to {MAX_SEEDS:,} seeds")
    return seeds
