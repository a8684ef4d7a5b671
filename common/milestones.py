"""Recurring events of a training loop (a log, an evaluation, a checkpoint), due once per interval
of a step counter, and steps/s measured around them."""
from __future__ import annotations

import contextlib
import math
import time


def next_multiple(step: int, every: int) -> float:
    """The first multiple of `every` after `step` (inf for every = 0: never)."""
    return (step // every + 1) * every if every else math.inf


class Milestones:
    """Named events that fall due once per interval of a step counter (0: never; None: every tick),
    at multiples of the interval from step 0, also after a resume from any step. Steps/s is measured
    between logs and since the first update, leaving out the time spent in `paused()` blocks."""

    def __init__(self, step: int, **intervals: int | None):
        # (log_interval=... reads as log=...: the config fields' names)
        self._every = {name.removesuffix("_interval"): every for name, every in intervals.items()}
        intervals = self._every
        self._next = {name: step + 1 if every is None else next_multiple(step, every)
                      for name, every in intervals.items()}
        self._since, self._since_step = time.time(), step  # the last log
        self._updates_began: tuple[float, int] | None = None

    def due(self, name: str, step: int) -> bool:
        """Whether `name` falls due at `step`; then it waits an interval."""
        if step < self._next[name]:
            return False
        every = self._every[name]
        self._next[name] = step + 1 if every is None else self._next[name] + every
        if every:  # a tick that jumped past several multiples falls due once
            self._next[name] = max(self._next[name], next_multiple(step, every))
        return True

    def next_due(self, name: str) -> float:
        return self._next[name]

    def steps_per_second(self, step: int) -> float:
        """Since the previous call (or the start)."""
        now = time.time()
        sps = (step - self._since_step) / max(now - self._since, 1e-9)
        self._since, self._since_step = now, step
        return sps

    @property
    def learning(self) -> bool:
        """Whether updates have begun (the trainer said so with updates_began)."""
        return self._updates_began is not None

    def updates_began(self, step: int) -> None:
        if self._updates_began is None:
            self._updates_began = (time.time(), step)

    @contextlib.contextmanager
    def paused(self):
        """Around an evaluation or a save, which steps/s does not count."""
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
