"""Learning-rate schedules as torch LRSchedulers: linear warmup then cosine decay, linear anneal, constant;
and every schedule a trainer's `--lr-schedule` names (`from_spec`), chained in stages.

Each is a closed-form multiplier of the optimizer's initial lr (per group) as a function of the step
count, so resuming from `state_dict` (which torch's LRScheduler saves: last_epoch, base_lrs and our
fields) gives exactly the lrs an uninterrupted run would have had. Call `scheduler.step()` once after
each `optimizer.step()`, as with any torch scheduler; the factor functions are also usable alone.

    sched = optim.schedules.build("warmup_cosine", opt, warmup_steps=1000, total_steps=100_000)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

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


# ------------------------------------------------------------------------------------------------
# --lr-schedule SPEC: "NAME[:key=value,...][ then NAME[:key=value,...] ...]"
# ------------------------------------------------------------------------------------------------

# name: (what it does, its parameters with defaults). Steps count optimizer updates; a stage's length
# is its `steps`, and the last stage runs to the end of training. Factors (final, low, high) are
# fractions of each param group's own lr, so per-group learning rates keep their ratios.
NAMED = {
    "constant": ("the lr throughout", {}),
    "linear": ("linear from the lr to final * lr over the stage, in closed form (torch LambdaLR)", {"final": 0.0}),
    "warmup-linear": ("linear from start * lr up to the lr over the stage (torch LinearLR)", {"start": 0.0}),
    "step": ("times gamma every `every` steps (torch StepLR)", {"every": None, "gamma": 0.1}),
    "multistep": ("times gamma at each of the milestones, separated by ';' (torch MultiStepLR)",
                  {"milestones": None, "gamma": 0.1}),
    "exponential": ("times gamma every step (torch ExponentialLR)", {"gamma": None}),
    "cosine": ("half a cosine from the lr down to final * lr over the stage (torch CosineAnnealingLR)",
               {"final": 0.0}),
    "cosine-restarts": ("cosine down to final * lr over `period` steps, then restarts, each period times mult "
                        "(SGDR; torch CosineAnnealingWarmRestarts)", {"period": None, "mult": 1, "final": 0.0}),
    "cyclic": ("triangular cycles between low * lr and high * lr, `half` steps up and as many down "
               "(Smith 2017; torch CyclicLR)", {"low": 0.1, "high": 1.0, "half": None, "mode": "triangular"}),
    "onecycle": ("up from lr / div to the lr over pct of the stage, then down to lr / (div * final_div) "
                 "(Smith & Topin 2019; torch OneCycleLR)", {"pct": 0.3, "div": 25.0, "final_div": 1e4}),
    "warmup-cosine": ("linear warmup over `warmup` steps, then cosine to final * lr (Goyal et al. 2017; "
                      "Loshchilov & Hutter 2017)", {"warmup": None, "final": 0.0}),
    "plateau": ("times factor when the evaluation return has not improved for `patience` evaluations "
                "(torch ReduceLROnPlateau, mode max); stepped by evaluations, not updates; alone only",
                {"factor": 0.1, "patience": 10, "threshold": 1e-4, "min": 0.0}),
}


def parse(spec: str) -> list[tuple[str, dict[str, str]]]:
    """`warmup-linear:steps=1000 then cosine:final=0.1` -> [(name, {key: text}), ...]; ValueError (one line)
    naming what is wrong."""
    stages = []
    for part in spec.split(" then "):
        name, _, params = part.strip().partition(":")
        name = name.strip().lower().replace("_", "-")
        if name not in NAMED:
            raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(NAMED)}")
        values = {}
        for item in filter(None, (p.strip() for p in params.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not value.strip():
                raise ValueError(f"{name}: write {name}:key=value,... (got {item!r})")
            if key not in NAMED[name][1] and key != "steps":
                raise ValueError(f"{name} takes no {key!r}; it takes {', '.join([*NAMED[name][1], 'steps']) }")
            values[key] = value.strip()
        stages.append((name, values))
    if len(stages) > 1 and any(name == "plateau" for name, _ in stages):
        raise ValueError("plateau follows evaluations, not steps: it cannot be chained with other stages")
    for name, values in stages[:-1]:
        if "steps" not in values:
            raise ValueError(f"{name}: a stage before the last needs steps=N (its length in updates)")
    return stages


def _number(name: str, key: str, text: str, kind=float):
    try:
        value = kind(float(text)) if kind is int else kind(text)
    except ValueError:
        raise ValueError(f"{name}: {key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: {key} must be finite (got {text})")
    return value


def _stage(name: str, values: dict[str, str], optimizer: Optimizer, length: int) -> LRScheduler:
    """One stage over `length` updates, as a torch scheduler."""
    from torch.optim import lr_scheduler as L

    params = dict(NAMED[name][1])
    params.update(values)
    missing = [k for k, v in params.items() if v is None]
    if missing:
        raise ValueError(f"{name} needs {', '.join(f'{k}=' for k in missing)} (e.g. {name}:{missing[0]}=1000)")
    f = lambda key: _number(name, key, str(params[key]))  # noqa: E731

    def n(key: str) -> int:  # counts of updates (every, period, half, mult): at least 1
        value = _number(name, key, str(params[key]), int)
        if value < 1:
            raise ValueError(f"{name}: {key} must be at least 1 (got {params[key]})")
        return value

    # the lr the run was configured with: an earlier stage of a chain has already moved group["lr"] (a
    # warmup starts it near 0), while the first scheduler keeps the configured one as initial_lr
    lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    if name == "constant":
        return L.LambdaLR(optimizer, lambda t: 1.0)
    if name == "linear":
        # The closed form (LinearLR multiplies its last lr by a ratio each step, which rounds away from
        # it): PPO's anneal, lr * (1 - t / T), to the last bit
        final = f("final")
        return L.LambdaLR(optimizer, lambda t: linear_factor(t, length, final))
    if name == "warmup-linear":
        return L.LinearLR(optimizer, start_factor=max(f("start"), 1e-8), end_factor=1.0, total_iters=length)
    if name == "step":
        return L.StepLR(optimizer, step_size=n("every"), gamma=f("gamma"))
    if name == "multistep":
        try:
            milestones = sorted(int(float(m)) for m in str(params["milestones"]).split(";") if m.strip())
        except ValueError:
            raise ValueError(f"multistep: milestones={params['milestones']!r}: write steps separated by ';'") from None
        return L.MultiStepLR(optimizer, milestones=milestones, gamma=f("gamma"))
    if name == "exponential":
        return L.ExponentialLR(optimizer, gamma=f("gamma"))
    if name == "cosine":
        return L.LambdaLR(optimizer, lambda t: warmup_cosine_factor(t, 0, length, f("final")))
    if name == "cosine-restarts":
        # eta_min is one absolute lr for all groups in torch's class: the first group's final * lr
        return L.CosineAnnealingWarmRestarts(optimizer, T_0=n("period"), T_mult=n("mult"), eta_min=f("final") * lrs[0])
    if name == "cyclic":
        return L.CyclicLR(optimizer, base_lr=[f("low") * lr for lr in lrs], max_lr=[f("high") * lr for lr in lrs],
                          step_size_up=n("half"), mode=str(params["mode"]), cycle_momentum=False)
    if name == "onecycle":
        return L.OneCycleLR(optimizer, max_lr=lrs, total_steps=max(length, 2), pct_start=f("pct"),
                            div_factor=f("div"), final_div_factor=f("final_div"), cycle_momentum=False)
    if name == "warmup-cosine":
        return WarmupCosine(optimizer, warmup_steps=n("warmup"), total_steps=length, final_factor=f("final"))
    raise ValueError(f"{name}: not a step schedule")


def _closed_form_now(scheduler) -> list[float] | None:
    """The lrs of a closed-form stage (constant, linear, cosine, warmup-cosine: this run's length) at the
    step it was restored to; None for the recursive schedulers, whose lr is what they had reached."""
    from bisect import bisect_right

    from torch.optim import lr_scheduler as L

    s, epoch = scheduler, scheduler.last_epoch
    if isinstance(s, L.SequentialLR):
        i = bisect_right(s._milestones, epoch)
        s = s._schedulers[i]
        epoch = s.last_epoch  # the stage's own count, from its milestone
    if isinstance(s, _FactorSchedule):
        return s.get_lr()
    if not isinstance(s, L.LambdaLR):
        return None
    return [base * f(epoch) for base, f in zip(s.base_lrs, s.lr_lambdas)]


def _lengths(stages, total_steps: int) -> list[int]:
    """Each stage's length in updates: its steps=N, the last one's (when not given) the rest of the run."""
    lengths = [_number(name, "steps", values["steps"], int) if "steps" in values else None for name, values in stages]
    known = sum(n for n in lengths[:-1])
    if lengths[-1] is None:
        lengths[-1] = max(total_steps - known, 1)
    if any(n < 1 for n in lengths):
        raise ValueError(f"each stage's steps must be at least 1 (got {lengths})")
    return lengths


class Schedule:
    """What a trainer holds: `step()` after each update, `evaluated(score)` after each evaluation (only
    plateau uses it), `lr` for logging, and `state_dict()`/`load_state_dict()` for checkpoints."""

    def __init__(self, spec: str, optimizers: list[Optimizer], total_steps: int, warmup_steps: int = 0):
        if warmup_steps < 0:
            raise ValueError(f"warmup steps must not be negative (got {warmup_steps})")
        stages = parse(spec)
        if warmup_steps:
            if stages[0][0] == "plateau":
                raise ValueError("plateau follows evaluations, not steps: it cannot follow a warmup")
            stages = [("warmup-linear", {"steps": str(warmup_steps)}), *stages]
        self.spec, self.optimizers, self.plateau = spec, optimizers, stages[0][0] == "plateau"
        self.warmup_steps = warmup_steps
        self.schedulers = [self._build(stages, opt, total_steps) for opt in optimizers]

    @staticmethod
    def _build(stages, optimizer: Optimizer, total_steps: int):
        from torch.optim import lr_scheduler as L

        if stages[0][0] == "plateau":
            name, values = stages[0]
            params = dict(NAMED[name][1], **values)
            return L.ReduceLROnPlateau(optimizer, mode="max", factor=_number(name, "factor", str(params["factor"])),
                                       patience=_number(name, "patience", str(params["patience"]), int),
                                       threshold=_number(name, "threshold", str(params["threshold"])),
                                       min_lr=_number(name, "min", str(params["min"]))
                                       * optimizer.param_groups[0]["lr"])
        lengths = _lengths(stages, total_steps)
        if len(stages) == 1:
            return _stage(stages[0][0], stages[0][1], optimizer, lengths[0])
        parts = [_stage(name, values, optimizer, n) for (name, values), n in zip(stages, lengths)]
        milestones = [sum(lengths[:i + 1]) for i in range(len(lengths) - 1)]
        import warnings

        with warnings.catch_warnings():  # SequentialLR steps its stages with an epoch argument
            warnings.simplefilter("ignore", UserWarning)
            return L.SequentialLR(optimizer, parts, milestones)

    def step(self) -> None:
        if self.plateau:
            return
        import warnings

        with warnings.catch_warnings():  # SequentialLR's epoch-argument deprecation, at each milestone
            warnings.simplefilter("ignore", UserWarning)
            for s in self.schedulers:
                s.step()

    def evaluated(self, score: float) -> None:
        if self.plateau:
            for s in self.schedulers:
                s.step(score)

    @property
    def lr(self) -> float:
        """The first optimizer's first group's lr."""
        return self.optimizers[0].param_groups[0]["lr"]

    def rescale(self, index: int, ratio: float) -> None:
        """Multiply optimizer `index`'s learning rates, now and to come, by `ratio`: a learning-rate flag
        changed on --resume. Every lr a torch scheduler keeps (its bases, bounds and last values, the
        groups' initial, max and min lr) is proportional to the optimizer's lr, so all of them scale."""
        for group in self.optimizers[index].param_groups:
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] *= ratio
        top = self.schedulers[index]
        for s in (top, *getattr(top, "_schedulers", ())):
            for key in ("base_lrs", "_last_lr", "max_lrs", "min_lrs"):
                if isinstance(getattr(s, key, None), list):
                    setattr(s, key, [v * ratio for v in getattr(s, key)])
            if isinstance(getattr(s, "eta_min", None), float):
                s.eta_min *= ratio

    def state_dict(self) -> dict:
        return {"spec": self.spec, "warmup_steps": self.warmup_steps,
                "schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("spec") != self.spec:
            raise ValueError(f"the checkpoint's schedule is {state.get('spec')!r}, not {self.spec!r}")
        if state.get("warmup_steps", 0) != self.warmup_steps:
            raise ValueError(f"the checkpoint's schedule has --warmup-steps {state.get('warmup_steps', 0)}, "
                             f"not {self.warmup_steps}")
        for s, sd, opt in zip(self.schedulers, state["schedulers"], self.optimizers):
            # a stage's length is this run's (a larger budget on --resume stretches the closed forms);
            # the schedulers' own state_dicts would restore the first run's
            stages = [s, *getattr(s, "_schedulers", ())]
            totals = [getattr(stage, "total_steps", None) for stage in stages]
            s.load_state_dict(sd)
            for stage, total in zip(stages, totals):
                if isinstance(stage, _FactorSchedule) and total is not None:
                    stage.total_steps = total
            # building a scheduler set its first lr; the run goes on at the lr it had reached, or, in a
            # closed-form stage, at the lr of that step in the run as long as it is now (a larger budget)
            lrs = _closed_form_now(s) or (s.get_last_lr() if hasattr(s, "get_last_lr") else s._last_lr)
            s._last_lr = list(lrs)
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr


# ------------------------------------------------------------------------------------------------
# What a schedule will do over a run, without stepping it (lifecycle.check_lr_schedule)
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    """One stage of a spec laid over a run. `factor(t)` is the multiplier of each group's lr `t` updates
    into the stage, in closed form (torch's own closed forms: StepLR gamma ** (t // every), MultiStepLR,
    ExponentialLR, CosineAnnealingWarmRestarts, LinearLR; ours for the LambdaLR stages), or None where
    the lr is only known to stay between `bounds`: cyclic (between low and high) and onecycle (lr / div
    up to the lr, down to lr / (div * final_div)) are bounded by construction; plateau follows the
    evaluations (from the lr down to min * lr). `points` are the updates into the stage where a closed
    form is extreme or first changes (every, milestones, period, warmup, both ends)."""

    name: str
    start: int
    length: int
    factor: Callable[[int], float] | None
    bounds: tuple[float, ...] = ()
    points: tuple[int, ...] = ()

    @property
    def moves(self) -> bool:
        """Whether the stage is meant to change the lr over the updates (constant and plateau are not)."""
        return self.name not in ("constant", "plateau")


def _pow(base: float, exponent: int) -> float:
    try:
        return base ** exponent
    except OverflowError:
        return math.copysign(math.inf, base if exponent % 2 else 1.0)


def _restart_factor(t: int, period: int, mult: int, final: float) -> float:
    """CosineAnnealingWarmRestarts' lr over the first group's lr, in torch's closed form."""
    if mult == 1:
        t_cur, t_i = t % period, period
    else:
        n = int(math.log(t / period * (mult - 1) + 1, mult))
        t_cur, t_i = t - period * (mult ** n - 1) // (mult - 1), period * mult ** n
    return final + (1.0 - final) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def plan(spec: str, total_steps: int, warmup_steps: int = 0) -> list[Stage]:
    """The stages of `spec` (after a `warmup_steps` warmup) over a run of `total_steps` updates, each
    with its start and length as `from_spec` would make them; ValueError as `from_spec`'s."""
    stages = parse(spec)
    if warmup_steps:
        stages = [("warmup-linear", {"steps": str(warmup_steps)}), *stages]
    if stages[0][0] == "plateau":
        params = dict(NAMED["plateau"][1], **stages[0][1])
        return [Stage("plateau", 0, max(total_steps, 1), None, (1.0, _number("plateau", "min", str(params["min"]))))]
    lengths = _lengths(stages, max(total_steps, 1))
    out, start = [], 0
    for (name, values), length in zip(stages, lengths):
        out.append(_plan_stage(name, dict(NAMED[name][1], **values), start, length))
        start += length
    return out


def _plan_stage(name: str, params: dict, start: int, length: int) -> Stage:
    from bisect import bisect_right

    def f(key: str) -> float:
        return _number(name, key, str(params[key]))

    def n(key: str) -> int:
        return max(_number(name, key, str(params[key]), int), 1)

    ends = (0, 1, length - 1)
    if name == "constant":
        return Stage(name, start, length, lambda t: 1.0, points=(0,))
    if name == "linear":
        final = f("final")
        return Stage(name, start, length, lambda t: linear_factor(t, length, final), points=ends)
    if name == "warmup-linear":
        first = max(f("start"), 1e-8)
        return Stage(name, start, length, lambda t: first + (1 - first) * min(t, length) / length, points=ends)
    if name in ("step", "multistep", "exponential"):
        gamma = f("gamma")
        if name == "step":
            every = n("every")
            return Stage(name, start, length, lambda t: _pow(gamma, t // every), points=(*ends, every))
        if name == "multistep":
            ms = sorted(int(float(m)) for m in str(params["milestones"]).split(";") if m.strip())
            return Stage(name, start, length, lambda t: _pow(gamma, bisect_right(ms, t)), points=(*ends, *ms))
        return Stage(name, start, length, lambda t: _pow(gamma, t), points=ends)
    if name == "cosine":
        final = f("final")
        return Stage(name, start, length, lambda t: warmup_cosine_factor(t, 0, length, final), points=ends)
    if name == "cosine-restarts":
        period, mult, final = n("period"), n("mult"), f("final")
        return Stage(name, start, length, lambda t: _restart_factor(t, period, mult, final), points=(*ends, period - 1))
    if name == "warmup-cosine":
        warmup, final = n("warmup"), f("final")
        return Stage(name, start, length, lambda t: warmup_cosine_factor(t, warmup, length, final),
                     points=(*ends, warmup))
    if name == "cyclic":
        return Stage(name, start, length, None, (f("low"), f("high")))
    if name == "onecycle":
        div, final_div = f("div"), f("final_div")
        if div == 0 or final_div == 0:
            raise ValueError("onecycle: div and final_div must not be 0")
        return Stage(name, start, length, None, (1.0 / div, 1.0, 1.0 / (div * final_div)))
    raise ValueError(f"{name}: not a step schedule")


def factors_over_run(spec: str, total_steps: int, warmup_steps: int = 0, samples: int = 10_000
                     ) -> list[tuple[int, float, Stage]]:
    """(update, lr factor, its stage) at the updates 0 .. total_steps - 1 that tell what `spec` does over
    the run, in update order, computed in closed form (nothing is stepped, so a 10M-update run costs
    the same as a short one): each reached stage's first and second update, its extremes and first
    changes (`Stage.points`), `samples` updates evenly spread over the run, and the run's last update.
    A bounded stage (cyclic, onecycle, plateau; `Stage.factor` None) gives each of its bounds at its
    first update. Each closed form here is monotone between its points or bounded by their values,
    so the samples hold its extremes."""
    stages = plan(spec, total_steps, warmup_steps)
    total = max(total_steps, 0)
    if total == 0:
        return []
    reached = [s for s in stages if s.start < total]
    updates = {total - 1}
    if samples > 0:
        step = max(total / samples, 1.0)
        updates.update(int(i * step) for i in range(min(samples, total)))
    for s in reached:
        updates.update(s.start + p for p in s.points if p >= 0)
    starts = [s.start for s in reached]
    from bisect import bisect_right

    out = []
    for u in sorted(x for x in updates if 0 <= x < total):
        stage = reached[bisect_right(starts, u) - 1]
        if stage.factor is None:
            continue
        out.append((u, float(stage.factor(u - stage.start)), stage))
    for s in reached:
        if s.factor is None:
            out.extend((s.start, float(b), s) for b in s.bounds)
    out.sort(key=lambda x: x[0])
    return out


def from_spec(spec: str, optimizers, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """The schedule `spec` over one optimizer or several (a GAN's two), for `total_steps` updates."""
    if isinstance(optimizers, Optimizer):
        optimizers = [optimizers]
    try:
        return Schedule(spec, list(optimizers), total_steps, warmup_steps)
    except (TypeError, ZeroDivisionError) as e:
        raise ValueError(f"{spec!r}: {e}") from None


__all__ = ["Constant", "LinearAnneal", "WarmupCosine", "SCHEDULES", "build", "linear_factor",
           "warmup_cosine_factor", "NAMED", "Schedule", "from_spec", "parse", "Stage", "plan", "factors_over_run"]
