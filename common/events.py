"""Reading scalars back from run folders' event files with TensorBoard's own reader."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EVENT_FILE_GLOB = "events.out.tfevents.*"


def _accumulator(run_dir: str | Path) -> EventAccumulator:
    # size_guidance 0 keeps every scalar event: the default keeps a random 10,000 per tag, which would
    # make areas under long curves depend on the reservoir's draw.
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def read_scalars(run_dir: str | Path, tag: str) -> list[tuple[float, int, float]]:
    """(wall_time, step, value) of every event of `tag` in `run_dir`, in step order; [] if none."""
    acc = _accumulator(run_dir)
    if tag not in acc.Tags().get("scalars", []):
        return []
    return sorted(((e.wall_time, e.step, e.value) for e in acc.Scalars(tag)), key=lambda e: (e[1], e[0]))


def scalar_tags(run_dir: str | Path) -> list[str]:
    return sorted(_accumulator(run_dir).Tags().get("scalars", []))


@dataclass
class Curve:
    """One run's scalar tag as arrays in step order, with the time its event file was started."""

    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray
    start_time: float
    """Wall time of the run's first event (the writer's creation), the origin of a wall-clock axis."""

    @property
    def elapsed(self) -> np.ndarray:
        """Seconds since the run started (a pause before a --resume is counted too)."""
        return self.wall_times - self.start_time


def read_curve(run_dir: str | Path, tag: str) -> tuple[Curve | None, list[str]]:
    """`tag`'s curve in `run_dir` (None if the run never logged it) and every scalar tag the run has."""
    acc = _accumulator(run_dir)
    tags = sorted(acc.Tags().get("scalars", []))
    if tag not in tags:
        return None, tags
    events = sorted(acc.Scalars(tag), key=lambda e: (e.step, e.wall_time))
    curve = Curve(
        steps=np.array([e.step for e in events], dtype=np.int64),
        values=np.array([e.value for e in events], dtype=np.float64),
        wall_times=np.array([e.wall_time for e in events], dtype=np.float64),
        start_time=acc.FirstEventTimestamp(),
    )
    return curve, tags


def is_run_dir(path: str | Path) -> bool:
    """A folder that holds TensorBoard event files itself (not only in sub-folders)."""
    return any(Path(path).glob(EVENT_FILE_GLOB))


def find_run_dirs(path: str | Path) -> list[Path]:
    """`path` itself if it is a run folder, else every run folder below it (as `tensorboard --logdir` finds them)."""
    path = Path(path)
    if is_run_dir(path):
        return [path]
    return sorted({event_file.parent for event_file in path.rglob(EVENT_FILE_GLOB)})
