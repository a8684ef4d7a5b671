"""Reading scalars back from a run folder's TensorBoard event files, with TensorBoard's own reader."""
from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_scalars(run_dir: str | Path, tag: str) -> list[tuple[float, int, float]]:
    """(wall_time, step, value) of every event of `tag` in `run_dir`, in step order; [] if none."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    return sorted(((e.wall_time, e.step, e.value) for e in acc.Scalars(tag)), key=lambda e: (e[1], e[0]))


def scalar_tags(run_dir: str | Path) -> list[str]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return sorted(acc.Tags().get("scalars", []))
