"""One run lifecycle for every trainer: parse, presets and checks, resume, --eval, signals, the run
folder, evaluation during training, finish.

A trainer describes itself once, as a `Trainer` (its config class, checkpoint kind, how to fill and
check a config, how to train and how to evaluate), and its `main()` is `lifecycle.main(TRAINER, args)`.
Everything a user sees around the algorithm is then the same for DQN, the DCGAN trainer and the
agents to come:

- `--help` is the config dataclass (tyro); a malformed value is one line on stderr, exit 2.
- `--resume CKPT` and `--eval CKPT` start from the checkpoint's config; flags typed beside them
  override it, except the trainer's `fixed_on_resume` fields, which are refused with one line.
  Where it runs (`--device`) is this invocation's choice, not the checkpoint's: a run checkpointed
  on CUDA resumes on a CPU-only machine.
- Every numeric field is checked before anything is built (finite floats, seeds in the range that
  ALE's C++ side accepts), and the run folder's parent must be writable.
- SIGINT/SIGTERM: the loop saves, then `stopped()` prints one line and exits with 128 + signal.
- Run folders are `{logdir}/{env}__{algo}__{seed}__{unix_time}`, made exclusively, so two launches
  in the same second with the same seed get two folders; a resumed run reopens its folder and
  rewrites `config.json`, saying which fields changed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, NoReturn, Optional

import tyro

from common import checkpoint, cli
from common.errors import exits_cleanly, fail

# ALE's C++ reset takes seeds in [0, 2**31 - 1]; env i of a vector env gets seed + i. Derived seeds
# (evaluation envs, resets after --resume) wrap below this bound with room for 65,536 envs.
MAX_SEED = 2**31 - 1
_SEED_WRAP = 2**31 - 2**16


def derived_seed(seed: int, offset: int) -> int:
    """`seed + offset` folded into the range every component accepts (env i then adds i)."""
    return (seed + offset) % _SEED_WRAP


# Config fields whose default comes from the trainer's preset (None until `fill_preset`); `--help`
# says so instead of showing "None".
_FROM_PRESET = "(default: preset)"
PresetInt = Annotated[Optional[int], tyro.conf.arg(metavar="INT", help_behavior_hint=_FROM_PRESET)]
PresetFloat = Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT", help_behavior_hint=_FROM_PRESET)]
PresetStr = Annotated[Optional[str], tyro.conf.arg(metavar="STR", help_behavior_hint=_FROM_PRESET)]
PresetInts = Annotated[Optional[tuple[int, ...]], tyro.conf.arg(metavar="INT [INT ...]", help_behavior_hint=_FROM_PRESET)]


@dataclass
class RunConfig:
    """Fields every trainer has: seed, device, where runs go, and which checkpoint to start from."""

    seed: int = 1
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
    estimate, per tensor (SWATS, Keskar & Socher 2017, as optim.SWATS); sgd@auto: when that estimate
    settles (the paper's criterion). Only for Adam; the schedule scales the SGD phase's rate too."""
    warmup_steps: int = 0
    """Updates of linear warmup from 0 up to the learning rate, before --lr-schedule. (A resumed run
    goes on with the schedule's state as saved: a larger budget on --resume stretches the closed-form
    stages, constant, linear, cosine and warmup-cosine, to the new length; torch's recursive schedulers go on from
    the lr they had reached. A learning rate changed on --resume scales the rest of the schedule.)"""


def check_lr_schedule(cfg) -> None:
    """The schedule builds (on a stand-in optimizer: nothing else is made yet), the warmup is not
    negative, and --lr-mult reads as PATTERN=FACTOR. (optim is torch-only, below common in the house.)"""
    import torch

    import optim
    from optim import groups, schedules

    non_negative(cfg, "warmup_steps")
    cfg.lr_mult = tuple(cfg.lr_mult)
    try:
        groups.parse(cfg.lr_mult)
    except ValueError as e:
        fail(f"--lr-mult: {e}")
    if cfg.optimizer_switch:
        try:
            optim.parse_switch(cfg.optimizer_switch)
        except ValueError as e:
            fail(f"--optimizer-switch: {e}")
    stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        schedules.from_spec(cfg.lr_schedule, stand_in, 1000, cfg.warmup_steps)
    except ValueError as e:
        fail(f"--lr-schedule: {e}")


def param_groups(cfg, modules: dict, lrs: dict) -> dict:
    """Each named module's parameters for its optimizer: as they are without --lr-mult, else in
    groups by pattern at their factors of `lrs[name]`, printed once. A pattern must match somewhere;
    with several modules it may start with the module's name (G.net.6, critics)."""
    if not cfg.lr_mult:
        return {name: list(m.parameters()) for name, m in modules.items()}
    from optim import groups

    mults = groups.parse(cfg.lr_mult)
    out, used = {}, set()
    for name, module in modules.items():
        named = list(module.named_parameters())
        mine = {}
        for pattern, factor in mults.items():
            # with several networks a pattern may start with one's name (G.net.6): only that one's
            own, _, rest = pattern.partition(".")
            if len(modules) > 1 and own in modules and rest:
                if own != name:
                    continue
                pattern_here = rest
            else:
                pattern_here = pattern
            if any(groups.matches(pattern_here, n) for n, _ in named):
                mine[pattern_here] = factor
                used.add(pattern)
        try:
            out[name] = groups.by_pattern(named, mine, lrs[name])
        except ValueError as e:  # a pattern whose parameters an earlier pattern took, say
            fail(f"--lr-mult ({name}): {e}" if len(modules) > 1 else f"--lr-mult: {e}")
    unused = [p for p in mults if p not in used]
    if unused:
        tops = sorted({n.split(".")[0] for m in modules.values() for n, _ in m.named_parameters()} |
                      (set(modules) if len(modules) > 1 else set()))
        fail(f"--lr-mult: {unused[0]!r} matches no parameter; the top-level modules are {', '.join(tops)}")
    for name, built in out.items():
        print(groups.describe(built, name if len(modules) > 1 else ""), file=sys.stderr)
    return out


def check_grad_accum(cfg, batch_field: str) -> None:
    """--grad-accum K is at least 1 and slices the batch (`batch_field`, or a number) evenly."""
    if cfg.grad_accum < 1:
        fail(f"--grad-accum must be at least 1 (got {cfg.grad_accum})")
    batch = getattr(cfg, batch_field) if isinstance(batch_field, str) else batch_field
    if batch % cfg.grad_accum:
        what = f"--{flag(batch_field)} {batch}" if isinstance(batch_field, str) else f"the minibatch of {batch}"
        fail(f"--grad-accum {cfg.grad_accum} does not divide {what} into equal micro-batches")


def off_policy_updates(cfg, train_frequency: int = 1, gradient_steps: int = 1) -> int:
    """Optimizer updates in a replay-based run (DQN, Rainbow, SAC): `gradient_steps` every
    `train_frequency` env steps after `learning_starts`. What their --lr-schedule counts."""
    return max(cfg.total_timesteps - cfg.learning_starts, 0) // train_frequency * gradient_steps


def lr_schedule(cfg, optimizers, total_updates: int, saved: dict | None = None, lr_fields: tuple[str, ...] = (),
                done: int = 0):
    """The run's schedule over `optimizers`, restored from `saved` (a checkpoint) when it holds one.

    `lr_fields` name each optimizer's learning-rate field: one changed on --resume scales that
    optimizer's schedule from there on. A checkpoint of an earlier version, with no schedule in it,
    has its schedule advanced by the `done` updates it made."""
    from optim import schedules

    legacy = saved is not None and "lr_schedule" not in saved
    if legacy:  # its groups hold the lr it had reached: the schedule starts from the config's
        for opt, name in zip(optimizers, lr_fields):
            for group in opt.param_groups:
                group["lr"] = getattr(cfg, name) * group.get("lr_mult", 1.0)
                group.pop("initial_lr", None)
    try:
        schedule = schedules.from_spec(cfg.lr_schedule, optimizers, max(total_updates, 1), cfg.warmup_steps)
        if saved is not None and not legacy:
            schedule.load_state_dict(saved["lr_schedule"])
        for _ in range(done if legacy else 0):
            schedule.step()
    except ValueError as e:
        fail(f"--lr-schedule: {e}")
    except (KeyError, TypeError, IndexError) as e:
        fail(f"--lr-schedule: the checkpoint's schedule state does not fit {cfg.lr_schedule!r} "
             f"(--warmup-steps {cfg.warmup_steps}): {type(e).__name__} {e}")
    before = saved.get("config", {}) if saved is not None and not legacy else {}
    for i, name in enumerate(lr_fields):
        old, new = before.get(name), getattr(cfg, name)
        if isinstance(old, (int, float)) and old > 0 and old != new:
            schedule.rescale(i, new / old)
            print(f"--{flag(name)} {new:g} (the checkpoint trained at {old:g}): its schedule scales by "
                  f"{new / old:g} from here", file=sys.stderr)
    return schedule


# Chosen by each invocation, never taken from a checkpoint's config.
PER_INVOCATION = ("resume", "eval", "device", "capture_video")


@dataclass
class Trainer:
    """What the lifecycle needs to know of a trainer."""

    config_cls: type
    kind: str
    """Checkpoint kind and the algorithm's name in run folders ("dqn", "dcgan")."""
    prog: str
    description: str
    prepare: Callable[[Any], Any]
    """Fill preset fields and check every value (UserError on a bad one); returns the config to run."""
    train: Callable[[Any, dict | None], Any]
    """Train from scratch (None) or from the loaded checkpoint."""
    evaluate: Callable[[Any, dict], Any]
    """Evaluate the loaded checkpoint (cfg.eval) and print its score line."""
    fixed_on_resume: tuple[str, ...] = ()
    """Fields that fix the networks' shapes and the optimizers' state: a checkpoint keeps them (on
    --resume and --eval). The seed, which names the run folder, is kept on --resume too."""
    canonical: Callable[[str, Any], Any] = lambda name, value: value
    """A fixed field's value in the form to compare (`ALE/Breakout-v5` and `Breakout` are one env)."""
    budget: str = "total_timesteps"
    """The config field that says how long to train, which a resumed run must still be short of."""
    progress: Callable[[dict], int] = lambda saved: int(saved.get("global_step", 0))
    """Where a checkpoint stands, in the units of `budget`."""


def parse(trainer: Trainer, args, default=None):
    return cli.parse(trainer.config_cls, args, prog=trainer.prog, description=trainer.description,
                     default=default)


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


def load_config(trainer: Trainer, args) -> tuple[Any, dict | None]:
    """Parse the command line, over the checkpoint's config when it names one; check it."""
    cfg = parse(trainer, args)
    path = cfg.eval or cfg.resume
    saved = None
    if path:
        if cfg.resume and cfg.eval:
            fail("--resume and --eval exclude each other: --resume trains on, --eval only plays")
        saved = checkpoint.load(path, kind=trainer.kind)
        stored = config_from_checkpoint(trainer.config_cls, saved, path)
        defaults = {f.name: f.default for f in dataclasses.fields(stored)}
        for name in PER_INVOCATION:
            if name in defaults:
                setattr(stored, name, defaults[name])
        cfg = parse(trainer, args, default=stored)
        fixed = trainer.fixed_on_resume + (("seed", "logdir") if cfg.resume else ())
        for name in fixed:
            if trainer.canonical(name, getattr(cfg, name)) != trainer.canonical(name, getattr(stored, name)):
                why = "a resumed run goes on in its checkpoint's folder" if name in ("seed", "logdir") else \
                    "it fixes the networks or the optimizer's state"
                fail(f"--{flag(name)} cannot change from the checkpoint's {getattr(stored, name)!r} "
                     f"(got {getattr(cfg, name)!r}): {why}")
    check_common(cfg)
    cfg = trainer.prepare(cfg)
    if cfg.resume:
        try:
            done = trainer.progress(saved)
        except (KeyError, TypeError, ValueError):
            fail(f"{cfg.resume} does not say how far it trained: not a complete {trainer.kind} checkpoint")
        # At the budget with no final.pt beside it: stopped after its last step (during the final
        # evaluation, say); it resumes straight into the end of the run, which writes final.pt.
        if done >= getattr(cfg, trainer.budget) and (Path(cfg.resume).parent / "final.pt").exists():
            fail(f"{cfg.resume} is already at step {done} of {getattr(cfg, trainer.budget)}; pass a larger "
                 f"--{flag(trainer.budget)} to train on")
    return cfg, saved


@exits_cleanly
def main(trainer: Trainer, args=None):
    cfg, saved = load_config(trainer, args)
    if cfg.eval:
        return trainer.evaluate(cfg, saved)
    return trainer.train(cfg, saved)


# ------------------------------------------------------------------------------------------------
# Checks every trainer's config gets
# ------------------------------------------------------------------------------------------------


def flag(name: str) -> str:
    return name.replace("_", "-")


def check_common(cfg) -> None:
    """Finite floats everywhere, a seed ALE accepts, a writable place for the run folder."""
    for name, value in dataclasses.asdict(cfg).items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                fail(f"--{flag(name)} must be a finite number (got {value})")
    if not 0 <= cfg.seed <= MAX_SEED:
        fail(f"--seed must be in [0, {MAX_SEED}] (got {cfg.seed})")
    if cfg.eval:
        return
    if cfg.resume:
        writable_folder(Path(cfg.resume).parent, "--resume: the checkpoint's folder")
    else:
        writable_folder(Path(cfg.logdir), "--logdir")


def writable_folder(path: Path, what: str) -> None:
    """`path` is, or can be made as, a folder we can write in; else one line naming it."""
    try:
        probe = path
        while not (probe.exists() or probe.is_symlink()):
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.is_symlink() and not probe.exists():
            fail(f"{what} {path}: {probe} is a broken symbolic link")
        if probe.exists() and not probe.is_dir():
            fail(f"{what} {path}: {probe} is a file, not a folder")
        writable = os.access(probe, os.W_OK | os.X_OK)
    except OSError as e:  # e.g. a name too long for the file system
        fail(f"{what} {path}: {e.strerror or e}")
    if not writable:
        fail(f"{what} {path}: {probe} is not writable")


def positive(cfg, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            fail(f"--{flag(name)} must be positive (got {getattr(cfg, name)})")


def non_negative(cfg, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) >= 0:
            fail(f"--{flag(name)} must not be negative (got {getattr(cfg, name)})")


def in_unit_interval(cfg, *names: str) -> None:
    for name in names:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            fail(f"--{flag(name)} must be in [0, 1] (got {getattr(cfg, name)})")


def at_most(cfg, name: str, bound: int, why: str) -> None:
    if getattr(cfg, name) > bound:
        fail(f"--{flag(name)} must be at most {bound:,} ({why}; got {getattr(cfg, name):,})")


def physical_memory() -> int:
    """Bytes of RAM on this machine (a huge number where the platform cannot say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def fits_in_memory(build: Callable[[], Any], copies: int, what: str) -> None:
    """Refuse, with one line, networks whose `copies` float32 copies (weights, gradients, optimizer
    state, targets) would not fit in RAM. The network is built on the meta device: nothing is allocated,
    so a typo such as --hidden-sizes 100000 100000 costs nothing to catch."""
    import torch

    with torch.device("meta"):
        try:
            module = build()
        except (RuntimeError, ValueError) as e:
            fail(f"cannot build {what}: {str(e).splitlines()[0][:160]}")
    n = sum(p.numel() for p in module.parameters())
    need = n * 4 * copies
    if need > physical_memory():
        fail(f"{what} would have {n:,} parameters, {need / 2**30:,.1f} GiB for weights, gradients and optimizer "
             f"state: more than this machine's {physical_memory() / 2**30:,.1f} GiB")


def family_default(cfg, name: str, default, optimizer: str, applies: bool, what: str, who: str) -> None:
    """optim's policy for a hyper-parameter (`what`) that only some optimizers (`who`) take: left unset
    it takes `default` where it `applies` and None elsewhere (so config.json records only what was
    used); typed for an optimizer it does not apply to, it is refused with one line."""
    if getattr(cfg, name) is None:
        setattr(cfg, name, default if applies else None)
    elif not applies:
        fail(f"--{flag(name)}: optimizer {optimizer!r} takes no {what}; --{flag(name)} is for {who}")


def fill_preset(cfg, preset: dict):
    """`cfg` with its None fields taken from `preset`."""
    return dataclasses.replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})


def describe_preset(name: str, preset: dict, cfg) -> str:
    """`preset NAME: a=1, b=2`: what a run takes from its preset. Trainers print it once the run's
    parts are built (so that a refused setting stays the only line a user sees)."""
    taken = ", ".join(f"{flag(k)}={v}" for k, v in preset.items() if getattr(cfg, k) == v and v != ())
    return f"preset {name}: {taken}"


# ------------------------------------------------------------------------------------------------
# The run folder
# ------------------------------------------------------------------------------------------------


def new_run_folder(logdir: str | Path, env: str, algo: str, seed: int) -> Path:
    """Make `{logdir}/{env}__{algo}__{seed}__{unix_time}` exclusively; a taken name gets `_2`, `_3`, ..."""
    logdir = Path(logdir)
    base = f"{env.replace('/', '_')}__{algo}__{seed}__{int(time.time())}"
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            folder = logdir / (base if n == 1 else f"{base}_{n}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
    except OSError as e:
        fail(f"--logdir {logdir}: cannot make a run folder there ({e.strerror or e})")
    fail(f"cannot make a new run folder in {logdir}")


def write_config(folder: Path, cfg) -> dict:
    """Write `config.json`; on resume, return the fields that changed from the one already there."""
    path = folder / "config.json"
    new = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    changed = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        changed = {k: [old.get(k), v] for k, v in new.items() if k not in PER_INVOCATION and old.get(k) != v}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(new, indent=2))
    os.replace(tmp, path)
    return changed


def open_run(cfg, env: str, algo: str, resume_step: int | None):
    """The run's folder and TensorBoard writer: a new folder, or the checkpoint's on resume.

    A resumed run keeps the scalars logged up to its checkpoint's step and purges later ones (a
    crashed run logged past its last checkpoint), so the curves continue without doubling back.
    """
    from common.run import Run

    if resume_step is None:
        folder = new_run_folder(cfg.logdir, env, algo, cfg.seed)
        run = Run(folder, cfg)
        write_config(folder, cfg)
    else:
        folder = Path(cfg.resume).parent
        run = Run(folder, cfg, resume_step=resume_step + 1)
        changed = write_config(folder, cfg)
        if changed:
            said = ", ".join(f"{flag(k)} {a} -> {b}" for k, (a, b) in changed.items())
            print(f"resuming with changed settings: {said}", file=sys.stderr)
            run.writer.add_text("resumed", f"at step {resume_step}: {said}", resume_step)
    if _observers:
        _observed_runs.append(run)
    return folder, run


# ------------------------------------------------------------------------------------------------
# Stopping and evaluation during training
# ------------------------------------------------------------------------------------------------


def stopped(signum: int, step: int, path: Path) -> NoReturn:
    """After the loop saved on SIGINT/SIGTERM: one line, and the exit status of a killed process, so
    job schedulers know the run did not finish."""
    name = signal.Signals(signum).name
    print(f"stopped by {name} at step {step}; checkpoint saved: {path} (continue with --resume {path})",
          file=sys.stderr)
    sys.exit(128 + signum)


# What follows a run's evaluations from inside its process (studies.sweep reports them to Optuna's
# pruner): each observer gets (step, mean score) after every evaluation during training, the final
# one included, and may raise to stop the run there.
_observers: list[Callable[[int, float], None]] = []
_observed_runs: list = []  # the Runs opened under an observer: closed when it ends, however the run ended


@contextlib.contextmanager
def observe_evaluations(observer: Callable[[int, float], None]):
    """`with observe_evaluations(fn):` around a trainer's `train()`: `fn(step, score)` after each
    evaluation. An observer that raises (a pruned trial) leaves the trainer mid-loop: the run's
    TensorBoard writer is closed here then, so its events are flushed and its thread ends."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)
        while _observed_runs:
            _observed_runs.pop().close()


def evaluated(step: int, score: float) -> None:
    """Tell the observers (if any) that the run scored `score` at `step`."""
    for observer in list(_observers):
        observer(step, score)


class BestCheckpoint:
    """Evaluation during training, as SB3's EvalCallback: log each evaluation's mean and standard
    deviation and keep `best.pt`, the checkpoint of the best mean so far, beside `checkpoint.pt`."""

    def __init__(self, run, best: float = -math.inf, schedule=None):
        self.run, self.best, self.schedule = run, best, schedule  # schedule: plateau follows the scores
        self.last_step: int | None = None
        self.last_mean: float | None = None

    def record(self, scores: list[float], step: int, save: Callable[[str], Path]) -> bool:
        import numpy as np

        mean, std = float(np.mean(scores)), float(np.std(scores))
        self.last_step, self.last_mean = step, mean
        self.run.scalars({"eval/episodic_return": mean, "eval/episodic_return_std": std}, step)
        print(f"evaluation at step {step}: {len(scores)} episodes, score {mean:.2f} +/- {std:.2f}",
              file=sys.stderr)
        if self.schedule is not None:
            self.schedule.evaluated(mean)
        improved = mean > self.best
        if improved:
            self.best = mean
            save("best.pt")
        evaluated(step, mean)
        return improved


def next_multiple(step: int, every: int) -> float:
    """The first multiple of `every` after `step` (inf for every = 0: never)."""
    return (step // every + 1) * every if every else math.inf


class Milestones:
    """The recurring events of a loop that counts environment steps: a log, an evaluation and a
    checkpoint each fall due once per interval (0: never), and steps/s is measured between logs and
    since the first update, with the time spent evaluating (`paused()`) left out."""

    def __init__(self, step: int, log_interval: int, eval_interval: int, checkpoint_interval: int):
        self._every = {"log": log_interval, "eval": eval_interval, "checkpoint": checkpoint_interval}
        # At multiples of the interval from step 0, also after a resume from any step, so that every
        # run of a grid is evaluated at the same steps.
        self._next = {name: next_multiple(step, every) for name, every in self._every.items()}
        self._since, self._since_step = time.time(), step  # the last log
        self._updates_began: tuple[float, int] | None = None

    def due(self, name: str, step: int) -> bool:
        """Whether `name` ("log", "eval", "checkpoint") falls due at `step`; then it waits an interval."""
        if step < self._next[name]:
            return False
        self._next[name] += self._every[name]
        return True

    def next_due(self, name: str) -> float:
        """The step at which `name` next falls due (inf: never)."""
        return self._next[name]

    def steps_per_second(self, step: int) -> float:
        """Since the previous call (or the start)."""
        now = time.time()
        sps = (step - self._since_step) / max(now - self._since, 1e-9)
        self._since, self._since_step = now, step
        return sps

    def updates_began(self, step: int) -> None:
        if self._updates_began is None:
            self._updates_began = (time.time(), step)

    @contextlib.contextmanager
    def paused(self):
        """`with milestones.paused():` around an evaluation, which steps/s does not count."""
        t0 = time.time()
        try:
            yield
        finally:
            spent = time.time() - t0
            self._since += spent
            if self._updates_began is not None:
                self._updates_began = (self._updates_began[0] + spent, self._updates_began[1])

    def training_sps(self, step: int) -> float | None:
        """Steps/s since the first update: what the benchmarks read."""
        if self._updates_began is None:
            return None
        t0, step0 = self._updates_began
        return (step - step0) / max(time.time() - t0, 1e-9)


def finite(params) -> bool:
    import torch

    return all(bool(torch.isfinite(p).all()) for p in params)


def diverged(what: str, step: int, folder: Path, progress, run) -> NoReturn:
    """Training produced non-finite numbers: one line naming the step and what is kept, exit 3."""
    progress.close()
    run.close()
    kept = (f"the last good checkpoint {folder / 'checkpoint.pt'} is kept" if (folder / "checkpoint.pt").exists()
            else "no checkpoint had been written yet")
    fail(f"training diverged at step {step} ({what}); {kept}", code=3)


def final_evaluation(step: int, stop, cfg, evaluations: BestCheckpoint, play, milestones: Milestones | None,
                     save: Callable[[str], Path]) -> None:
    """Evaluate the final weights (`cfg.eval_episodes` episodes, exploration off) unless evaluation is off
    (`--eval-interval 0`) or the last evaluation was at this step already: the score a grid or a sweep
    reads, and the HPARAMS dashboard's metric."""
    if stop or not getattr(cfg, "eval_interval", 0) or evaluations.last_step == step:
        return
    with milestones.paused() if milestones else contextlib.nullcontext():
        scores = play(cfg.eval_episodes, None, stop)
    if not stop:
        evaluations.record(scores, step, save)


def hparams_metrics(evaluations: BestCheckpoint | None, progress) -> dict[str, float]:
    """The HPARAMS dashboard's metrics: the final evaluation, and the recent training episodes' mean."""
    metrics = {}
    if evaluations is not None and evaluations.last_mean is not None:
        metrics["hparams/final_eval_return"] = evaluations.last_mean
    if progress.returns:
        metrics["hparams/train_return"] = progress.recent_return
    return metrics


def finish(step: int, stop, save: Callable[[str], Path], params, folder: Path, progress, run,
           milestones: Milestones, cfg, evaluations: BestCheckpoint,
           play: Callable[[int, Optional[Path], Any], list[float]]) -> Path:
    """The end of a step-counting run, inside its StopSignal block: evaluate the final weights
    (`final_evaluation`), refuse to save non-finite weights, save checkpoint.pt and final.pt, print
    steps/s since the first update (evaluations left out), log the config and the final scores to the
    HPARAMS dashboard, play one episode into the run's videos/ with --capture-video, close the run and
    return final.pt. `play(episodes, video_path, stop)` plays with exploration off and returns the
    scores (none if a signal cut it short). A signal before final.pt is written, or during the video,
    ends it there with `stopped()`."""
    if not finite(params):
        diverged("non-finite weights", step, folder, progress, run)
    final_evaluation(step, stop, cfg, evaluations, play, milestones, save)
    progress.close()
    path = save("checkpoint.pt")
    if not stop:
        path = save("final.pt")
    if not stop:
        sps = milestones.training_sps(step)
        if sps is not None:
            print(f"steps/s after learning starts: {sps:.1f}", file=sys.stderr)
        run.hparams(cfg, hparams_metrics(evaluations, progress), step)
    if getattr(cfg, "capture_video", False) and not stop:
        scores = play(1, folder / "videos" / f"step{step}.mp4", stop)
        if scores and not stop:
            run.scalar("eval/video_episodic_return", scores[0], step)
    run.close()
    if stop:
        stopped(stop.received, step, path)
    print(f"run folder: {folder}", file=sys.stderr)
    return path


def score_line(env: str, scores: list[float]) -> str:
    """`ENV: N episodes, score MEAN +/- STD (min, max)`: what every agent's --eval prints."""
    import numpy as np

    return (f"{env}: {len(scores)} episodes, score {np.mean(scores):.2f} +/- {np.std(scores):.2f} "
            f"(min {np.min(scores):.1f}, max {np.max(scores):.1f})")
