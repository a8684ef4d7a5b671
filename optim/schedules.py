"""Learning-rate schedules as torch LRSchedulers: linear warmup then cosine decay, linear anneal, constant.

Each is a closed-form multiplier of the optimizer's initial lr (per group) as a function of the step
count, so resuming from `state_dict` (which torch's LRScheduler saves: last_epoch, base_lrs and our
fields) gives exactly the lrs an uninterrupted run would have had. Call `scheduler.step()` once after
each `optimizer.step()`, as with any torch scheduler; the factor functions are also usable alone.

    sched = optim.schedules.build("warmup_cosine", opt, warmup_steps=1000, total_steps=100_000)
"""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, final_factor: float = 0.0,
                         warmup_start: float = 0.0) -> float:
    """Linear from `warmup_start` to 1 over `warmup_steps`, then half a cosine down to `final_factor`
    at `total_steps` (Loshchilov & Hutter 2017, SGDR, without restarts; warmup as Goyal et al. 2017),
    then `final_factor`."""
    if step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup_steps) / decay_steps)
    return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_factor(step: int, total_steps: int, final_factor: float = 0.0) -> float:
    """From 1 down to `final_factor` linearly over `total_steps`, then `final_factor`. With the default
    0 this is PPO's annealing (Schulman et al. 2017; CleanRL's `frac = 1 - (update - 1) / num_updates`
    is this factor at step update - 1)."""
    return 1.0 + (final_factor - 1.0) * min(step, total_steps) / total_steps


class _FactorSchedule(LRScheduler):
    """lr_i = base_lr_i * factor(last_epoch), recomputed from scratch at each step."""

    def factor(self, step: int) -> float:
        raise NotImplementedError

    def get_lr(self):
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    def _get_closed_form_lr(self):
        return self.get_lr()


class WarmupCosine(_FactorSchedule):
    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, final_factor: float = 0.0,
                 warmup_start: float = 0.0, last_epoch: int = -1):
        if warmup_steps < 0 or total_steps < 1 or warmup_steps > total_steps:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got "
                             f"warmup_steps={warmup_steps}, total_steps={total_steps}")
        if final_factor < 0 or warmup_start < 0:
            raise ValueError("final_factor and warmup_start must be >= 0")
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.final_factor, self.warmup_start = final_factor, warmup_start
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.final_factor, self.warmup_start)


class LinearAnneal(_FactorSchedule):
    def __init__(self, optimizer: Optimizer, total_steps: int, final_factor: float = 0.0, last_epoch: int = -1):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if final_factor < 0:
            raise ValueError("final_factor must be >= 0")
        self.total_steps, self.final_factor = total_steps, final_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        return linear_factor(step, self.total_steps, self.final_factor)


class Constant(_FactorSchedule):
    """The initial lr throughout; lets code always hold a scheduler."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        return 1.0


SCHEDULES = {"constant": Constant, "linear": LinearAnneal, "warmup_cosine": WarmupCosine}


def build(name: str, optimizer: Optimizer, **kwargs) -> LRScheduler:
    """Make schedule `name` (one of SCHEDULES) over `optimizer`; an unknown name is a ValueError."""
    key = name.lower()
    if key not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(sorted(SCHEDULES))}")
    try:
        return SCHEDULES[key](optimizer, **kwargs)
    except TypeError as e:
        raise ValueError(f"{name}: {e}") from None


__all__ = ["Constant", "LinearAnneal", "WarmupCosine", "SCHEDULES", "build", "linear_factor",
           "warmup_cosine_factor"]
