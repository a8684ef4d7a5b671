"""Optimizer wiring every trainer shares: the checks of the optimizer aids (common.config's
OptimizerAidsConfig: --lr-schedule, --warmup-steps, --lr-mult, --optimizer-switch), what a schedule
does over the run as float32, the parameter groups --lr-mult makes, and the schedule itself, built
and restored from a checkpoint.

Depends on torch and optim (below common in the house: optim depends on torch only).
"""
from __future__ import annotations

import math
import sys

import torch

import optim
from common.checks import FLOAT32_MAX, as_float32, flag, non_negative
from common.errors import fail
from optim import groups, schedules


def check_lr_schedule(cfg, total_updates: int | None = None, lr_fields: tuple[str, ...] = ()) -> None:
    """The schedule builds (on a stand-in optimizer: nothing else is made yet), the warmup is not
    negative, and --lr-mult reads as PATTERN=FACTOR. (optim is torch-only, below common in the house.)

    With `total_updates`, the optimizer updates the run will make (what `lr_schedule` gets), the
    schedule is also checked for what it will do over them, at each base lr named by `lr_fields` (the
    config's learning-rate fields, e.g. ("g_lr", "d_lr")) times each --lr-mult factor (and 1). Refused,
    one line each: a --lr-mult factor that takes a learning rate past what a float32 holds; a learning
    rate that goes negative or past float32's largest value at some update of the run (e.g.
    exponential:gamma=10); a schedule meant to move the lr (any but constant and plateau) that never
    changes it within the run (e.g. step:every=1e9 on 1,000 updates; runs of fewer than 2 updates
    excepted). Nothing is stepped: `optim.schedules.factors_over_run` evaluates each stage's closed form
    at its first updates, extremes and first changes, 10,000 updates spread evenly over the run and its
    last update (each closed form is monotone or bounded between those points, so a 10M-update run
    costs what a short one does); cyclic and onecycle are bounded by construction (between low and
    high x lr; between lr / (div x final_div) and lr) and plateau follows evaluations (between min x lr
    and lr), so for them those bounds are checked. Without `total_updates` (callers not yet passing it)
    only the first checks run, over a stand-in of 1,000 updates, as before."""
    non_negative(cfg, "warmup_steps")
    cfg.lr_mult = tuple(cfg.lr_mult)
    try:
        mults = groups.parse(cfg.lr_mult)
    except ValueError as e:
        fail(f"--lr-mult: {e}")
    if cfg.optimizer_switch:
        try:
            optim.parse_switch(cfg.optimizer_switch)
        except ValueError as e:
            fail(f"--optimizer-switch: {e}")
    length = 1000 if total_updates is None else max(int(total_updates), 1)
    stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        schedules.from_spec(cfg.lr_schedule, stand_in, length, cfg.warmup_steps)
    except ValueError as e:
        fail(f"--lr-schedule: {e}")
    if total_updates is not None:
        _check_lr_over_run(cfg, int(total_updates), lr_fields, mults)

def _check_lr_over_run(cfg, total: int, lr_fields: tuple[str, ...], mults: dict[str, float]) -> None:
    spec = cfg.lr_schedule
    bases = [(f"--{flag(n)} {getattr(cfg, n):g}", float(getattr(cfg, n))) for n in lr_fields
             if isinstance(getattr(cfg, n, None), (int, float))] or [("the learning rate", 1.0)]
    starts = []  # (lr a group starts at, what makes it)
    for label, base in bases:
        starts.append((base, label))
        for pattern, m in mults.items():
            if not math.isfinite(as_float32(base * m)):
                fail(f"--lr-mult {pattern}={m:g} times {label} is {base * m:.3g}: more than a float32 holds "
                     f"({FLOAT32_MAX:.4g})")
            starts.append((base * m, f"{label} x --lr-mult {pattern}={m:g}"))
    top, top_label = max(starts)
    try:
        samples = schedules.factors_over_run(spec, total, cfg.warmup_steps)
    except (ValueError, ZeroDivisionError) as e:
        fail(f"--lr-schedule: {e}")

    def wrong(factor: float) -> str | None:
        if factor < 0 and top > 0:
            return "negative"
        if not math.isfinite(as_float32(top * factor)):
            return "overflow"
        return None

    good_before: dict[int, int] = {}  # stage (by id) -> its last sampled update that was fine
    for u, factor, stage in samples:
        why = wrong(factor)
        if why is None:
            good_before[id(stage)] = u
            continue
        if stage.factor is not None:  # the first such update after the last good sample (monotone)
            lo = good_before.get(id(stage), stage.start - 1)
            while u - lo > 1:
                mid = (lo + u) // 2
                if wrong(stage.factor(mid - stage.start)) is None:
                    lo = mid
                else:
                    u = mid
            factor = stage.factor(u - stage.start)
            why = wrong(factor)
        at = (f"at update {u:,} of this run's {total:,} optimizer updates" if stage.factor is not None else
              f"in its {stage.name} stage, bounded by {', '.join(f'{b:g}' for b in stage.bounds)} x the lr")
        if why == "negative":
            fail(f"--lr-schedule {spec!r} makes the learning rate negative ({factor:.3g} x {top_label}) {at}")
        fail(f"--lr-schedule {spec!r} takes the learning rate to {top * factor:.3g} ({factor:.3g} x {top_label}) "
             f"{at}: more than a float32 holds ({FLOAT32_MAX:.4g})")
    moving = [s for s in {id(s): s for _, _, s in samples}.values() if s.moves]
    if total >= 2 and moving and len({f for _, f, _ in samples}) == 1:
        later = [s.start + p for s in moving if s.factor is not None
                 for p in s.points if p > 0 and s.factor(p) != s.factor(0)]
        hint = f" (its first change would come at update {min(later):,})" if later else ""
        fail(f"--lr-schedule {spec!r} never changes the learning rate within this run's {total:,} optimizer "
             f"updates{hint}: make it fit the run, or use constant")

def param_groups(cfg, modules: dict, lrs: dict) -> dict:
    """Each named module's parameters for its optimizer: as they are without --lr-mult, else in
    groups by pattern at their factors of `lrs[name]`, printed once. A pattern must match somewhere;
    with several modules it may start with the module's name (G.net.6, critics)."""
    if not cfg.lr_mult:
        return {name: list(m.parameters()) for name, m in modules.items()}
    mults = groups.parse(cfg.lr_mult)
    out, used = {}, set()
    for name, module in modules.items():
        named = list(module.named_parameters())
        mine = {}
        for pattern, factor in mults.items():
            # with several networks a pattern may start with one's name (G.net.6): only that one's
            own, _, rest = pattern.partition(".")
            if len(modules) > 1 and own in modules and rest:
                if own != name:
                    continue
                pattern_here = rest
            else:
                pattern_here = pattern
            if any(groups.matches(pattern_here, n) for n, _ in named):
                mine[pattern_here] = factor
                used.add(pattern)
        try:
            out[name] = groups.by_pattern(named, mine, lrs[name])
        except ValueError as e:  # a pattern whose parameters an earlier pattern took, say
            fail(f"--lr-mult ({name}): {e}" if len(modules) > 1 else f"--lr-mult: {e}")
    unused = [p for p in mults if p not in used]
    if unused:
        tops = sorted({n.split(".")[0] for m in modules.values() for n, _ in m.named_parameters()} |
                      (set(modules) if len(modules) > 1 else set()))
        fail(f"--lr-mult: {unused[0]!r} matches no parameter; the top-level modules are {', '.join(tops)}")
    for name, built in out.items():
        print(groups.describe(built, name if len(modules) > 1 else ""), file=sys.stderr)
    return out

def off_policy_updates(cfg, train_frequency: int = 1, gradient_steps: int = 1) -> int:
    """Optimizer updates in a replay-based run (DQN, Rainbow, SAC): `gradient_steps` every
    `train_frequency` env steps after `learning_starts`. What their --lr-schedule counts."""
    return max(cfg.total_timesteps - cfg.learning_starts, 0) // train_frequency * gradient_steps

def lr_schedule(cfg, optimizers, total_updates: int, saved: dict | None = None, lr_fields: tuple[str, ...] = (),
                done: int = 0):
    """The run's schedule over `optimizers`, restored from `saved` (a checkpoint) when it holds one.

    `lr_fields` name each optimizer's learning-rate field: one changed on --resume scales that
    optimizer's schedule from there on. A checkpoint of an earlier version, with no schedule in it,
    has its schedule advanced by the `done` updates it made."""
    legacy = saved is not None and "lr_schedule" not in saved
    if legacy:  # its groups hold the lr it had reached: the schedule starts from the config's
        for opt, name in zip(optimizers, lr_fields):
            for group in opt.param_groups:
                group["lr"] = getattr(cfg, name) * group.get("lr_mult", 1.0)
                group.pop("initial_lr", None)
    try:
        schedule = schedules.from_spec(cfg.lr_schedule, optimizers, max(total_updates, 1), cfg.warmup_steps)
        if saved is not None and not legacy:
            schedule.load_state_dict(saved["lr_schedule"])
        for _ in range(done if legacy else 0):
            schedule.step()
    except ValueError as e:
        fail(f"--lr-schedule: {e}")
    except (KeyError, TypeError, IndexError) as e:
        fail(f"--lr-schedule: the checkpoint's schedule state does not fit {cfg.lr_schedule!r} "
             f"(--warmup-steps {cfg.warmup_steps}): {type(e).__name__} {e}")
    before = saved.get("config", {}) if saved is not None and not legacy else {}
    for i, name in enumerate(lr_fields):
        old, new = before.get(name), getattr(cfg, name)
        if isinstance(old, (int, float)) and old > 0 and old != new:
            schedule.rescale(i, new / old)
            print(f"--{flag(name)} {new:g} (the checkpoint trained at {old:g}): its schedule scales by "
                  f"{new / old:g} from here", file=sys.stderr)
    return schedule
