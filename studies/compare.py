"""Compare runs: one TensorBoard tag's mean and spread over seeds, grouped by config.

    python -m studies.compare runs --tag charts/episodic_return --out curves.png
    python -m studies.compare runs/CartPole-v1__dqn__1__* runs/CartPole-v1__dqn__2__* --last 100

Runs are grouped by environment, algorithm (both from the folder name, `{env}__{algo}__{seed}__{time}`)
and every field of the run's config.json but the seed and run plumbing (IGNORED_FIELDS), so the seeds
of one setting are averaged together and a learning-rate sweep gives one group per learning rate. A
group's label is its algorithm and the fields that differ between groups of the same environment and
algorithm (`dqn / learning_rate=0.001`); runs without a config.json group by environment and
algorithm alone. The figure
has one row per environment: the tag against environment steps (left) and against wall-clock time
since each run started (right), each group's mean over seeds as a line and one standard deviation
over seeds as a band. The table on stdout gives, per group, the final value and the area under the
curve, as mean +/- standard deviation over seeds. Event files are read with TensorBoard's own reader.
"""
from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from common import cli
from common.errors import exits_cleanly, fail
from common.events import Curve, find_run_dirs, read_curve


@dataclass
class Config:
    """Compare runs of one tag, grouped by config (all but the seed), with mean and spread over seeds."""

    run_dirs: tyro.conf.Positional[list[str]] = field(default_factory=lambda: ["runs"])
    """Run folders, or folders holding run folders; every run found below them is used."""
    tag: str = "charts/episodic_return"
    """TensorBoard scalar tag to compare."""
    out: str = "curves.png"
    """Where to write the figure; the format follows the suffix (.png, .pdf, .svg)."""
    last: int = 100
    """A run's final value is the mean of its last this many logged values (episodes, for episodic_return)."""
    smooth: int = 10
    """Figure only: trailing moving average over this many logged values of each run; 1 plots raw values."""


# Config fields that never make two runs different settings: the seed (averaged over), and run
# plumbing that says where a run writes, how it resumes or evaluates a checkpoint, what device it ran on,
# how often it checkpoints or logs, and where its data is. `env` is left out too: the folder name's env
# is the resolved id (`Breakout` and `ALE/Breakout-v5` are one env) and is part of the group already.
IGNORED_FIELDS = (
    "seed", "env", "logdir", "resume", "eval", "eval_episodes", "device", "capture_video",
    "checkpoint_interval", "save_every", "log_interval", "log_every", "data_dir", "download", "workers",
    "inception_weights", "eval_interval", "vector_mode", "sample_every", "fidelity_every", "sample_interval",
    "fidelity_interval", "fidelity_samples",
    # a budget, not a setting: a run resumed with a larger --total-timesteps stays with its seeds
    "total_timesteps",
)


@dataclass
class RunData:
    """One run folder: what identifies it and its curve of the compared tag."""

    path: Path
    env: str
    algo: str
    seed: str
    config: dict
    """The run's config.json less IGNORED_FIELDS: what makes it a setting ({} without a config.json)."""
    curve: Curve


@dataclass
class Group:
    """Runs of one environment, algorithm and config (all but the seed): the seeds to average over."""

    env: str
    algo: str
    config: dict
    runs: list[RunData] = field(default_factory=list)
    label: str = ""
    """Algorithm, then the config fields that differ between groups of this env and algo; set by group_runs."""


def describe(run_dir: Path) -> tuple[str, str, str, dict]:
    """(env, algo, seed, config less IGNORED_FIELDS) of a run folder, from its name and its config.json."""
    config: dict = {}
    config_file = run_dir / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            fail(f"{config_file}: not valid JSON")
        if not isinstance(config, dict):
            fail(f"{config_file}: not a JSON object of config fields")
    parts = run_dir.name.split("__")
    if len(parts) >= 4:  # {env}__{algo}__{seed}__{unix_time}; the env id is the resolved one
        env, algo, seed = parts[0], parts[1], parts[2]
    else:  # a folder renamed by hand: fall back on what the config says
        env, algo, seed = str(config.get("env", "?")), run_dir.name, str(config.get("seed", "?"))
    setting = {k: v for k, v in config.items() if k not in IGNORED_FIELDS}
    return env, algo, seed, setting


def load_runs(paths: list[str], tag: str) -> list[RunData]:
    """Every run folder under `paths` that logged `tag`; runs without it are named on stderr and left out."""
    run_dirs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            fail(f"{p}: no such folder")
        found = find_run_dirs(p)
        if not found:
            fail(f"{p}: no TensorBoard event files in it or below it")
        run_dirs += [d for d in found if d not in run_dirs]

    runs, without, all_tags = [], [], set()
    for run_dir in run_dirs:
        curve, tags = read_curve(run_dir, tag)
        all_tags.update(tags)
        if curve is None:
            without.append(run_dir)
            continue
        env, algo, seed, config = describe(run_dir)
        runs.append(RunData(run_dir, env, algo, seed, config, curve))
    if not runs:
        fail(f"no run logged {tag!r}; their scalar tags: {', '.join(sorted(all_tags)) or 'none'}")
    for run_dir in without:
        print(f"warning: {run_dir} has no {tag!r} yet; left out", file=sys.stderr)
    return runs


_MISSING = object()  # a field one run's config has and another's lacks (an older version of the trainer)


def _value_key(value) -> str:
    """A hashable, order-independent form of a config value (lists and dicts as canonical JSON)."""
    return json.dumps(value, sort_keys=True, default=str)


def _shown(value) -> str:
    return value if isinstance(value, str) else _value_key(value)


def _sort_key(value):
    """Numbers by value (learning rates ascending), then the rest as text; a missing field first."""
    if value is _MISSING:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, _shown(value))


def group_runs(runs: list[RunData]) -> list[Group]:
    """Runs of one env, algo and config (equal on every field but IGNORED_FIELDS) form one group.

    Labels name the algo and the fields whose values differ between groups of the same env and algo,
    in config order: a learning-rate sweep reads `dqn / learning_rate=0.001`, `dqn / learning_rate=0.0001`.
    """
    groups: dict[tuple, Group] = {}
    for run in runs:
        key = (run.env, run.algo, tuple(sorted((k, _value_key(v)) for k, v in run.config.items())))
        groups.setdefault(key, Group(run.env, run.algo, run.config)).runs.append(run)

    names: list[str] = []  # every field, in the order the configs list them
    for g in groups.values():
        names += [k for k in g.config if k not in names]
    def varying(count_null: bool) -> list[str]:
        """Fields whose values differ between groups of one env and algo. A JSON null is a
        hyper-parameter that does not apply (rmsprop_eps under adam): not a difference of its own
        unless `count_null`."""
        out: set[str] = set()
        for env, algo in {(g.env, g.algo) for g in groups.values()}:
            alike = [g for g in groups.values() if (g.env, g.algo) == (env, algo)]
            for k in names:  # _MISSING: the field is missing there, unlike the JSON null
                values = {_value_key(g.config[k]) if k in g.config else _MISSING for g in alike
                          if count_null or g.config.get(k, _MISSING) is not None}
                if len(values) > 1:
                    out.add(k)
        return [k for k in names if k in out]

    for count_null in (False, True):  # nulls are named only when nothing else tells groups apart
        shown_fields = varying(count_null)
        for g in groups.values():
            shown = [f"{k}={_shown(g.config[k])}" for k in shown_fields
                     if k in g.config and (count_null or g.config[k] is not None)]
            g.label = f"{g.algo} / {', '.join(shown)}" if shown else g.algo
        if len({(g.env, g.label) for g in groups.values()}) == len(groups):
            break
    return sorted(groups.values(), key=lambda g: (g.env, g.algo, [_sort_key(g.config.get(k, _MISSING))
                                                                  for k in shown_fields], g.label))


def final_value(curve: Curve, last: int) -> float:
    """Mean of the last `last` logged values: one episode's score alone is too noisy to rank by."""
    return float(curve.values[-last:].mean())


def area_per_step(curve: Curve) -> float:
    """Trapezoidal area under value-against-step, divided by the steps it spans: the curve's average
    height, so runs of different lengths compare. It rewards learning early as well as learning well."""
    steps, values = curve.steps.astype(np.float64), curve.values
    if len(steps) < 2 or steps[-1] == steps[0]:
        return float(values.mean())
    area = np.sum((values[1:] + values[:-1]) / 2 * np.diff(steps))
    return float(area / (steps[-1] - steps[0]))


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and standard deviation over seeds (numpy's np.std: divided by n, 0 for one seed)."""
    return float(np.mean(xs)), float(np.std(xs))


def summary(groups: list[Group], last: int) -> list[dict]:
    """One row per group: seeds, last step, final value and area per step (mean and std over seeds)."""
    rows = []
    for g in groups:
        final_mean, final_std = mean_std([final_value(r.curve, last) for r in g.runs])
        auc_mean, auc_std = mean_std([area_per_step(r.curve) for r in g.runs])
        # seeds counted as distinct seeds: two runs of one seed (another budget, say) are one seed, two runs
        rows.append({"env": g.env, "group": g.label, "seeds": len({r.seed for r in g.runs}), "runs": len(g.runs),
                     "steps": max(int(r.curve.steps[-1]) for r in g.runs),
                     "final": final_mean, "final_std": final_std, "auc": auc_mean, "auc_std": auc_std})
    return rows


def format_table(rows: list[dict], tag: str, last: int) -> str:
    header = ["env", "algo / config", "seeds", "steps", "final", "AUC / step"]
    body = [[r["env"], r["group"], str(r["seeds"]) + (f" ({r['runs']} runs)" if r["runs"] != r["seeds"] else ""),
             str(r["steps"]),
             f"{r['final']:.2f} +/- {r['final_std']:.2f}", f"{r['auc']:.2f} +/- {r['auc_std']:.2f}"]
            for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells):  # text columns to the left, numbers to the right
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    notes = (f"{tag}: final = mean of each run's last {last} values; AUC / step = area under each run's "
             "curve over steps divided by the steps it spans; both mean +/- std over seeds.")
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body), notes])


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; the first points average over what there is so far."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def mean_band(xs: list[np.ndarray], ys: list[np.ndarray], points: int = 256, band: str = "std"):
    """Mean over runs of curves sampled at different x, on a common grid by linear interpolation, and a
    band around it: one standard deviation over runs (`std`), or the 95% bootstrap interval of the mean
    at each grid point (`ci`: 2,000 resamples of the runs). Returns (grid, mean, low, high).

    The grid covers the x range that all runs share, so that the mean never mixes in a run that has
    stopped; runs that share no range (seeds of very different lengths) fall back on the union, each
    counted only over its own range.
    """
    lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
    if not hi > lo:
        lo, hi = min(x[0] for x in xs), max(x[-1] for x in xs)
    if hi == lo:
        grid = np.array([lo], dtype=np.float64)
    else:
        grid = np.linspace(lo, hi, points)
    stack = np.full((len(xs), len(grid)), np.nan)
    for i, (x, y) in enumerate(zip(xs, ys)):
        inside = (grid >= x[0]) & (grid <= x[-1])
        stack[i, inside] = np.interp(grid[inside], x, y)
    with warnings.catch_warnings():  # a gap between runs that share no range is left empty, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stack, axis=0)
        if band == "std":
            std = np.nanstd(stack, axis=0)
            return grid, mean, mean - std, mean + std
        idx = np.random.RandomState(0).randint(0, len(xs), size=(2000, len(xs)))
        means = np.nanmean(stack[idx], axis=1)  # (resamples, points)
        low, high = np.nanpercentile(means, [2.5, 97.5], axis=0)
        return grid, mean, low, high


def time_unit(seconds: float) -> tuple[str, float]:
    if seconds > 2 * 3600:
        return "hours", 3600.0
    if seconds > 120:
        return "minutes", 60.0
    return "seconds", 1.0


def plot(groups: list[Group], tag: str, smooth: int, out: Path, band: str = "std") -> None:
    """The figure: a row per environment, the tag against steps and against wall-clock time, each
    group's mean over seeds with a band (`std`: one standard deviation; `ci`: 95% bootstrap interval
    of the mean)."""
    # The object-oriented API without pyplot: no GUI backend, no global figure state.
    from matplotlib.figure import Figure

    envs = sorted({g.env for g in groups})
    fig = Figure(figsize=(12, 4.2 * len(envs)), layout="constrained")
    axes = fig.subplots(len(envs), 2, squeeze=False)
    longest = max(r.curve.elapsed[-1] for g in groups for r in g.runs)
    unit, per_unit = time_unit(longest)
    palette = [f"C{i}" for i in range(10)]
    labels = sorted({g.label for g in groups})  # one colour per algo / config across environments
    for row, env in enumerate(envs):
        by_steps, by_time = axes[row]
        for g in (g for g in groups if g.env == env):
            color = palette[labels.index(g.label) % len(palette)]
            ys = [smoothed(r.curve.values, smooth) for r in g.runs]
            n = len({r.seed for r in g.runs})
            seeds = f"{n} seed{'s' if n > 1 else ''}" + (f", {len(g.runs)} runs" if len(g.runs) != n else "")
            for ax, xs in ((by_steps, [r.curve.steps.astype(np.float64) for r in g.runs]),
                           (by_time, [r.curve.elapsed / per_unit for r in g.runs])):
                grid, mean, low, high = mean_band(xs, ys, band=band)
                marker = "o" if len(grid) == 1 else None
                ax.plot(grid, mean, color=color, marker=marker, label=f"{g.label} ({seeds})")
                if len(g.runs) > 1:
                    ax.fill_between(grid, low, high, color=color, alpha=0.25, linewidth=0)
        by_steps.set_xlabel("environment steps")
        by_time.set_xlabel(f"wall-clock time since the run started ({unit})")
        for ax in (by_steps, by_time):
            ax.set_title(env)
            ax.set_ylabel(tag)
            ax.grid(alpha=0.3)
        by_steps.legend(loc="best", fontsize="small")
    smoothing = f", moving average over {smooth} values" if smooth > 1 else ""
    spread = "one standard deviation" if band == "std" else "95% bootstrap interval of the mean"
    fig.suptitle(f"{tag}: mean and {spread} over seeds{smoothing}")
    fig.savefig(out, dpi=100)


def check(cfg: Config) -> Path:
    if cfg.last < 1:
        fail(f"--last must be at least 1 (got {cfg.last})")
    if cfg.smooth < 1:
        fail(f"--smooth must be at least 1 (got {cfg.smooth})")
    out = Path(cfg.out)
    if not out.parent.is_dir():
        fail(f"--out {out}: folder {out.parent} does not exist")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        fail(f"--out {out}: unknown figure format {out.suffix or '(none)'}; use one of "
             f"{', '.join('.' + f for f in sorted(formats))}")
    return out


@exits_cleanly
def main(args: list[str] | None = None) -> list[dict]:
    cfg = cli.parse(Config, args, prog="python -m studies.compare", description=__doc__.split("\n")[0])
    if not cfg.run_dirs:
        fail("name at least one run folder (or a folder of runs, such as runs)")
    out = check(cfg)
    groups = group_runs(load_runs(cfg.run_dirs, cfg.tag))
    rows = summary(groups, cfg.last)
    print(format_table(rows, cfg.tag, cfg.last))
    try:
        plot(groups, cfg.tag, cfg.smooth, out)
    except OSError as e:
        fail(f"--out {out}: cannot write it ({e.strerror or e})")
    print(f"figure: {out}")
    return rows


if __name__ == "__main__":
    main()
