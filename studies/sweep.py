"""Optuna sweeps over a trainer's optimizer and its hyper-parameters, each trial scored over seeds.

    python -m studies.sweep --agent ppo --env CartPole-v1 --trials 50 --seeds 3 --total-timesteps 50000
    python -m studies.sweep --agent dqn --env CartPole-v1 --trials 50 --storage runs/sweep.log --workers 2
    python -m studies.sweep ... --storage postgresql+psycopg2://user:pass@host/db   # on every machine

A trial samples the agent's search space (SPACES: the optimizer by registry name, its learning rate and
the hyper-parameters that optimizer has), trains the real trainer with it on `--seeds` seeds one after
the other (the same seeds for every trial, so trials compare on equal luck), and scores the mean over
seeds of each run's final evaluation (the trainer's evaluation with exploration off of its final
weights). Sampler: TPE (its constant liar keeps parallel workers from sampling the same point). Pruner:
the median rule on the evaluations during training, reported at step `seed_index * budget + step`, so
that a trial is compared with the others at the same point of the same seed; a trial whose evaluation
falls below the median of the trials before it at that point stops there.

Storage: in memory by default (one process); a journal file (`--storage PATH.log`) for several
worker processes on one machine; an SQLAlchemy URL (PostgreSQL: `postgresql+psycopg2://...`, needs
`pip install 'rlgan[sweeps]'`) for workers on many machines: the same command on each joins the study
(`--study-name`, default `{agent}-{env}`) and all of them stop once it has `--trials` trials.
`optuna-dashboard STORAGE` shows a stored study live. At the end: the trials as a table
(`LOGDIR/trials.md`), parameter importances, and the best trial's parameters retrained on
`--reevaluate-seeds` fresh seeds (from 1001), with the 95% bootstrap interval of their mean.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import multiprocessing
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from common import cli
from common.errors import UserError, exits_cleanly, fail
from studies.trainers import AGENTS, STUDY_FIELDS, Agent, die_with_parent, flags, seed_list

FRESH_SEEDS = 1001
"""The re-evaluation's first seed: far from the trials' seeds 1..N."""


@dataclass
class Config:
    """Tune a trainer's optimizer and hyper-parameters with Optuna (TPE, median pruning), over seeds."""

    agent: Literal["dqn", "rainbow", "ppo", "sac", "dcgan"]
    """Trainer to tune."""
    env: str
    """Environment (short name or gymnasium id); for dcgan, the dataset (ring8, grid25, cifar10, folder)."""
    trials: int = 50
    """Trials in the study, counting those of every worker and machine (pruned and failed included)."""
    seeds: tuple[str, ...] = ("3",)
    """N: seeds 1..N per trial, or the seeds themselves (3 7 11, 3,7,11, 4-6, 7,); the trial's value is the
    mean of their final evaluations."""
    total_timesteps: Optional[int] = None
    """Each run's budget (env steps; dcgan: generator steps); default: the preset's."""
    eval_interval: Optional[int] = None
    """Steps between evaluations, the pruner's checkpoints (default: the preset's; dcgan: --sample-interval)."""
    set: tuple[str, ...] = ()
    """KEY=VALUE config fields for every run, outside the search space (learning_starts=1000)."""
    storage: Optional[str] = None
    """Where the study lives: none (in memory, one process), PATH.log (journal file: several processes on
    one machine) or an SQLAlchemy URL such as postgresql+psycopg2://user:pass@host/db (several machines)."""
    study_name: Optional[str] = None
    """Name of the study in the storage (default: {agent}-{env}); the same name joins it."""
    workers: int = 1
    """Worker processes on this machine, each running trials until the study has --trials; each gets
    (CPU cores / workers) threads. More than one needs --storage."""
    logdir: str = "runs/sweep"
    """Where the trials' run folders (trialN/), their logs and trials.md go."""
    startup_trials: int = 5
    """Trials that finish before the pruner prunes any (the median needs something to compare with)."""
    warmup_fraction: float = 0.25
    """No pruning within this fraction of a trial's first seed."""
    reevaluate_seeds: int = 3
    """Retrain the best trial's parameters on this many fresh seeds at the end; 0 skips it (pass 0 on
    all machines but one)."""
    sampler_seed: Optional[int] = None
    """Seed of the TPE sampler (worker i adds i); default: random, so machines joining a study sample
    different points."""
    device: str = "auto"
    """Passed to every run (auto, cpu, cuda, cuda:N)."""


# ------------------------------------------------------------------------------------------------
# Search spaces: config fields (name -> value as typed on the command line) from a trial
# ------------------------------------------------------------------------------------------------


def _rmsprop(trial, values: dict) -> None:
    values["rmsprop_alpha"] = trial.suggest_float("rmsprop_alpha", 0.9, 0.999)
    values["rmsprop_eps"] = trial.suggest_float("rmsprop_eps", 1e-8, 1e-2, log=True)


def dqn_space(trial) -> dict:
    values = {"optimizer": trial.suggest_categorical("optimizer", ["rmsproptf", "adam"]),
              "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)}
    if values["optimizer"] == "rmsproptf":
        _rmsprop(trial, values)
    return values


def rainbow_space(trial) -> dict:
    values = {"optimizer": trial.suggest_categorical("optimizer", ["adam", "rmsproptf"]),
              "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)}
    if values["optimizer"] == "adam":
        values["adam_eps"] = trial.suggest_float("adam_eps", 1e-8, 1e-3, log=True)
    else:
        _rmsprop(trial, values)
    return values


def ppo_space(trial) -> dict:
    values = {"optimizer": trial.suggest_categorical("optimizer", ["adam", "adabelief"]),
              "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
              "ent_coef": trial.suggest_float("ent_coef", 1e-4, 0.1, log=True),
              "clip_coef": trial.suggest_float("clip_coef", 0.1, 0.3)}
    if values["optimizer"] == "adam":
        values["adam_eps"] = trial.suggest_float("adam_eps", 1e-8, 1e-4, log=True)
    return values


def sac_space(trial) -> dict:
    values = {"optimizer": trial.suggest_categorical("optimizer", ["kfac", "adam"]),
              "policy_lr": trial.suggest_float("policy_lr", 1e-4, 3e-3, log=True),
              "q_lr": trial.suggest_float("q_lr", 1e-4, 3e-3, log=True)}
    if values["optimizer"] == "kfac":
        combine = values["kfac_combine"] = trial.suggest_categorical("kfac_combine", ["eigen-adam", "graft", "sgd"])
        values["kfac_inverse_interval"] = trial.suggest_categorical("kfac_inverse_interval", [10, 30, 100])
        values["kfac_actor"] = trial.suggest_categorical("kfac_actor", [True, False])
        if combine != "eigen-adam":  # eigen-adam has no damping (Adam's eps stands in for it)
            values["kfac_damping"] = trial.suggest_float("kfac_damping", 1e-3, 1.0, log=True)
            if values["kfac_actor"]:
                values["kfac_actor_damping"] = trial.suggest_float("kfac_actor_damping", 1e-3, 1.0, log=True)
    return values


def dcgan_space(trial) -> dict:
    return {"g_optimizer": trial.suggest_categorical("g_optimizer", ["adam", "rmsprop", "sgd"]),
            "d_optimizer": trial.suggest_categorical("d_optimizer", ["adam", "rmsprop", "sgd"]),
            "g_lr": trial.suggest_float("g_lr", 1e-5, 1e-2, log=True),
            "d_lr": trial.suggest_float("d_lr", 1e-5, 1e-2, log=True)}


SPACES = {"dqn": dqn_space, "rainbow": rainbow_space, "ppo": ppo_space, "sac": sac_space, "dcgan": dcgan_space}


# ------------------------------------------------------------------------------------------------
# One run in this process, followed evaluation by evaluation
# ------------------------------------------------------------------------------------------------


class Reporter:
    """Follows one run's evaluations (common.observers.observe_evaluations): reports each to the trial at
    `seed_index * budget + step` and stops the run when the pruner says so."""

    def __init__(self, trial, seed_index: int, budget: int):
        self.trial, self.budget, self.offset = trial, budget, seed_index * budget
        self.last: float | None = None

    def __call__(self, step: int, score: float) -> None:
        import optuna

        self.last = score
        if math.isfinite(score):
            self.trial.report(score, self.offset + step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} of its seed {self.offset // max(self.budget, 1) + 1} "
                                     f"(score {score:.2f})")


def train_once(agent: Agent, args: list[str], observer, log: Path) -> float:
    """Train the agent in this process with `args`; return its final evaluation. Its output goes to `log`."""
    from common import lifecycle, observers

    trainer = agent.trainer()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out, contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        print(f"$ python -m {agent.module} {' '.join(args)}", flush=True)
        with observers.observe_evaluations(observer):  # the Python API's train(), as a user's script calls it
            lifecycle.train(trainer, lifecycle.parse(trainer, args))
    if observer.last is None:
        fail(f"the run logged no evaluation (see {log})")
    return observer.last


def run_args(cfg: Config, agent: Agent, values: dict, seed: int, logdir: Path) -> list[str]:
    args = [f"--{agent.env_field}", cfg.env, "--device", cfg.device, "--seed", str(seed), "--logdir", str(logdir)]
    if cfg.total_timesteps is not None:
        args += [f"--{agent.budget_field.replace('_', '-')}", str(cfg.total_timesteps)]
    if cfg.eval_interval is not None:
        args += [f"--{agent.eval_field_for(cfg.env).replace('_', '-')}", str(cfg.eval_interval)]
    try:
        fixed = flags(fixed_values(cfg, agent), agent.bool_fields())
    except ValueError as e:
        fail(f"--set {e}")
    return args + fixed + flags({k: _typed(v) for k, v in values.items()}, agent.bool_fields())


def _typed(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def fixed_values(cfg: Config, agent: Agent) -> dict[str, str]:
    fields = agent.fields()
    out = {}
    for item in cfg.set:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            fail(f"--set {item!r}: write KEY=VALUE")
        if key in STUDY_FIELDS or key in (agent.env_field, agent.budget_field):
            fail(f"--set {key}: the sweep sets it itself")
        if key in space_fields(cfg.agent):
            fail(f"--set {key}: the search space samples it (see SPACES in studies/sweep.py)")
        if key not in fields:
            fail(f"--set {key}: not a config field of {cfg.agent}; see its --help")
        out[key] = value.strip()
    return out


def budget_of(cfg: Config, agent: Agent, values: dict) -> int:
    """The budget a run with `values` trains to (the preset's unless --total-timesteps), checking the
    command as the trainer would."""
    from common import lifecycle

    args = run_args(cfg, agent, values, 1, Path(cfg.logdir))
    run_cfg, _ = lifecycle.load_config(agent.trainer(), args)
    return int(getattr(run_cfg, agent.budget_field))


def objective_for(cfg: Config, agent: Agent):
    def objective(trial) -> float:
        values = SPACES[cfg.agent](trial)
        trial.set_user_attr("worker", os.getpid())
        folder = Path(cfg.logdir) / f"trial{trial.number}"
        budget = budget_of(cfg, agent, values)
        scores = []
        for i, seed in enumerate(seed_list(cfg.seeds)):
            args = run_args(cfg, agent, values, seed, folder)
            log = folder / f"seed{seed}.log"
            try:
                scores.append(train_once(agent, args, Reporter(trial, i, budget), log))
            except UserError as e:  # diverged, or no evaluation: the trial fails, the sweep goes on
                trial.set_user_attr("error", f"seed {seed}: {e} (log: {log})")
                return float("nan")
            except SystemExit as e:  # a signal stopped the trainer (it saved): stop the sweep
                raise KeyboardInterrupt from e
            finally:
                gc.collect()  # a pruned run's envs and loaders go now, not at some later collection
            trial.set_user_attr("scores", scores)
        return sum(scores) / len(scores)
    return objective


# ------------------------------------------------------------------------------------------------
# The study and its workers
# ------------------------------------------------------------------------------------------------


def open_storage(url: str | None, heartbeat: bool = True):
    """None (in memory), a journal file for PATH.log, or an RDB storage for an SQLAlchemy URL."""
    import optuna

    if url is None:
        return None
    if "://" not in url:
        if not url.endswith(".log"):
            fail(f"--storage {url}: a journal file's name ends in .log; a database is a URL (postgresql+psycopg2://...)")
        from optuna.storages.journal import JournalFileBackend

        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            fail(f"--storage {url}: cannot open it ({e.strerror or e})")
    if url.startswith("postgresql"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            fail("--storage postgresql: needs psycopg2 (pip install 'rlgan[sweeps]')")
    try:
        with warnings.catch_warnings():  # Optuna marks the heartbeat's retry callback experimental
            warnings.simplefilter("ignore")
            kwargs = (dict(heartbeat_interval=60, grace_period=180,
                           failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
                      if heartbeat else {})
            return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as e:  # sqlalchemy's errors: a bad URL, a refused connection, a missing driver
        fail(f"--storage: cannot open {_redacted(url)} ({str(e).splitlines()[0][:200]})")


def _redacted(url: str) -> str:
    """The URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':')[0]}:***@{tail}"


def make_study(cfg: Config, storage, budget: int, worker: int = 0):
    import optuna

    seed = None if cfg.sampler_seed is None else cfg.sampler_seed + worker
    return optuna.create_study(
        study_name=study_name(cfg), storage=storage, direction="maximize", load_if_exists=True,
        # constant liar: running trials count as if they had scored badly, so parallel workers spread out
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True), pruner=make_pruner(cfg, budget))


def make_pruner(cfg: Config, budget: int):
    """The median rule, from `startup_trials` finished trials on and past the first seed's warm-up."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials,
                                       n_warmup_steps=int(cfg.warmup_fraction * budget))


def study_name(cfg: Config) -> str:
    return cfg.study_name or f"{cfg.agent}-{cfg.env}"


def work(cfg: Config, worker: int, study=None) -> None:
    """Run trials until the study has `cfg.trials` of them, running ones included. (Two workers that
    finish together at the last trial can both start one: Optuna's own MaxTrialsCallback has the same
    window.) `study`: this process's in-memory study; workers open the storage themselves."""
    import torch

    quiet_optuna()
    if cfg.workers > 1:
        threads = max(1, cpu_count() // cfg.workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    agent = AGENTS[cfg.agent]
    if study is None:
        study = make_study(cfg, open_storage(cfg.storage), default_budget(cfg), worker)
    objective = objective_for(cfg, agent)
    who = f"worker {worker}: " if cfg.workers > 1 else ""
    while len(study.get_trials(deepcopy=False)) < cfg.trials:
        t0 = time.time()
        before = {t.number for t in study.get_trials(deepcopy=False)}
        study.optimize(objective, n_trials=1)
        mine = [t for t in study.get_trials(deepcopy=False) if t.number not in before
                and t.user_attrs.get("worker") == os.getpid()]
        for trial in mine:
            print(f"{who}{describe(trial)} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)


def describe(trial) -> str:
    value = f"value {trial.value:.2f}" if trial.value is not None and trial.state.name == "COMPLETE" else ""
    if trial.state.name == "PRUNED" and trial.intermediate_values:
        step = max(trial.intermediate_values)
        value = f"at step {step} with {trial.intermediate_values[step]:.2f}"
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    state = trial.state.name.lower()
    error = f": {trial.user_attrs['error']}" if "error" in trial.user_attrs else ""
    return f"trial {trial.number} {state} {value} ({params}){error}".replace("  ", " ")


def quiet_optuna() -> None:
    """Optuna logs a failed or interrupted trial with its traceback; each trial's one line is ours."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _worker_main(cfg_dict: dict, worker: int) -> None:
    # Out of the terminal's process group, so that a Ctrl-C reaches its trainer once, as the main
    # process's SIGTERM (a second signal would abort the trainer's save), and gone with the main process.
    os.setpgrp()
    die_with_parent()
    cfg = Config(**cfg_dict)
    try:
        work(cfg, worker)
    except UserError as e:
        print(f"error: worker {worker}: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        sys.exit(130)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


def trials_table(study) -> str:
    trials = study.get_trials(deepcopy=False)
    names: list[str] = []
    for t in trials:
        names += [k for k in t.params if k not in names]
    header = ["trial", "state", "value", "seeds' final scores", *names]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---:", "---", "---:", "---"] + ["---"] * len(names)) + "|"]
    rank = {"COMPLETE": 0, "PRUNED": 1}
    order = sorted(trials, key=lambda t: (rank.get(t.state.name, 2),
                                          -(t.value or 0.0) if t.state.name == "COMPLETE" else 0.0, t.number))
    for t in order:
        scores = ", ".join(f"{s:.1f}" for s in t.user_attrs.get("scores", []))
        state = t.state.name.lower()
        if t.state.name == "PRUNED" and t.intermediate_values:
            state += f" at {max(t.intermediate_values):,}"
        value = f"{t.value:.2f}" if t.value is not None and t.state.name == "COMPLETE" else "-"
        cells = [str(t.number), state, value, scores or "-"]
        cells += [_short(t.params[k]) if k in t.params else "" for k in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def importances(study) -> dict[str, float]:
    """Optuna's default evaluator's parameter importances (sums to 1), {} while too few trials completed."""
    import optuna

    try:
        with warnings.catch_warnings():  # conditional parameters (rmsprop_eps) in few trials: said in the table
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # too few complete trials, or a parameter that never varied
        return {}


def reevaluate(cfg: Config, study) -> tuple[list[float], object] | None:
    """The best trial's parameters retrained on fresh seeds: their final evaluations and the interval of their mean."""
    from studies import stats

    agent = AGENTS[cfg.agent]
    best = study.best_trial
    values = dict(best.params)
    # The space's own function rebuilds the fields from the parameters (names match config fields).
    folder = Path(cfg.logdir) / f"best_trial{best.number}"

    class Last:
        last = None

        def __call__(self, step, score):
            self.last = score

    scores = []
    for i in range(cfg.reevaluate_seeds):
        seed = FRESH_SEEDS + i
        print(f"re-evaluating trial {best.number} on seed {seed}", file=sys.stderr, flush=True)
        scores.append(train_once(agent, run_args(cfg, agent, values, seed, folder), Last(), folder / f"seed{seed}.log"))
    return scores, stats.interval(stats.mean, scores)


def report(cfg: Config, study, reevaluate_best: bool = True) -> None:
    """trials.md and stdout: the trials, the best one, importances; then, written once they are in, the
    best parameters' re-evaluation on fresh seeds (so that a failure or Ctrl-C there keeps the table)."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    lines = [f"# Sweep: {cfg.agent} on {cfg.env}, study {study_name(cfg)}", "", trials_table(study), ""]
    if complete:
        best = study.best_trial
        seeds = ", ".join(map(str, seed_list(cfg.seeds)))
        lines.append(f"Best: trial {best.number}, value {best.value:.2f} over seeds {seeds} "
                     f"({', '.join(f'{k}={_short(v)}' for k, v in best.params.items())}).")
        imp = importances(study)
        if imp:
            lines.append("Parameter importances (Optuna's default evaluator): "
                         + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()) + ".")
    else:
        lines.append("No trial has completed.")
    out = Path(cfg.logdir) / "trials.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if complete and reevaluate_best and cfg.reevaluate_seeds:
        scores, ci = reevaluate(cfg, study)
        line = (f"Re-evaluated on fresh seeds {FRESH_SEEDS}..{FRESH_SEEDS + len(scores) - 1}: "
                f"{', '.join(f'{s:.1f}' for s in scores)}; mean {ci} (95% bootstrap interval).")
        out.write_text("\n".join([*lines, line]) + "\n")
        print(line)
    print(f"table: {out}", file=sys.stderr)


def default_budget(cfg: Config) -> int:
    """The runs' budget: --total-timesteps, or the preset's (read from the trainer's checked config)."""
    return budget_of(cfg, AGENTS[cfg.agent], SPACES[cfg.agent](_Defaults()))


def check(cfg: Config) -> int:
    """Every flag, and the trainer's checks of a run's command; returns the runs' budget."""
    seed_list(cfg.seeds)  # a count or the seeds themselves, refused otherwise
    for name in ("trials", "workers"):
        if getattr(cfg, name) < 1:
            fail(f"--{name} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.reevaluate_seeds < 0 or cfg.startup_trials < 0:
        fail("--reevaluate-seeds and --startup-trials must not be negative")
    if not 0.0 <= cfg.warmup_fraction <= 1.0:
        fail(f"--warmup-fraction must be in [0, 1] (got {cfg.warmup_fraction})")
    if cfg.total_timesteps is not None and cfg.total_timesteps < 1:
        fail(f"--total-timesteps must be positive (got {cfg.total_timesteps})")
    if cfg.eval_interval is not None and cfg.eval_interval < 1:
        fail(f"--eval-interval must be positive: the pruner and the score read the evaluations "
             f"(got {cfg.eval_interval})")
    if cfg.workers > 1 and cfg.storage is None:
        fail("--workers above 1 needs --storage (a PATH.log journal file, or a database URL) that the workers share")
    return default_budget(cfg)  # a bad --set or env fails here, once, not in every worker


def space_fields(agent: str) -> set[str]:
    """Every config field the agent's search space can set, over all its branches."""
    out: set[str] = set()
    for choice in range(3):
        out |= set(SPACES[agent](_Defaults(choice)))
    return out


class _Defaults:
    """A trial that answers every suggestion with the middle of its range (or choice number `choice`):
    to check a sweep's command before any trial runs, and to list what a space can set."""

    def __init__(self, choice: int = 0):
        self.choice = choice

    def suggest_categorical(self, name, choices):
        return choices[self.choice % len(choices)]

    def suggest_float(self, name, low, high, log=False):
        return math.sqrt(low * high) if log else (low + high) / 2


@exits_cleanly
def main(args: list[str] | None = None):
    cfg = cli.parse(Config, args, prog="python -m studies.sweep", description=__doc__.split("\n")[0])
    budget = check(cfg)
    import optuna

    quiet_optuna()
    storage = open_storage(cfg.storage)
    study = make_study(cfg, storage, budget)  # creates it once, before the workers race to
    done = len(study.get_trials(deepcopy=False))
    print(f"sweep: {cfg.agent} on {cfg.env}, study {study_name(cfg)!r} with {done} of {cfg.trials} trials; "
          f"{cfg.workers} worker{'s' * (cfg.workers > 1)}; runs in {cfg.logdir}", file=sys.stderr, flush=True)
    t0 = time.time()
    stopped = run_workers(cfg, study)
    print(f"trials took {time.time() - t0:.0f} s", file=sys.stderr)
    if storage is not None:
        study = optuna.load_study(study_name=study_name(cfg), storage=open_storage(cfg.storage, heartbeat=False))
    report(cfg, study, reevaluate_best=not stopped)
    if stopped:
        again = ("an in-memory study cannot be continued: pass --storage PATH.log to keep one" if storage is None
                 else "the same command continues the study (the interrupted trials are marked failed)")
        fail(f"sweep stopped; the table above has the trials that finished; {again}", code=130)
    return study


def run_workers(cfg: Config, study) -> bool:
    """Run the trials here (one worker) or in `cfg.workers` processes; returns whether a signal stopped it."""
    if cfg.workers == 1:
        try:
            work(cfg, 0, study)
            return False
        except KeyboardInterrupt:
            return True
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(dataclasses.asdict(cfg), i)) for i in range(cfg.workers)]
    received: list[int] = []

    def forward(signum, frame):  # the workers' trainers save on SIGTERM; later signals only wait for them
        if not received:
            print(f"{signal.Signals(signum).name}: stopping the workers (their trainers save first)...",
                  file=sys.stderr)
            for p in procs:
                if p.pid is not None and p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
        received.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bad = [p.exitcode for p in procs if p.exitcode and p.exitcode not in (130, 128 + signal.SIGTERM, -signal.SIGTERM)]
    if bad and not received:
        fail(f"{len(bad)} of {cfg.workers} workers failed (exit {bad[0]}); see the lines above")
    return bool(received) or any(p.exitcode in (130, 128 + signal.SIGTERM, -signal.SIGTERM) for p in procs)


if __name__ == "__main__":
    main()
