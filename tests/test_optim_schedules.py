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


# ---------------------------------------------------------------------------------------------------
# --lr-schedule specs: each named schedule's lr at a few steps against its closed form.

def lrs_of(spec: str, steps: int, total: int = 100, warmup: int = 0, lr: float = 0.1) -> list[float]:
    """The lr used at updates 0..steps-1 (read before each update, as a trainer logs it)."""
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    schedule = optim.schedules.from_spec(spec, opt, total, warmup)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return out


def cosine(t, period, lo=0.0, hi=0.1):
    return lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * t / period))


CLOSED_FORMS = {
    # spec: (closed form of the lr at update t, total updates)
    "constant": (lambda t: 0.1, 100),
    "linear": (lambda t: 0.1 * (1 - t / 100), 100),
    "linear:final=0.5": (lambda t: 0.1 * (1 - 0.5 * t / 100), 100),
    "step:every=10,gamma=0.5": (lambda t: 0.1 * 0.5 ** (t // 10), 100),
    "multistep:milestones=30;80,gamma=0.1": (lambda t: 0.1 * 0.1 ** ((t >= 30) + (t >= 80)), 100),
    "exponential:gamma=0.97": (lambda t: 0.1 * 0.97**t, 100),
    "cosine": (lambda t: cosine(t, 100), 100),
    "cosine:final=0.1": (lambda t: cosine(t, 100, lo=0.01), 100),
    # periods 10, 20, 40, 80: restarts at 10, 30 and 70
    "cosine-restarts:period=10,mult=2": (lambda t: cosine(t, 10) if t < 10 else cosine(t - 10, 20) if t < 30
                                         else cosine(t - 30, 40) if t < 70 else cosine(t - 70, 80), 100),
    "cyclic:half=5,low=0.1": (lambda t: 0.01 + (0.1 - 0.01) * (1 - abs((t % 10) / 5 - 1)), 100),
    "warmup-cosine:warmup=10": (lambda t: 0.1 * t / 10 if t < 10 else cosine(t - 10, 90), 100),
    "warmup-linear:steps=20 then cosine": (lambda t: 0.1 * t / 20 if t < 20 else cosine(t - 20, 80), 100),
    "warmup-linear:steps=10 then constant:steps=40 then linear": (
        lambda t: 0.1 * t / 10 if t < 10 else 0.1 if t < 50 else 0.1 * (1 - (t - 50) / 50), 100),
}


@pytest.mark.parametrize("spec", sorted(CLOSED_FORMS))
def test_named_schedules_follow_their_closed_forms(spec):
    form, total = CLOSED_FORMS[spec]
    got = lrs_of(spec, total, total)
    for t in (0, 1, 5, 9, 10, 11, 19, 20, 29, 30, 31, 49, 50, 51, 79, 80, 99):
        assert got[t] == pytest.approx(form(t), rel=1e-6, abs=1e-9), f"{spec} at update {t}"


def test_onecycle_follows_its_closed_form():
    # Smith & Topin: cosine from lr/div up to lr over pct * (total - 1) updates, then down to lr/(div*final_div)
    total, pct, div, final_div = 100, 0.3, 25.0, 1e4
    got = lrs_of("onecycle", total, total)
    up = pct * total - 1
    lo, hi, end = 0.1 / div, 0.1, 0.1 / (div * final_div)
    for t in (0, 10, 29, 50, 99):
        want = cosine(t, up, lo=hi, hi=lo) if t <= up else cosine(t - up, total - 1 - up, lo=end, hi=hi)
        assert got[t] == pytest.approx(want, rel=1e-6), t


def test_warmup_steps_prepend_a_linear_warmup():
    assert (lrs_of("cosine", 100, 100, warmup=10)
            == pytest.approx(lrs_of("warmup-linear:steps=10 then cosine", 100, 100)))


def test_plateau_cuts_the_lr_when_evaluations_stop_improving():
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    schedule = optim.schedules.from_spec("plateau:patience=2,factor=0.5", opt, 100)
    schedule.step()  # updates do not move it
    for score in (1.0, 2.0, 2.0, 2.0):
        schedule.evaluated(score)
    assert schedule.lr == pytest.approx(0.1)  # two evaluations without improvement: patience not exceeded
    schedule.evaluated(2.0)
    assert schedule.lr == pytest.approx(0.05)


def test_a_chained_schedule_resumes_from_its_state_dict():
    def run(split: int | None):
        w = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        spec = "warmup-linear:steps=10 then cosine"
        schedule = optim.schedules.from_spec(spec, opt, 50)
        out = []
        for t in range(50):
            if t == split:  # a checkpoint and a fresh process
                saved_opt = io.BytesIO()
                torch.save({"opt": opt.state_dict(), "schedule": schedule.state_dict()}, saved_opt)
                saved_opt.seek(0)
                state = torch.load(saved_opt, weights_only=True)
                opt = torch.optim.SGD([w], lr=0.1)
                opt.load_state_dict(state["opt"])
                schedule = optim.schedules.from_spec(spec, opt, 50)
                schedule.load_state_dict(state["schedule"])
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return out

    assert run(None) == pytest.approx(run(25)) and run(None) == pytest.approx(run(7))


def test_linear_is_ppo_annealing_to_the_last_bit():
    # PPO's trainers set lr = frac * lr with frac = 1 - update / num_updates; the schedule must not drift
    lr, total = 2.5e-4, 4882
    got = lrs_of("linear", total, total, lr=lr)
    assert all(got[t] == (1.0 - t / total) * lr for t in range(total))


@pytest.mark.parametrize("spec, form", [
    ("linear", lambda t: 0.1 * (1 - t / 300)),
    ("warmup-linear:steps=10 then cosine", lambda t: 0.1 * t / 10 if t < 10 else cosine(t - 10, 290)),
    ("warmup-cosine:warmup=10", lambda t: 0.1 * t / 10 if t < 10 else cosine(t - 10, 290)),
])
def test_a_larger_budget_on_resume_stretches_a_closed_form_stage(spec, form):
    # 100 updates planned and made, then resumed with 300: PPO's anneal goes on from 1 - 100/300
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    schedule = optim.schedules.from_spec(spec, opt, 100)
    for _ in range(100):
        opt.step()
        schedule.step()
    state = schedule.state_dict()
    opt = torch.optim.SGD([w], lr=0.1)
    schedule = optim.schedules.from_spec(spec, opt, 300)
    schedule.load_state_dict(state)
    got = []
    for _ in range(200):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert got == pytest.approx([form(t) for t in range(100, 300)], rel=1e-9, abs=1e-12)


RESCALED = ["constant", "linear", "step:every=10,gamma=0.5", "multistep:milestones=30;80", "exponential:gamma=0.97",
            "cosine:final=0.1", "cosine-restarts:period=10,mult=2,final=0.1", "cyclic:half=5,low=0.1", "onecycle",
            "warmup-cosine:warmup=10,final=0.1", "warmup-linear:steps=20 then cosine:final=0.2", "plateau:patience=1"]


@pytest.mark.parametrize("spec", RESCALED)
def test_a_learning_rate_changed_on_resume_scales_the_rest_of_the_schedule(spec):
    # trained 25 updates at lr 0.1, resumed at lr 0.3: the rest is what a run at 0.3 throughout has
    def schedule_at(lr):
        w = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([w], lr=lr)
        return opt, optim.schedules.from_spec(spec, opt, 100)

    def advance(opt, schedule, steps):
        out = []
        for t in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
            if t % 10 == 9:
                schedule.evaluated(1.0)  # plateau's evaluations; no-ops for the others
        return out

    opt, schedule = schedule_at(0.1)
    advance(opt, schedule, 25)
    state = {"opt": opt.state_dict(), "schedule": schedule.state_dict()}
    resumed_opt, resumed = schedule_at(0.3)
    resumed_opt.load_state_dict(state["opt"])
    resumed.load_state_dict(state["schedule"])
    resumed.rescale(0, 3.0)
    ref_opt, ref = schedule_at(0.3)
    advance(ref_opt, ref, 25)
    assert advance(resumed_opt, resumed, 75) == pytest.approx(advance(ref_opt, ref, 75), rel=1e-9)


@pytest.mark.parametrize("spec, says", [
    ("cosin", "unknown schedule 'cosin'"),
    ("step", "step needs every="),
    ("cosine:final", "write cosine:key=value"),
    ("cosine:steps=10 then plateau", "cannot be chained"),
    ("warmup-linear then cosine", "needs steps=N"),
    ("cosine:periods=3", "cosine takes no 'periods'"),
    ("exponential:gamma=x", "is not a number"),
    ("step:every=0", "every must be at least 1"),
    ("cyclic:half=0", "half must be at least 1"),
    ("cosine-restarts:period=-1", "period must be at least 1"),
])
def test_bad_specs_are_one_line(spec, says):
    with pytest.raises(ValueError, match=says):
        lrs_of(spec, 2)
