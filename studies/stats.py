"""Aggregate scores over seeds with interval estimates, as rliable computes them (Agarwal et al. 2021,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice").

Scores are arrays of shape (runs, tasks): one row per seed, one column per environment. A statistic
maps such an array, or a batch of them (..., runs, tasks), to one number per array: `mean`, `iqm`
(the interquartile mean: the mean of the middle 50% of all runs' scores, rliable's recommended
aggregate). `interval` gives a statistic's point estimate and its 95% stratified bootstrap interval:
each resample redraws the runs of every task with replacement (the tasks stay fixed) and the
percentiles of the statistic over the resamples bound the interval. Several score arrays (two
optimizers, for a gain of one over the other) are resampled independently of each other, as
rliable's `StratifiedIndependentBootstrap` does.

The resampling draws the same indices as rliable's `get_interval_estimates` from a numpy
`RandomState` seeded like the global one rliable draws from, so the two give equal intervals on
equal scores (tests/test_studies.py checks it). Written out here, rather than imported, because rliable
pulls in arch, statsmodels, pandas and seaborn for these few lines.

A third axis (runs, tasks, points) is a curve per run: a resample then draws whole runs, every point of
a run together, so that statistics of a curve's shape (steps to reach a return) see real runs. (rliable
resamples each point on its own there; it agrees with this on 2D scores only.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

REPS = 50_000
"""Bootstrap resamples per interval: rliable's default."""


def as_scores(x) -> np.ndarray:
    """(runs,) -> (runs, 1): one task; (runs, tasks[, points]) as it is."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim not in (2, 3) or x.shape[0] == 0:
        raise ValueError(f"scores must be (runs,), (runs, tasks) or (runs, tasks, points) with runs >= 1, "
                         f"got shape {x.shape}")
    return x


def mean(x: np.ndarray) -> np.ndarray:
    """Mean over runs and tasks (the last two axes)."""
    return x.mean(axis=(-2, -1))


def iqm(x: np.ndarray) -> np.ndarray:
    """Interquartile mean over runs and tasks: scipy's trim_mean(proportiontocut=0.25) of all scores,
    which drops int(n / 4) scores at each end (none for n < 4: it is then the mean)."""
    flat = np.sort(x.reshape(*x.shape[:-2], -1), axis=-1)
    n = flat.shape[-1]
    cut = int(0.25 * n)
    return flat[..., cut:n - cut].mean(axis=-1)


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its interval."""

    point: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.point:.2f} [{self.low:.2f}, {self.high:.2f}]"


def resample_indices(shapes: list[tuple[int, ...]], reps: int, rng: np.random.RandomState) -> list[np.ndarray]:
    """Run indices (reps, runs, tasks) for each score array, drawn in rliable's order: per resample,
    one `choice(runs, (runs, tasks))` per array in turn."""
    if len(shapes) == 1 or len({s[0] for s in shapes}) == 1:
        # One bound for every draw: a single call yields the same stream as the per-resample calls.
        n = shapes[0][0]
        sizes = [s[0] * s[1] for s in shapes]
        flat = rng.choice(n, (reps, sum(sizes)), replace=True)
        cuts = np.cumsum(sizes)[:-1]
        return [part.reshape(reps, *s[:2]) for part, s in zip(np.split(flat, cuts, axis=1), shapes)]
    out = [np.empty((reps, *s[:2]), dtype=np.int64) for s in shapes]
    for r in range(reps):
        for i, s in enumerate(shapes):
            out[i][r] = rng.choice(s[0], s[:2], replace=True)
    return out


def interval(statistic: Callable[..., np.ndarray], *scores, reps: int = REPS, size: float = 0.95,
             seed: int = 0) -> Estimate:
    """`statistic(*scores)` and its `size` percentile stratified-bootstrap interval over `reps` resamples.

    `statistic` takes one array per score array, each (..., runs, tasks[, points]), and returns one
    number per leading index (it is called once on the data and once on all resamples stacked).
    """
    arrays = [as_scores(s) for s in scores]
    point = float(statistic(*arrays))
    rng = np.random.RandomState(seed)
    indices = resample_indices([a.shape for a in arrays], reps, rng)
    resampled = []
    for a, idx in zip(arrays, indices):
        tasks = np.arange(a.shape[1])[None, None, :]
        resampled.append(a[idx, tasks])  # (reps, runs, tasks[, points])
    values = np.asarray(statistic(*resampled), dtype=np.float64)
    alpha = 100 * (1 - size) / 2
    low, high = np.percentile(values, [alpha, 100 - alpha])
    return Estimate(point, float(low), float(high))


# ------------------------------------------------------------------------------------------------
# Statistics of curves: (..., runs, tasks, points) on a common grid of steps
# ------------------------------------------------------------------------------------------------


def steps_to_reach(curve: np.ndarray, steps: np.ndarray, threshold) -> np.ndarray:
    """The first step at which `curve` (..., points), linearly interpolated between points, reaches
    `threshold` (a number or one per curve); inf where it never does."""
    curve = np.asarray(curve, dtype=np.float64)
    threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float64), curve.shape[:-1])[..., None]
    above = curve >= threshold
    first = np.argmax(above, axis=-1)
    reached = above.any(axis=-1)
    out = np.full(curve.shape[:-1], np.inf)
    at_start = reached & (first == 0)
    out[at_start] = steps[0]
    rest = reached & (first > 0)
    i = first[rest]
    c = curve[rest]
    rows = np.arange(len(i))
    y0, y1 = c[rows, i - 1], c[rows, i]
    t = (threshold[rest][:, 0] - y0) / np.where(y1 > y0, y1 - y0, 1.0)
    out[rest] = steps[i - 1] + np.clip(t, 0.0, 1.0) * (steps[i] - steps[i - 1])
    return out
