"""Multi-seed grids: every (setting, seed) a run of the real trainer, then a report with intervals.

    python -m studies.grid --agent dqn --env CartPole-v1 --optimizers rmsproptf adam --seeds 5 \\
        --total-timesteps 50000 --workers 2
    python -m studies.grid --agent ppo --env CartPole-v1 --set learning_rate=1e-4,3e-4,1e-3 --seeds 3
    python -m studies.grid --agent dcgan --env ring8 --optimizers adam/rmsprop sgd/sgd --seeds 5

The settings are the optimizers (`--optimizers`; for the DCGAN trainer GENERATOR/DISCRIMINATOR) crossed
with every `--set KEY=V1,V2,...` that lists several values; a `--set` with one value applies to all.
Each (setting, seed) runs as its own process (`python -m agents.dqn ...`, the trainer's preset and the
flags the grid names, nothing else), `--workers` at once, each with its share of the CPU threads,
into `OUT/runs/SETTING/`; its output goes to `OUT/logs/`. The grid is resumable: a run whose final.pt
exists at the budget asked for is not run again, a run killed part way continues from its
checkpoint.pt, and so a grid restarted with the same command runs only what is missing. Ctrl-C (or
SIGTERM) stops the running trainers, which save, and says how to continue.

The report (`OUT/report.md`, `OUT/table.md`, `OUT/curves.png`, `OUT/results.json`) scores each run by
its evaluations during training (`--metric`, by default `eval/episodic_return`: the trainer's
evaluation with exploration off every --eval-interval steps and at the end): the final value (the
evaluation of the final weights), the area under the curve per step, and the first step that
reaches `--threshold`. Per setting it gives the mean and the interquartile mean over seeds, each with
its 95% stratified bootstrap interval as rliable computes them (studies.stats).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from agents import off_policy
from common import cli
from common.config import as_current
from common.errors import UserError, exits_cleanly, fail
from common.events import read_curve
from studies.trainers import AGENTS, STUDY_FIELDS, Agent, die_with_parent, flags, seed_list


@dataclass
class Config:
    """Run a trainer over settings x seeds, resumably, and report each setting with bootstrap intervals."""

    agent: Literal["dqn", "rainbow", "ppo", "sac", "dcgan"]
    """Trainer to run."""
    env: str
    """Environment (short name or gymnasium id); for dcgan, the dataset (cifar10, folder, ring8, grid25)."""
    optimizers: tuple[str, ...] = ()
    """Optimizers to compare, by registry name (dcgan: GENERATOR/DISCRIMINATOR, e.g. adam/rmsprop), each
    optionally with config fields of its own after commas (kfac,kfac_combine=graft); none: the trainer's
    default."""
    set: tuple[str, ...] = ()
    """KEY=VALUE config fields for every run, KEY=V1,V2,... for one setting per value (crossed with
    the optimizers and the other lists). Keys are config field names (learning_rate) as in --help."""
    seeds: tuple[str, ...] = ("5",)
    """N: seeds 1..N of each setting; or the seeds themselves, as a list (3 7 11, or 3,7,11), a range (4-6) or
    one seed followed by a comma (7,)."""
    total_timesteps: Optional[int] = None
    """Each run's budget (env steps; dcgan: generator steps); default: the preset's."""
    eval_interval: Optional[int] = None
    """Steps between the trainers' evaluations, the points of the curves (default: the preset's; dcgan:
    --sample-interval). Every run also evaluates its final weights."""
    workers: int = 1
    """Runs at once; each gets (CPU cores / workers) threads."""
    out: Optional[str] = None
    """Report folder (default: runs/grid/{env}__{agent})."""
    metric: Optional[str] = None
    """TensorBoard tag that scores a run (default: eval/episodic_return; dcgan: metrics/modes on 2D
    mixtures, metrics/is on images)."""
    threshold: Optional[float] = None
    """Report the first step each run's curve reaches this; default: halfway from the lowest first
    value to the highest final mean of the settings."""
    report_only: bool = False
    """Write the report from the runs that have finished; run nothing."""
    device: str = "auto"
    """Passed to every run (auto, cpu, cuda, cuda:N)."""


# ------------------------------------------------------------------------------------------------
# Settings and runs
# ------------------------------------------------------------------------------------------------


@dataclass
class Setting:
    """One point of the grid: config fields (name -> value as typed) common to its seeds."""

    values: dict[str, str]

    @property
    def name(self) -> str:
        """`optimizer=adam,learning_rate=1e-4`, or `default`: the folder name and the report's label."""
        return ",".join(f"{k}={v}" for k, v in self.values.items()) or "default"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", self.name)

    def flags(self, bools: set[str] = frozenset()) -> list[str]:
        return flags(self.values, bools)


@dataclass
class RunPlan:
    setting: Setting
    seed: int
    logdir: Path
    log: Path
    budget: int = 0
    """The step the run trains to (its setting's: --total-timesteps or the preset's)."""
    expected: dict = field(default_factory=dict)
    """The run's config as the trainer checks it, less what may differ between invocations (COMPARED)."""
    folder: Optional[Path] = None
    """The run's folder once it exists (found, or made by the trainer)."""
    status: str = "pending"
    """pending, resume, done, failed."""
    resume_logdir: str = ""
    """--logdir as the run's checkpoint has it (a resumed run must name the same)."""


# Config fields that may differ between a run and the grid that finds it again: the seed (the
# setting's config is checked with seed 1), where it writes, how it was started, and the budget, which
# a grid restarted with a larger --total-timesteps raises (the run then resumes to it).
NOT_COMPARED = ("seed", "logdir", "resume", "eval", "device", "capture_video",
                "save_replay")  # what a checkpoint keeps, not what the run computes


def parse_sets(items: tuple[str, ...], fields: set[str]) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """`--set` items as (fixed fields, fields with several values)."""
    fixed, varied = {}, []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            fail(f"--set {item!r}: write KEY=VALUE (or KEY=V1,V2,... for one setting per value)")
        if key in STUDY_FIELDS:
            fail(f"--set {key}: the grid sets --{key.replace('_', '-')} itself")
        if key not in fields:
            close = [f for f in sorted(fields) if key in f or f in key]
            fail(f"--set {key}: not a config field of this trainer"
                 + (f" (did you mean {', '.join(close)}?)" if close else "; see its --help"))
        values = [v.strip() for v in value.split(",") if v.strip()]
        if len(values) == 1:
            fixed[key] = values[0]
        else:
            varied.append((key, values))
    return fixed, varied


def settings_of(cfg: Config, agent: Agent, fields: set[str]) -> tuple[list[Setting], dict[str, str]]:
    fixed, varied = parse_sets(cfg.set, fields)
    axes = list(varied)
    if cfg.optimizers:
        for opt_field in agent.optimizer_fields:
            if opt_field in fixed or opt_field in dict(varied):
                fail(f"--set {opt_field} and --optimizers both choose the optimizer; use one")
        choices = []
        for o in cfg.optimizers:
            # NAME or NAME,KEY=VALUE,...: an optimizer with fields of its own (kfac,kfac_combine=graft)
            names, *own = o.split(",")
            parts = names.split("/")
            if len(parts) != len(agent.optimizer_fields) or not all(parts):
                want = "GENERATOR/DISCRIMINATOR (e.g. adam/rmsprop)" if len(agent.optimizer_fields) == 2 else "one name"
                fail(f"--optimizers {o!r}: {cfg.agent} takes {want}, then ,KEY=VALUE fields of its own if any")
            own_fixed, own_varied = parse_sets(tuple(own), fields)
            if own_varied or any(k in fixed or k in dict(varied) or k in agent.optimizer_fields for k in own_fixed):
                fail(f"--optimizers {o!r}: an optimizer's own fields take one value each, and no field --set "
                     f"or --optimizers sets already")
            choices.append((parts, own_fixed))
        if len({(tuple(c), tuple(own.items())) for c, own in choices}) != len(choices):
            fail("--optimizers lists an optimizer twice")
        settings = []
        for choice, own in choices:
            for combo in itertools.product(*[vals for _, vals in axes]):
                values = dict(zip(agent.optimizer_fields, choice))
                values.update(own)
                values.update(zip([k for k, _ in axes], combo))
                settings.append(Setting(values))
    else:
        settings = [Setting(dict(zip([k for k, _ in axes], combo)))
                    for combo in itertools.product(*[vals for _, vals in axes])]
    return settings, fixed


def base_args(cfg: Config, agent: Agent, fixed: dict[str, str]) -> list[str]:
    args = [f"--{agent.env_field}", cfg.env, "--device", cfg.device]
    if cfg.total_timesteps is not None:
        args += [f"--{agent.budget_field.replace('_', '-')}", str(cfg.total_timesteps)]
    if cfg.eval_interval is not None:
        args += [f"--{agent.eval_field_for(cfg.env).replace('_', '-')}", str(cfg.eval_interval)]
    try:
        return args + Setting(fixed).flags(agent.bool_fields())
    except ValueError as e:
        fail(f"--set {e}")


def run_args(plan: RunPlan, base: list[str], bools: set[str]) -> list[str]:
    args = base + plan.setting.flags(bools) + ["--seed", str(plan.seed)]
    if plan.status == "resume":
        return args + ["--logdir", plan.resume_logdir, "--resume", str(plan.folder / "checkpoint.pt")]
    return args + ["--logdir", str(plan.logdir)]


def comparable(config: dict, trainer) -> dict:
    """A config (as config.json holds it) without the fields two invocations may differ in nor those it
    does not use (the trainer's `unused`: SAC's K-FAC fields under Adam), each value as the trainer's
    `canonical` reads it (`Hopper` is `Hopper-v5`), and as a checkpoint's is read: an earlier version's
    field names under today's, a field it lacks as what its absence meant (the config class's LEGACY)."""
    config = as_current(trainer.config_cls, config)
    skip = {*NOT_COMPARED, trainer.budget, *trainer.unused(config)}
    return {k: trainer.canonical(k, v) for k, v in config.items() if k not in skip}


def check_settings(trainer, plans: list[RunPlan], base: list[str], bools: set[str]) -> None:
    """Parse and check every setting's command as the trainer would (a typo fails here, before any run
    starts), and give each plan its setting's budget and config."""
    from common import lifecycle

    checked: dict[str, tuple[int, dict]] = {}
    for plan in plans:
        if plan.setting.name not in checked:
            args = base + plan.setting.flags(bools) + ["--seed", "1", "--logdir", str(plan.logdir)]
            try:
                cfg, _ = lifecycle.load_config(trainer, args)
            except UserError as e:
                fail(f"setting {plan.setting.name}: {e}")
            config = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))  # as config.json has it
            checked[plan.setting.name] = (int(getattr(cfg, trainer.budget)),
                                             comparable(config, trainer))
        plan.budget, plan.expected = checked[plan.setting.name]


def finished(folder: Path) -> bool:
    """A final.pt no older than the run's last checkpoint (a newer checkpoint: trained on past it)."""
    final, ckpt = folder / "final.pt", folder / "checkpoint.pt"
    return final.exists() and (not ckpt.exists() or final.stat().st_mtime >= ckpt.stat().st_mtime)


def differs(config: dict, plan: RunPlan, trainer) -> Optional[tuple[str, object, object]]:
    """The first field (as `comparable` reads it) in which a run's config differs from what `plan` asks:
    (field, the run's value, the plan's), or None."""
    ran = comparable(config, trainer)
    differ = sorted(k for k, v in ran.items() if plan.expected.get(k, v) != v)
    return (differ[0], ran[differ[0]], plan.expected.get(differ[0])) if differ else None


def find_run(plan: RunPlan, trainer) -> None:
    """Set `plan`'s folder and status from what its logdir holds: done (final.pt at this budget, newer
    than the last checkpoint), resume (a checkpoint: killed part way, or finished at a smaller budget),
    or pending. A run there trained with another config is refused (one line), not taken for this one."""
    best: tuple[float, Path, str] | None = None
    for folder in sorted(plan.logdir.glob(f"*__{trainer.kind}__{plan.seed}__*")):
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            continue  # made but never got going: not a run to continue
        if (d := differs(config, plan, trainer)) is not None:
            fail(f"{folder} was trained with {d[0]}={d[1]!r}, this grid asks for {d[2]!r}: "
                 "pass another --out for a different grid")
        if finished(folder) and config.get(trainer.budget) == plan.budget:
            plan.folder, plan.status = folder, "done"
            return
        ckpt = folder / "checkpoint.pt"
        if ckpt.exists():
            mtime = ckpt.stat().st_mtime
            if best is None or mtime >= best[0]:
                best = (mtime, folder, str(config.get("logdir", plan.logdir)))
    if best is not None:
        plan.folder, plan.status, plan.resume_logdir = best[1], "resume", best[2]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


@contextlib.contextmanager
def locked(out: Path):
    """One grid at a time in a report folder: a second would run the same missing runs."""
    import fcntl

    handle = open(out / ".grid.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        fail(f"another grid is running in {out}; wait for it, or pass another --out")
    try:
        yield
    finally:
        handle.close()


def run_all(plans: list[RunPlan], module: str, base: list[str], workers: int, trainer,
            bools: set[str]) -> list[RunPlan]:
    """Run the plans that are not done, `workers` at once; returns those that failed. The first
    SIGINT/SIGTERM asks the running trainers to save and stop; a second says who is still saving; a
    third kills them."""
    todo = [p for p in plans if p.status != "done"]
    threads = max(1, cpu_count() // workers)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    running: dict[subprocess.Popen, tuple[RunPlan, float]] = {}
    failed: list[RunPlan] = []
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        if len(received) == 1:
            print(f"{signal.Signals(signum).name}: stopping the running trainers (they save first)...",
                  file=sys.stderr)
            for proc in running:
                proc.send_signal(signal.SIGTERM)
        elif len(received) == 2:
            names = ", ".join(f"{p.setting.name} seed {p.seed}" for p, _ in running.values())
            print(f"still saving: {names}; a third signal kills them", file=sys.stderr)
        else:
            for proc in running:
                proc.kill()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    total, finished = len(plans), len(plans) - len(todo)
    try:
        while todo or running:
            while todo and len(running) < workers and not received:
                plan = todo.pop(0)
                plan.log.parent.mkdir(parents=True, exist_ok=True)
                with open(plan.log, "a") as log:
                    cmd = [sys.executable, "-m", module, *run_args(plan, base, bools)]
                    log.write(f"$ {' '.join(cmd)}\n")
                    log.flush()
                    # its own session: only our one SIGTERM reaches it (a second signal aborts its save)
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=die_with_parent)
                running[proc] = (plan, time.time())
                if received:  # a signal came while it started
                    proc.send_signal(signal.SIGTERM)
                what = "resuming" if plan.status == "resume" else "starting"
                print(f"{what} {plan.setting.name} seed {plan.seed} ({threads} thread{'s' * (threads > 1)})",
                      file=sys.stderr, flush=True)
            if received and not running:
                break
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                plan, t0 = running.pop(proc)
                took = time.time() - t0
                find_run(plan, trainer)
                if proc.returncode == 0 and plan.status == "done":
                    finished += 1
                    print(f"[{finished}/{total}] done {plan.setting.name} seed {plan.seed} in {took:.0f} s",
                          file=sys.stderr, flush=True)
                elif received and proc.returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM):
                    # saved and stopped, or killed still starting up (before it had anything to save)
                    print(f"stopped {plan.setting.name} seed {plan.seed}", file=sys.stderr)
                else:
                    plan.status = "failed"
                    failed.append(plan)
                    print(f"failed {plan.setting.name} seed {plan.seed} (exit {proc.returncode}): "
                          f"{last_line(plan.log)} [log: {plan.log}]", file=sys.stderr, flush=True)
    finally:
        for proc in running:  # leaving on an error of our own: no trainer is left behind
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            proc.wait()
        for s, h in previous.items():
            signal.signal(s, h)
    if received:
        print("grid stopped; run the same command again to continue where it left off", file=sys.stderr)
        sys.exit(128 + received[0])
    return failed


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


@dataclass
class SettingResult:
    setting: Setting
    seeds: list[int]
    folders: list[Path]
    curves: list = field(default_factory=list)
    resumed: list = field(default_factory=list)
    """Per run: whether it was resumed."""
    refilled: list = field(default_factory=list)
    """Per run: whether a resume refilled its replay memory (DQN, Rainbow or SAC run without --save-replay):
    it learned from other transitions than an uninterrupted run would."""
    final: np.ndarray = field(default_factory=lambda: np.zeros(0))
    auc: np.ndarray = field(default_factory=lambda: np.zeros(0))


def collect(plans: list[RunPlan], metric: str) -> list[SettingResult]:
    """Each setting's finished runs with the metric's curve: final value and area per step."""
    from studies.compare import area_per_step

    results: dict[str, SettingResult] = {}
    missing = []
    for plan in plans:
        res = results.setdefault(plan.setting.name, SettingResult(plan.setting, [], []))
        if plan.status != "done":
            continue
        curve, tags = read_curve(plan.folder, metric)
        if curve is None:
            missing.append((plan, tags))
            continue
        res.seeds.append(plan.seed)
        res.folders.append(plan.folder)
        res.curves.append(curve)
        try:
            log = plan.log.read_text(errors="replace")
        except OSError:
            log = ""
        res.resumed.append("--resume" in log)
        res.refilled.append(off_policy.REFILLING in log)
    for plan, tags in missing:
        print(f"warning: {plan.folder} logged no {metric!r} (its tags: {', '.join(tags) or 'none'}); "
              "left out", file=sys.stderr)
    for res in results.values():
        res.final = np.array([c.values[-1] for c in res.curves])
        res.auc = np.array([area_per_step(c) for c in res.curves])
    return list(results.values())


def default_threshold(results: list[SettingResult]) -> float | None:
    firsts = [c.values[0] for r in results for c in r.curves]
    finals = [r.final.mean() for r in results if len(r.final)]
    if not firsts:
        return None
    return float(min(firsts) + (max(finals) - min(firsts)) / 2)


def table_rows(results: list[SettingResult], threshold: float | None) -> list[dict]:
    from studies import stats

    rows = []
    for r in results:
        row = {"setting": r.setting.name, "seeds": len(r.seeds), "values": r.setting.values}
        if len(r.seeds):
            for name, scores in (("final", r.final), ("auc", r.auc)):
                for stat in ("mean", "iqm"):
                    e = stats.interval(getattr(stats, stat), scores)
                    row[f"{name}_{stat}"] = dataclasses.asdict(e)
            if threshold is not None:
                reached = [float(stats.steps_to_reach(c.values, c.steps.astype(np.float64), threshold))
                           for c in r.curves]
                row["steps_to_threshold"] = reached
        rows.append(row)
    return rows


def _cell(e: dict | None) -> str:
    return "-" if e is None else f"{e['point']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"


def _steps_cell(steps: list[float] | None) -> str:
    if not steps:
        return "-"
    hit = [s for s in steps if np.isfinite(s)]
    if not hit:
        return f"never (0/{len(steps)})"
    return f"{np.median(hit):,.0f} ({len(hit)}/{len(steps)})"


def format_table(rows: list[dict], metric: str, threshold: float | None) -> str:
    header = ["setting", "seeds", "final: mean", "final: IQM", "AUC/step: mean", "AUC/step: IQM"]
    if threshold is not None:
        header.append(f"steps to {threshold:.4g}")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        cells = [r["setting"], str(r["seeds"]), _cell(r.get("final_mean")), _cell(r.get("final_iqm")),
                 _cell(r.get("auc_mean")), _cell(r.get("auc_iqm"))]
        if threshold is not None:
            cells.append(_steps_cell(r.get("steps_to_threshold")))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"`{metric}` per run: final = its last value (the evaluation of the final weights), AUC/step "
                 "= area under its curve over steps divided by the steps it spans. Across seeds: mean and "
                 "interquartile mean (IQM), each [95% stratified bootstrap interval, 50,000 resamples, "
                 "rliable's estimator]." + (" Steps to the threshold: median over the runs that reached it "
                                            "(how many did)." if threshold is not None else ""))
    return "\n".join(lines)


def plot(results: list[SettingResult], env: str, algo: str, metric: str, out: Path) -> None:
    from studies import compare

    groups = []
    for r in results:
        if not r.curves:
            continue
        g = compare.Group(env, algo, r.setting.values, label=r.setting.name)
        g.runs = [compare.RunData(f, env, algo, str(s), r.setting.values, c)
                  for f, s, c in zip(r.folders, r.seeds, r.curves)]
        groups.append(g)
    if groups:
        compare.plot(groups, metric, 1, out, band="ci")


@dataclass
class Outcome:
    """What a grid found: the table's rows (also in results.json), each setting's runs and curves, the table."""

    rows: list[dict]
    results: list[SettingResult]
    table: str


def write_report(cfg: Config, out: Path, plans: list[RunPlan], metric: str, command: str,
                 failed: list[RunPlan]) -> Outcome:
    results = collect(plans, metric)
    threshold = cfg.threshold if cfg.threshold is not None else default_threshold(results)
    rows = table_rows(results, threshold)
    table = format_table(rows, metric, threshold)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, cfg.env, cfg.agent, metric, out / "curves.png")
    (out / "table.md").write_text(table + "\n")
    done = sum(r["seeds"] for r in rows)
    n_seeds = len(seed_list(cfg.seeds))
    lines = [f"# Grid: {cfg.agent} on {cfg.env}", "", f"    {command}", "",
             f"{len(rows)} setting{'s' * (len(rows) > 1)} x {n_seeds} seeds, {budgets_said(plans)} steps each; "
             f"{done} of {len(plans)} runs finished" + (f", {len(failed)} failed (see logs/)" if failed else "") + ".",
             "", table, "", "![curves](curves.png)", "",
             "Curves: each setting's mean over seeds, with the 95% bootstrap interval of the mean as a band, "
             "against environment steps (left) and wall-clock time (right).", "", "## Runs", ""]
    for r in results:
        for seed, folder, resumed, refilled in zip(r.seeds, r.folders, r.resumed, r.refilled):
            said = " (resumed, its replay memory refilled)" if refilled else " (resumed)" if resumed else ""
            lines.append(f"- {r.setting.name}, seed {seed}: `{folder}`{said}")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    payload = {"agent": cfg.agent, "env": cfg.env, "metric": metric, "budgets": sorted({p.budget for p in plans}),
               "threshold": threshold,
               "command": command, "rows": rows,
               "runs": [{"setting": r.setting.name, "seed": s, "folder": str(f), "final": float(fv), "auc": float(av),
                         "resumed": resumed, "refilled": refilled}
                        for r in results
                        for s, f, fv, av, resumed, refilled in zip(r.seeds, r.folders, r.final, r.auc, r.resumed,
                                                                   r.refilled)]}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return Outcome(rows, results, table)


# ------------------------------------------------------------------------------------------------


def plan_grid(cfg: Config, argv_command: str) -> dict:
    """Everything `run` needs: the agent, its trainer, the plans found on disk, the base flags."""
    seeds = seed_list(cfg.seeds)
    if cfg.workers < 1:
        fail(f"--workers must be at least 1 (got {cfg.workers})")
    if cfg.total_timesteps is not None and cfg.total_timesteps < 1:
        fail(f"--total-timesteps must be positive (got {cfg.total_timesteps})")
    if cfg.eval_interval is not None and cfg.eval_interval < 1:
        fail(f"--eval-interval must be positive: the report scores runs by their evaluations (got {cfg.eval_interval})")
    if cfg.threshold is not None and not math.isfinite(cfg.threshold):
        fail(f"--threshold must be a finite number (got {cfg.threshold})")
    agent = AGENTS[cfg.agent]
    trainer = agent.trainer()
    fields = agent.fields()
    settings, fixed = settings_of(cfg, agent, fields)
    out = Path(cfg.out or f"runs/grid/{cfg.env.replace('/', '_')}__{cfg.agent}")
    base = base_args(cfg, agent, fixed)
    plans = [RunPlan(s, seed, out / "runs" / s.slug, out / "logs" / f"{s.slug}__seed{seed}.log")
             for s in settings for seed in seeds]
    bools = agent.bool_fields()
    check_settings(trainer, plans, base, bools)
    for plan in plans:
        find_run(plan, trainer)
    metric = cfg.metric or agent.metric_for(cfg.env)
    return dict(agent=agent, trainer=trainer, out=out, base=base, plans=plans, metric=metric, bools=bools,
                command=argv_command)


def budgets_said(plans: list[RunPlan]) -> str:
    budgets = sorted({p.budget for p in plans})
    return " or ".join(f"{b:,}" for b in budgets)


def run(cfg: Config, command: str = "python -m studies.grid") -> Outcome:
    """Run the grid (what is missing of it) and write its report."""
    p = plan_grid(cfg, command)
    plans, trainer, out = p["plans"], p["trainer"], p["out"]
    done = sum(pl.status == "done" for pl in plans)
    n_seeds = len(seed_list(cfg.seeds))
    print(f"grid: {len({pl.setting.name for pl in plans})} settings x {n_seeds} seeds = {len(plans)} runs of "
          f"{budgets_said(plans)} steps; {done} done already; report in {out}", file=sys.stderr)
    failed: list[RunPlan] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out {out}: cannot make it ({e.strerror or e})")
    with locked(out):
        if not cfg.report_only:
            failed = run_all(plans, p["agent"].module, p["base"], cfg.workers, trainer, p["bools"])
        outcome = write_report(cfg, out, plans, p["metric"], command, failed)
    print(outcome.table)
    print(f"report: {out / 'report.md'}", file=sys.stderr)
    if failed:
        fail(f"{len(failed)} of {len(plans)} runs failed; their logs are in {out / 'logs'}", code=1)
    return outcome


@exits_cleanly
def main(args: list[str] | None = None) -> Outcome:
    argv = sys.argv[1:] if args is None else args
    cfg = cli.parse(Config, argv, prog="python -m studies.grid", description=__doc__.split("\n")[0])
    return run(cfg, "python -m studies.grid " + " ".join(argv))


if __name__ == "__main__":
    main()
