"""optim.schedules.plan: each stage's closed form (what lifecycle.check_lr_schedule evaluates over a run
without stepping it) gives the lrs that stepping the schedule gives."""
import math
from bisect import bisect_right

import pytest
import torch

from optim import schedules

SPECS = ["constant", "linear:final=0.1", "warmup-linear:start=0.2", "step:every=7,gamma=0.5",
         "multistep:milestones=0;5;20;20,gamma=0.3", "exponential:gamma=0.97", "cosine:final=0.1",
         "cosine-restarts:period=9,mult=2,final=0.05", "warmup-cosine:warmup=10,final=0.2",
         "warmup-linear:steps=10 then step:every=5,gamma=0.5,steps=30 then cosine",
         "exponential:gamma=0.9,steps=13 then linear", "step:every=3,gamma=-2",
         "warmup-linear:steps=5 then cosine-restarts:period=4,mult=3,final=0.3"]


def stepped(spec: str, total: int, warmup: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = schedules.from_spec(spec, opt, total, warmup)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        schedule.step()
    return out


@pytest.mark.parametrize("warmup", [0, 6])
@pytest.mark.parametrize("spec", SPECS)
def test_closed_forms_give_the_stepped_lrs(spec, warmup):
    total = 150
    stages = schedules.plan(spec, total, warmup)
    starts = [s.start for s in stages]
    for u, lr in enumerate(stepped(spec, total, warmup)):
        stage = stages[bisect_right(starts, u) - 1]
        assert math.isclose(0.1 * stage.factor(u - stage.start), lr, rel_tol=1e-6, abs_tol=1e-12), (u, stage.name)
    sampled = schedules.factors_over_run(spec, total, warmup, samples=10)
    assert [u for u, _, _ in sampled] == sorted(u for u, _, _ in sampled) and sampled[-1][0] == total - 1


def test_a_stage_after_a_warmup_takes_the_configured_lr():
    """cyclic, onecycle and cosine-restarts read the lr when built: after a warmup stage that is the
    configured one, not the warmup's first (near 0)."""
    lrs = stepped("warmup-linear:steps=4 then cyclic:half=3", 14, 0)
    assert max(lrs[4:]) == pytest.approx(0.1) and min(lrs[4:]) == pytest.approx(0.01)
    assert max(stepped("warmup-linear:steps=4 then onecycle", 20, 0)) == pytest.approx(0.1, rel=0.02)
    assert min(stepped("cosine-restarts:period=5,final=0.5", 20, 3)[3:]) >= 0.05 - 1e-9


def test_bounded_stages_give_their_bounds():
    (stage,) = schedules.plan("cyclic:half=10,low=0.2,high=2", 100)
    assert stage.factor is None and stage.bounds == (0.2, 2.0)
    assert (sorted(f for _, f, _ in schedules.factors_over_run("onecycle:div=10,final_div=100", 100))
            == [0.001, 0.1, 1.0])
