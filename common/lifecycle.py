"""The command line of every trainer: parse, presets and checks, resume, --eval, and what a failed
invocation leaves behind.

A trainer describes itself once, as a `Trainer` (its config class, checkpoint kind, how to fill and
check a config, how to train and how to evaluate), and its `main()` is `lifecycle.main(TRAINER, args)`.
Everything a user sees around the algorithm is then the same for every trainer:

- `--help` is the config dataclass (tyro); a malformed value is one line on stderr, exit 2.
- `--resume CKPT` and `--eval CKPT` start from the checkpoint's config; flags typed beside them
  override it, except the trainer's `fixed_on_resume` fields, which are refused with one line.
  Where it runs (`--device`) is this invocation's choice, not the checkpoint's: a run checkpointed
  on CUDA resumes on a CPU-only machine.
- Every field is checked before anything is built (common.checks: floats that a float32 holds, the
  rules declared on each field, a seed ALE accepts, a writable folder), then the trainer's `prepare`
  checks what relates fields to each other.
- The run folder, its lock and a loose checkpoint: common.run. The loop's services: common.session.
- A run folder this invocation made is removed if the invocation fails before its run started.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from common import checkpoint, cli
from common.checks import check_common, check_fields, flag
from common.compiled import check_compile
from common.config import PER_INVOCATION, config_from_checkpoint
from common.errors import exits_cleanly, fail

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
    run_eval: Callable[[Any, dict], Any]
    """--eval: score the loaded checkpoint (cfg.eval) and print its score line. (Each agent's own
    `evaluate(...)` plays episodes with exploration off, during training and for this.)"""
    fixed_on_resume: tuple[str, ...] = ()
    """Fields that fix the networks' shapes and the optimizers' state: a checkpoint keeps them (on
    --resume and --eval). The seed, which names the run folder, is kept on --resume too."""
    canonical: Callable[[str, Any], Any] = lambda name, value: value
    """A fixed field's value in the form to compare (`ALE/Breakout-v5` and `Breakout` are one env)."""
    unused: Callable[[dict], tuple[str, ...]] = lambda config: ()
    """The fields a config (as config.json holds it) does not use, which two runs of it may differ in:
    a grid does not compare them (SAC's K-FAC fields when the optimizer is Adam)."""
    budget: str = "total_timesteps"
    """The config field that says how long to train, which a resumed run must still be short of."""
    progress: Callable[[dict], int] = lambda saved: int(saved.get("global_step", 0))
    """Where a checkpoint stands, in the units of `budget`."""

def parse(trainer: Trainer, args, default=None):
    return cli.parse(trainer.config_cls, args, prog=trainer.prog, description=trainer.description,
                     default=default)

def load_config(trainer: Trainer, args) -> tuple[Any, dict | None]:
    """Parse the command line, over the checkpoint's config when it names one; check it."""
    return checked(trainer, parse(trainer, args), lambda stored: parse(trainer, args, default=stored))


def typed_over(cfg, stored):
    """`stored` (a checkpoint's config) with the fields of `cfg` that are not at their defaults: what a
    config built in Python says beside its `resume`, as flags typed beside --resume do."""
    typed = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
             if f.default is not dataclasses.MISSING and getattr(cfg, f.name) != f.default}
    return dataclasses.replace(stored, **typed)


def checkpoint_in(path: str, names: tuple[str, ...], flag_: str) -> str:
    """`path`, or for a run folder the first of `names` in it; a folder without one says what it holds."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    for name in names:
        if (folder / name).is_file():
            return str(folder / name)
    held = sorted(p.name for p in folder.iterdir())
    fail(f"{flag_} {path}: a folder without {' or '.join(names)}; it holds "
         f"{', '.join(held[:12]) + (' ...' if len(held) > 12 else '') if held else 'nothing'}")


def checked(trainer: Trainer, cfg, merge: Callable[[Any], Any] | None = None) -> tuple[Any, dict | None]:
    """`cfg` over the checkpoint's config when it names one (`merge(stored)`, by default `typed_over`),
    checked and prepared; and the checkpoint, loaded. Every refusal is a UserError."""
    from common import run as runs

    merge = merge or (lambda stored: typed_over(cfg, stored))
    if cfg.eval:
        cfg.eval = checkpoint_in(cfg.eval, ("final.pt", "best.pt", "checkpoint.pt"), "--eval")
    if cfg.resume:
        cfg.resume = checkpoint_in(cfg.resume, ("checkpoint.pt",), "--resume")
    path = cfg.eval or cfg.resume
    saved = None
    if path:
        if cfg.resume and cfg.eval:
            fail("--resume and --eval exclude each other: --resume trains on, --eval only plays")
        saved = checkpoint.load(path, kind=trainer.kind)
        stored = config_from_checkpoint(trainer.config_cls, saved, path)
        defaults = {f.name: f.default for f in dataclasses.fields(stored)}
        # A loose checkpoint (its folder no run folder) resumes into a new run folder under this
        # invocation's --logdir, as a fresh run would, not under the logdir it was trained with.
        loose = bool(cfg.resume) and not runs.is_run_folder(Path(cfg.resume).parent)
        for name in PER_INVOCATION + (("logdir",) if loose else ()):
            if name in defaults:
                setattr(stored, name, defaults[name])
        found = (cfg.eval, cfg.resume)
        cfg = merge(stored)
        cfg.eval, cfg.resume = found  # a run folder's checkpoint, as found above
        fixed = trainer.fixed_on_resume + ((("seed",) if loose else ("seed", "logdir")) if cfg.resume else ())
        for name in fixed:
            if trainer.canonical(name, getattr(cfg, name)) != trainer.canonical(name, getattr(stored, name)):
                why = "a resumed run goes on in its checkpoint's folder" if name in ("seed", "logdir") else \
                    "it fixes the networks or the optimizer's state"
                fail(f"--{flag(name)} cannot change from the checkpoint's {getattr(stored, name)!r} "
                     f"(got {getattr(cfg, name)!r}): {why}")
    check_fields(cfg)
    check_common(cfg)
    check_compile(cfg)
    if cfg.resume and (folder := runs.resume_folder(cfg)) is not None and os.environ.get("RANK", "0") == "0":
        # refused now, before the trainer builds anything or says a word, if a process writes it (under
        # torchrun only rank 0 writes the folder: the other ranks' probes would race its lock)
        runs.free(folder)
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


@dataclass
class Result:
    """What a training run made (`dqn.train(dqn.Config(...))` and the other trainers' `train`)."""

    folder: Path
    """The run folder: TensorBoard events, config.json, checkpoints."""
    checkpoint: Path
    """final.pt, the final weights: `agents.load(result.checkpoint)` plays them."""
    final_eval: float | None = None
    """The mean return of the evaluation of the final weights, exploration off (None: evaluation off)."""
    evaluations: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    """(step, mean return) of every evaluation during the run, the final one last."""
    metrics: dict = dataclasses.field(default_factory=dict)
    """The DCGAN trainer's last sample metrics (modes, FID, IS, ...)."""


def train(trainer: Trainer, cfg) -> Result:
    """Train from Python: `cfg` (a trainer's Config, fields left unset taking the env's preset; with
    `resume`, the checkpoint's config under the fields set here) checked as the command line checks it,
    then trained in this process. Refusals raise common.errors.UserError with the command line's message."""
    from common import run as runs
    from common.observers import observe_evaluations

    if cfg.eval:
        fail("train() trains; to play a checkpoint, load it: agents.load(path).act(obs) (or the trainer's --eval)")
    evaluations: list[tuple[int, float]] = []
    with runs.invocation():
        cfg, saved = checked(trainer, dataclasses.replace(cfg))
        with observe_evaluations(lambda step, score: evaluations.append((step, score))):
            out = trainer.train(cfg, saved)
    if isinstance(out, dict):  # the DCGAN trainer: its last metrics beside the paths
        metrics = {k: v for k, v in out.items() if k not in ("folder", "final", "step")}
        return Result(Path(out["folder"]).resolve(), Path(out["final"]).resolve(), metrics=metrics)
    final = evaluations[-1][1] if evaluations else None
    return Result(Path(out).resolve().parent, Path(out).resolve(), final, evaluations)


@exits_cleanly
def main(trainer: Trainer, args=None):
    """One invocation of a trainer: its config, then --eval or training (inside `run.invocation()`:
    a run folder made here whose run never started is removed if it fails)."""
    from common import run as runs

    with runs.invocation():
        cfg, saved = load_config(trainer, args)
        if cfg.eval:
            return trainer.run_eval(cfg, saved)
        return trainer.train(cfg, saved)


# Names that moved out of this module when common/ was split by concern, for code not yet moved on,
# imported only when asked for (gans.sample loads this module without the training stack).
_MOVED = {
    "common.checks": ("FLOAT32_MAX", "as_float32", "at_most", "check_grad_accum", "family_default", "fits_in_memory",
                      "in_unit_interval", "non_negative", "physical_memory", "positive", "writable_folder"),
    "common.config": ("OptimizerAidsConfig", "PresetFloat", "PresetInt", "PresetInts", "PresetStr", "RunConfig",
                      "describe_preset", "fill_preset"),
    "common.optimizers": ("check_lr_schedule", "lr_schedule", "off_policy_updates", "param_groups"),
    "common.run": ("free", "is_run_folder", "new_run_folder", "open_run", "resume_folder", "write_config"),
    "common.seeding": ("MAX_SEED", "derived_seed"),
    "common.session": ("Milestones", "evaluated", "finite", "next_multiple", "observe_evaluations", "score_line",
                       "stopped"),
}


def __getattr__(name: str):
    import importlib

    for module, names in _MOVED.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
