"""LR schedules: their factors at known points, use as torch LRSchedulers, state_dict resume."""
from __future__ import annotations

import io
import math

import pytest
import torch

import optim
from optim.schedules import Constant, LinearAnneal, WarmupCosine, linear_factor, warmup_cosine_factor


def test_warmup_cosine_factor_at_known_points():
    f = lambda t: warmup_cosine_factor(t, warmup_steps=10, total_steps=110, final_factor=0.1)  # noqa: E731
    assert f(0) == 0.0
    assert f(5) == pytest.approx(0.5)
    assert f(10) == pytest.approx(1.0)                    # warmup done: the peak
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)        # half-way through the cosine
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    values = [f(t) for t in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warmup
    assert warmup_cosine_factor(0, 4, 8, warmup_start=0.2) == pytest.approx(0.2)
    assert warmup_cosine_factor(3, 0, 1) == 0.0           # no warmup, past the end


def test_linear_factor_is_ppo_annealing():
    num_updates = 50
    for update in range(1, num_updates + 1):                # CleanRL: frac = 1 - (update - 1) / num_updates
        assert linear_factor(update - 1, num_updates) == pytest.approx(1.0 - (update - 1.0) / num_updates)
    assert linear_factor(80, num_updates, final_factor=0.25) == 0.25


def _opt():
    w = torch.zeros(2, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    return torch.optim.SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 1.0}], lr=0.1)


@pytest.mark.parametrize("make,factor", [
    (lambda o: WarmupCosine(o, 3, 12, final_factor=0.05), lambda t: warmup_cosine_factor(t, 3, 12, 0.05)),
    (lambda o: LinearAnneal(o, 10), lambda t: linear_factor(t, 10)),
    (lambda o: Constant(o), lambda t: 1.0),
])
def test_scheduler_drives_every_group(make, factor):
    opt = _opt()
    sched = make(opt)
    for t in range(15):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * factor(t))
        assert opt.param_groups[1]["lr"] == pytest.approx(1.0 * factor(t))
        assert sched.get_last_lr()[1] == pytest.approx(factor(t))
        opt.step()
        sched.step()


def test_state_dict_resume_gives_the_same_lrs():
    opt = _opt()
    sched = WarmupCosine(opt, 4, 20, final_factor=0.1)
    for _ in range(7):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    opt2 = _opt()
    sched2 = WarmupCosine(opt2, 1, 2)                       # hyper-parameters come from the state
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    for _ in range(15):
        opt.step(), sched.step()
        opt2.step(), sched2.step()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]
    assert sched2.warmup_steps == 4 and sched2.total_steps == 20


def test_schedule_over_lookahead_reaches_inner_optimizer():
    w = torch.zeros(2, requires_grad=True)
    opt = optim.build("lookahead", [w], base="sgd", lr=0.5)
    sched = LinearAnneal(opt, 4)
    opt.step(), sched.step()
    assert opt.inner.param_groups[0]["lr"] == pytest.approx(0.5 * 0.75)


def test_build_by_name_and_errors():
    assert isinstance(optim.schedules.build("warmup_cosine", _opt(), warmup_steps=2, total_steps=5), WarmupCosine)
    assert isinstance(optim.schedules.build("Linear", _opt(), total_steps=5), LinearAnneal)
    with pytest.raises(ValueError, match="unknown schedule 'cos'; choose one of: constant, linear, warmup_cosine"):
        optim.schedules.build("cos", _opt())
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(_opt(), 10, 5)
    with pytest.raises(ValueError, match="linear"):
        optim.schedules.build("linear", _opt(), total=5)
