"""Observers: what follows a run's evaluations from inside its process (studies.sweep reports them
to Optuna's pruner). Each gets (step, score) after every evaluation and may raise to stop the run."""
from __future__ import annotations

import contextlib
from typing import Callable

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


def observed(run) -> None:
    """A Run opened while observers listen: closed with them."""
    if _observers:
        _observed_runs.append(run)
