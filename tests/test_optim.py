"""The optimizers against float64 transcriptions of their papers' updates, foreach against for-loop,
state_dict round trips, Rosenbrock, and the registry.

The references below are deliberately naive: numpy, one tensor at a time, formulas as printed in the
papers (bias corrections written out, no algebraic folding), so that a fused path that reorders the
arithmetic is checked against the definition rather than against itself.
"""
from __future__ import annotations

import copy
import inspect
import io
import math
import re

import numpy as np
import pytest
import torch

import optim
from optim import LAMB, SWATS, AdaBelief, AdaBound, Lookahead, RMSpropTF, SharedAdam

STEPS = 12
RTOL = 1e-10


# ---------------------------------------------------------------------------------------------------
# float64 references: each takes a list of numpy params, returns a function step(params, grads) that
# updates them in place; grads[i] is None for a parameter without gradient.


def ref_rmsproptf(lr, alpha, eps, centered, momentum, weight_decay):
    state = {}

    def step(params, grads):
        for i, (w, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            s = state.setdefault(i, {"v": np.zeros_like(w), "m": np.zeros_like(w), "b": np.zeros_like(w)})
            g = g + weight_decay * w
            s["v"] = alpha * s["v"] + (1 - alpha) * g * g
            if centered:
                s["m"] = alpha * s["m"] + (1 - alpha) * g
                step_ = g / np.sqrt(s["v"] - s["m"] ** 2 + eps)
            else:
                step_ = g / np.sqrt(s["v"] + eps)
            if momentum > 0:
                s["b"] = momentum * s["b"] + step_
                step_ = s["b"]
            w -= lr * step_

    return step


def ref_adam(lr, betas, eps, weight_decay, decoupled=False):
    """Kingma & Ba 2015, Algorithm 1; L2 weight decay as torch.optim.Adam, or AdamW's decoupled one."""
    b1, b2 = betas
    state = {}

    def step(params, grads):
        for i, (w, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            s = state.setdefault(i, {"t": 0, "m": np.zeros_like(w), "v": np.zeros_like(w)})
            s["t"] += 1
            t = s["t"]
            if decoupled:
                w *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * w
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            m_hat = s["m"] / (1 - b1**t)
            v_hat = s["v"] / (1 - b2**t)
            w -= lr * m_hat / (np.sqrt(v_hat) + eps)

    return step


def ref_lamb(lr, betas, eps, weight_decay, clamp=None, bias_correction=True, trust_ratio=True):
    """You et al. 2019, Algorithm 2."""
    b1, b2 = betas
    state = {}

    def step(params, grads):
        for i, (w, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            s = state.setdefault(i, {"t": 0, "m": np.zeros_like(w), "v": np.zeros_like(w)})
            s["t"] += 1
            t = s["t"]
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            m_hat = s["m"] / (1 - b1**t) if bias_correction else s["m"]
            v_hat = s["v"] / (1 - b2**t) if bias_correction else s["v"]
            r = m_hat / (np.sqrt(v_hat) + eps)
            u = r + weight_decay * w
            if trust_ratio:
                w_norm = math.sqrt(float(np.sum(w * w)))
                u_norm = math.sqrt(float(np.sum(u * u)))
                phi = w_norm if clamp is None else min(max(w_norm, clamp[0]), clamp[1])
                ratio = phi / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            else:
                ratio = 1.0
            w -= lr * ratio * u

    return step


def ref_adabelief(lr, betas, eps, weight_decay, decoupled=True, rectify=False, degenerated_to_sgd=True):
    """Zhuang et al. 2020, Algorithm 2; rectification as RAdam (Liu et al. 2019, Algorithm 2)."""
    b1, b2 = betas
    rho_inf = 2 / (1 - b2) - 1
    state = {}

    def step(params, grads):
        for i, (w, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            s = state.setdefault(i, {"t": 0, "m": np.zeros_like(w), "s": np.zeros_like(w)})
            s["t"] += 1
            t = s["t"]
            if decoupled:
                w *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * w
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["s"] = b2 * s["s"] + (1 - b2) * (g - s["m"]) ** 2 + eps
            m_hat = s["m"] / (1 - b1**t)
            s_hat = s["s"] / (1 - b2**t)
            if not rectify:
                w -= lr * m_hat / (np.sqrt(s_hat) + eps)
                continue
            rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
            if rho_t > 5:
                r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                w -= lr * r_t * m_hat / (np.sqrt(s_hat) + eps)
            elif degenerated_to_sgd:
                w -= lr * m_hat

    return step


def ref_sgd(lr, momentum, weight_decay=0.0):
    """SGD with heavy-ball momentum as torch.optim.SGD: the first step's buffer is the gradient itself."""
    bufs = {}

    def step(params, grads):
        for i, (w, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            g = g + weight_decay * w
            bufs[i] = g.copy() if i not in bufs else momentum * bufs[i] + g
            w -= lr * bufs[i]

    return step


def ref_adabound(lr, betas, final_lr, gamma, eps, weight_decay, amsbound=False, lr_now=None):
    """Luo et al. 2019 as the authors' release computes it (bias-corrected Adam step size, clipped into
    [final (1 - 1/(gamma t + 1)), final (1 + 1/(gamma t))] with final = final_lr * lr_now / lr)."""
    b1, b2 = betas
    lr_now = lr if lr_now is None else lr_now
    state = {}

    def step(params, grads):
        for i, (w, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            s = state.setdefault(i, {"t": 0, "m": np.zeros_like(w), "v": np.zeros_like(w), "vmax": np.zeros_like(w)})
            s["t"] += 1
            t = s["t"]
            g = g + weight_decay * w
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            s["vmax"] = np.maximum(s["vmax"], s["v"])
            v = s["vmax"] if amsbound else s["v"]
            final = final_lr * lr_now / lr
            lower, upper = final * (1 - 1 / (gamma * t + 1)), final * (1 + 1 / (gamma * t))
            adaptive = lr_now * math.sqrt(1 - b2**t) / (1 - b1**t) / (np.sqrt(v) + eps)
            w -= np.clip(adaptive, lower, upper) * s["m"]

    return step


def ref_swats(lr, betas, eps, weight_decay, switch_step=None):
    """Keskar & Socher 2017, Algorithm 1, per tensor: Adam, the projected SGD rate's running mean, the
    switch (by the paper's criterion, or at switch_step) once that mean is positive, then SGD with
    momentum at that rate."""
    b1, b2 = betas
    state = {}

    def step(params, grads):
        for i, (w, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            s = state.setdefault(i, {"k": 0, "m": np.zeros_like(w), "a": np.zeros_like(w), "v": np.zeros_like(w),
                                     "lam": 0.0, "sgd": False, "rate": 0.0})
            s["k"] += 1
            k = s["k"]
            g = g + weight_decay * w
            if s["sgd"]:
                s["v"] = b1 * s["v"] + g
                w -= (1 - b1) * s["rate"] * s["v"]
                continue
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["a"] = b2 * s["a"] + (1 - b2) * g * g
            p = -lr * math.sqrt(1 - b2**k) / (1 - b1**k) * s["m"] / (np.sqrt(s["a"]) + eps)
            w += p
            pg = float(np.sum(p * g))
            gamma = 0.0
            if pg != 0:
                gamma = float(np.sum(p * p)) / -pg
                s["lam"] = b2 * s["lam"] + (1 - b2) * gamma
            estimate = s["lam"] / (1 - b2**k)
            if switch_step is not None:
                switch = k >= switch_step and estimate > 0
            else:
                switch = k > 1 and pg != 0 and estimate > 0 and abs(estimate - gamma) < eps
            if switch:
                s["sgd"], s["rate"] = True, estimate

    return step


def ref_lookahead(inner_steps, k, alpha, params):
    """Zhang et al. 2019, Algorithm 1; one inner reference per param group, slow weights from the start."""
    slow = [w.copy() for w in params]
    count = {"t": 0}

    def step(params, grads):
        for inner_step, idx in inner_steps:
            inner_step([params[i] for i in idx], [grads[i] for i in idx])
        count["t"] += 1
        if count["t"] % k == 0:
            for i, w in enumerate(params):
                slow[i] += alpha * (w - slow[i])
                w[...] = slow[i]

    return step


# ---------------------------------------------------------------------------------------------------
# The shared problem: two param groups, a zero-initialized tensor (||w|| = 0 at first), a tensor whose
# gradient is always zero (a zero update), one that never gets a gradient, and one that misses every
# third step (so tensors in one group are at different step counts, hence bias corrections).

SHAPES = [(3, 4), (5,), (2, 3), (4,), (2, 2)]
GROUPS = [[0, 1, 2], [3, 4]]       # indices of SHAPES per param group
NO_GRAD, ZERO_INIT, ZERO_GRAD, SOMETIMES = 2, 1, 4, 3


def initial_params():
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in SHAPES]
    params[ZERO_INIT][...] = 0.0
    return params


def grad_sequence(n=STEPS):
    rng = np.random.default_rng(1)
    seq = []
    for t in range(n):
        grads = [rng.standard_normal(s) for s in SHAPES]
        grads[NO_GRAD] = None
        grads[ZERO_GRAD] = np.zeros(SHAPES[ZERO_GRAD])
        if t % 3 == 1:
            grads[SOMETIMES] = None
        seq.append(grads)
    return seq


def torch_params(np_params, dtype=torch.float64):
    return [torch.tensor(w, dtype=dtype, requires_grad=True) for w in np_params]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else torch.tensor(g, dtype=p.dtype)


def run_against_reference(make_opt, make_ref, steps=STEPS):
    """Step the optimizer and the reference on the same gradients; compare every parameter each step."""
    np_params = initial_params()
    params = torch_params(np_params)
    opt = make_opt(params)
    ref = make_ref(np_params)
    for t, grads in enumerate(grad_sequence(steps)):
        set_grads(params, grads)
        opt.step()
        ref(np_params, grads)
        for i, (p, w) in enumerate(zip(params, np_params)):
            err = np.max(np.abs(p.detach().numpy() - w)) / max(np.max(np.abs(w)), 1e-300)
            assert err <= RTOL, f"step {t + 1}, param {i}: relative error {err:.3g}"
    untouched = initial_params()[NO_GRAD]
    assert np.array_equal(params[NO_GRAD].detach().numpy(), untouched), "a parameter without grad moved"
    # No state for it, or (SharedAdam, which makes all state up front) state that never stepped.
    inner = getattr(opt, "inner", opt)
    state = inner.state.get(params[NO_GRAD], {})
    assert not state or (float(state["step"]) == 0 and not state["exp_avg"].any()), "a gradient-less parameter stepped"
    return params


def grouped(params, group_hparams):
    return [{"params": [params[i] for i in idx], **hp} for idx, hp in zip(GROUPS, group_hparams)]


def per_group_ref(make, group_hparams):
    """A reference whose groups each have their own hyper-parameters (and own state)."""
    def build(np_params):
        steps = [make(**hp) for hp in group_hparams]

        def step(params, grads):
            for s, idx in zip(steps, GROUPS):
                s([params[i] for i in idx], [grads[i] for i in idx])

        return step

    return build


# ---------------------------------------------------------------------------------------------------
# Each optimizer against its reference, both code paths, with and without weight decay, two groups.

FOREACH = [pytest.param(False, id="loop"), pytest.param(True, id="foreach")]


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("centered,momentum", [(True, 0.0), (False, 0.0), (True, 0.9)])
def test_rmsproptf_matches_reference(foreach, weight_decay, centered, momentum):
    hps = [dict(lr=0.01, alpha=0.95, eps=0.01, centered=centered, momentum=momentum, weight_decay=weight_decay),
           dict(lr=0.003, alpha=0.9, eps=1e-4, centered=centered, momentum=momentum, weight_decay=0.0)]
    run_against_reference(lambda ps: RMSpropTF(grouped(ps, hps), foreach=foreach),
                          per_group_ref(ref_rmsproptf, hps))


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("variant", ["plain", "clamp", "no_bias_correction", "no_trust_ratio"])
def test_lamb_matches_reference(foreach, weight_decay, variant):
    extra = {"plain": {}, "clamp": {"clamp": (0.5, 2.0)}, "no_bias_correction": {"bias_correction": False},
             "no_trust_ratio": {"trust_ratio": False}}[variant]
    hps = [dict(lr=0.02, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay, **extra),
           dict(lr=0.05, betas=(0.8, 0.99), eps=1e-8, weight_decay=2 * weight_decay, **extra)]
    run_against_reference(lambda ps: LAMB(grouped(ps, hps), foreach=foreach), per_group_ref(ref_lamb, hps))


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("decoupled", [True, False])
@pytest.mark.parametrize("rectify,degenerated_to_sgd", [(False, True), (True, True), (True, False)])
def test_adabelief_matches_reference(foreach, weight_decay, decoupled, rectify, degenerated_to_sgd):
    # b2 = 0.999 puts the first 5 rectified steps on the momentum-only branch and the rest on the
    # rectified adaptive one, so 12 steps cover both.
    hps = [dict(lr=0.01, betas=(0.9, 0.999), eps=1e-16, weight_decay=weight_decay, decoupled=decoupled,
                rectify=rectify, degenerated_to_sgd=degenerated_to_sgd),
           dict(lr=0.03, betas=(0.5, 0.99), eps=1e-8, weight_decay=weight_decay / 2, decoupled=decoupled,
                rectify=rectify, degenerated_to_sgd=degenerated_to_sgd)]
    run_against_reference(lambda ps: AdaBelief(grouped(ps, hps), foreach=foreach),
                          per_group_ref(ref_adabelief, hps))


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.05, False), (0.05, True)])
def test_shared_adam_matches_reference(foreach, weight_decay, decoupled):
    hps = [dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay),
           dict(lr=0.002, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.0)]
    run_against_reference(
        lambda ps: SharedAdam(grouped(ps, hps), foreach=foreach, decoupled_weight_decay=decoupled),
        per_group_ref(lambda **hp: ref_adam(decoupled=decoupled, **hp), hps))


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_lookahead_matches_reference(foreach, weight_decay, base):
    k, alpha = 3, 0.5   # 12 steps: four syncs
    if base == "sgd":
        hps = [dict(lr=0.05, momentum=0.9, weight_decay=weight_decay), dict(lr=0.01, momentum=0.5)]
        make_inner = lambda ps: torch.optim.SGD(grouped(ps, hps), foreach=foreach)  # noqa: E731
        inner_refs = [ref_sgd(**hp) for hp in hps]
    else:
        hps = [dict(lr=0.01, weight_decay=weight_decay), dict(lr=0.03, weight_decay=0.0)]
        make_inner = lambda ps: torch.optim.AdamW(grouped(ps, hps), foreach=foreach)  # noqa: E731
        inner_refs = [ref_adam(betas=(0.9, 0.999), eps=1e-8, decoupled=True, **hp) for hp in hps]
    run_against_reference(lambda ps: Lookahead(make_inner(ps), k=k, alpha=alpha),
                          lambda w: ref_lookahead(list(zip(inner_refs, GROUPS)), k, alpha, w))


def test_lookahead_built_by_name_matches_wrapping():
    """build("lookahead", base="sgd", ...) is the same optimizer as Lookahead(SGD(...))."""
    results = []
    for make in (lambda ps: optim.build("lookahead", ps, base="sgd", k=4, alpha=0.3, lr=0.1, momentum=0.9),
                 lambda ps: Lookahead(torch.optim.SGD(ps, lr=0.1, momentum=0.9), k=4, alpha=0.3)):
        params = torch_params(initial_params())
        opt = make(params)
        for grads in grad_sequence(9):
            set_grads(params, grads)
            opt.step()
        results.append(params)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("amsbound", [False, True])
def test_adabound_matches_reference(weight_decay, amsbound):
    # gamma 0.1 closes the bounds within the 12 steps, so both the adaptive and the clipped regimes occur
    hps = [dict(lr=0.01, betas=(0.9, 0.999), final_lr=0.1, gamma=0.1, eps=1e-8, weight_decay=weight_decay,
                amsbound=amsbound),
           dict(lr=0.002, betas=(0.8, 0.99), final_lr=0.05, gamma=0.3, eps=1e-6, weight_decay=weight_decay,
                amsbound=amsbound)]
    run_against_reference(lambda ps: AdaBound(grouped(ps, hps)), per_group_ref(ref_adabound, hps))


def test_adabound_bounds_follow_a_scheduled_lr():
    """A schedule that halves lr halves the bounds too (the release's final_lr * lr / base_lr)."""
    hps = [dict(lr=0.01, betas=(0.9, 0.999), final_lr=0.1, gamma=0.1, eps=1e-8, weight_decay=0.0)] * 2

    def make(ps):
        opt = AdaBound(grouped(ps, hps))
        for group in opt.param_groups:
            group["lr"] = 0.005
        return opt

    run_against_reference(make, per_group_ref(ref_adabound, [dict(hp, lr_now=0.005) for hp in hps]))


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("switch_step", [None, 4])
def test_swats_matches_reference(weight_decay, switch_step):
    # eps 1e-3 lets the paper's criterion fire within 12 steps on these random gradients, at different
    # steps for different tensors, so both phases run side by side; a fixed switch_step fires at 4
    hps = [dict(lr=0.01, betas=(0.9, 0.999), eps=1e-3, weight_decay=weight_decay, switch_step=switch_step),
           dict(lr=0.003, betas=(0.8, 0.99), eps=1e-3, weight_decay=weight_decay, switch_step=switch_step)]
    made = []
    run_against_reference(lambda ps: made.append(SWATS(grouped(ps, hps))) or made[0], per_group_ref(ref_swats, hps))
    # every tensor whose steps move it (not the zero-gradient one, by the criterion)
    assert sum(made[0].switched()) >= 3


def test_swats_switches_at_the_step_asked_and_keeps_its_rate_through_state_dict():
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = SWATS([w], lr=0.05, switch_step=3)
    for t in range(1, 6):
        w.grad = w.detach() * 2  # the gradient of ||w||^2
        opt.step()
        assert opt.switched() == [t >= 3]
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    fresh = SWATS([w], lr=0.05, switch_step=3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.switched() == [True] and float(fresh.state[w]["sgd_lr"]) == float(opt.state[w]["sgd_lr"]) > 0


def test_swats_never_switches_to_a_negative_rate():
    # The second gradient opposes the first: Adam's step (the first one's momentum) climbs it, so gamma
    # = p.p / -p.g is negative and so is the rate's running mean. SGD at that rate would ascend: sgd@2
    # waits for the mean to turn positive, at step 3 here. So does the paper's criterion with a
    # tolerance (0.05) that the mean meets at step 2 already, while negative; with 1e-8 it never fires.
    grads = [1.0, -0.3, 1.0, 1.0, 1.0]
    for switch_step, eps, switches_at in ((2, 1e-8, 3), (None, 0.05, 3), (None, 1e-8, None)):
        hps = dict(lr=0.1, betas=(0.9, 0.999), eps=eps, weight_decay=0.0, switch_step=switch_step)
        w = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
        opt = SWATS([w], **hps)
        ref, ref_w = ref_swats(**hps), [np.zeros(1)]
        for k, g in enumerate(grads, start=1):
            w.grad = torch.tensor([g], dtype=torch.float64)
            opt.step()
            ref(ref_w, [np.array([g])])
            np.testing.assert_allclose(w.detach().numpy(), ref_w[0], rtol=1e-12)
            assert opt.switched() == [switches_at is not None and k >= switches_at], (switch_step, eps, k)
            if k == 2:
                assert float(opt.state[w]["lam"]) < 0
        if switches_at is not None:
            assert float(opt.state[w]["sgd_lr"]) > 0


# ---------------------------------------------------------------------------------------------------
# Fused and loop paths agree in float32 too (the references above run in float64).

MAKERS = {
    "rmsproptf": lambda ps, fe: RMSpropTF(ps, lr=1e-3, momentum=0.5, weight_decay=0.01, foreach=fe),
    "lamb": lambda ps, fe: LAMB(ps, lr=1e-2, weight_decay=0.01, clamp=(0.0, 10.0), foreach=fe),
    "adabelief": lambda ps, fe: AdaBelief(ps, lr=1e-2, weight_decay=0.01, rectify=True, foreach=fe),
    "sharedadam": lambda ps, fe: SharedAdam(ps, lr=1e-2, foreach=fe),
    "lookahead": lambda ps, fe: Lookahead(torch.optim.Adam(ps, lr=1e-2, foreach=fe), k=2),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_foreach_matches_loop_in_float32(name):
    runs = []
    for fe in (False, True):
        params = torch_params(initial_params(), dtype=torch.float32)
        opt = MAKERS[name](params, fe)
        for grads in grad_sequence(8):
            set_grads(params, grads)
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lamb", "adabelief", "rmsproptf"])
def test_mixed_dtypes_in_one_group(name):
    """A foreach group holding float32 and float64 tensors is split by dtype, and each part matches the loop."""
    runs = []
    for fe in (False, True):
        params = [torch.ones(3, dtype=torch.float32, requires_grad=True),
                  torch.ones(4, dtype=torch.float64, requires_grad=True)]
        opt = MAKERS[name](params, fe)
        for t in range(3):
            for p in params:
                p.grad = torch.linspace(-1, 1 + t, p.numel(), dtype=p.dtype)
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)


def test_lamb_trust_ratio_sets_step_length():
    """Without weight decay, LAMB's step has length lr * ||w|| whatever the gradient's scale."""
    w = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = LAMB([w], lr=0.1, weight_decay=0.0)
    before = w.detach().clone()
    w.grad = torch.tensor([1e-3, -2e-3], dtype=torch.float64)
    opt.step()
    assert torch.linalg.vector_norm(w.detach() - before).item() == pytest.approx(0.1 * 5.0, rel=1e-12)


def test_closure_is_called_and_its_loss_returned():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    for name in ("lamb", "adabelief", "rmsproptf", "sharedadam", "lookahead"):
        opt = optim.build(name, [w], lr=1e-3)
        calls = []

        def closure():
            opt.zero_grad()
            loss = (w**2).sum()
            loss.backward()
            calls.append(1)
            return loss

        loss = opt.step(closure)
        assert calls == [1] and loss is not None, name


# ---------------------------------------------------------------------------------------------------
# state_dict round trip: prime, save (through torch.save / weights_only load), load into a fresh
# optimizer over a copy of the parameters, continue both: identical parameters.

ROUND_TRIP = {
    "rmsproptf": lambda ps: RMSpropTF(ps, lr=1e-2, momentum=0.9),
    "lamb": lambda ps: LAMB(ps, lr=1e-2),
    "adabelief": lambda ps: AdaBelief(ps, lr=1e-2, rectify=True),
    "sharedadam": lambda ps: SharedAdam(ps, lr=1e-2, amsgrad=True),
    "lookahead_sgd": lambda ps: optim.build("lookahead", ps, base="sgd", k=3, lr=0.05, momentum=0.9),
    "lookahead_adam": lambda ps: Lookahead(torch.optim.Adam(ps, lr=1e-2), k=3, alpha=0.6),
}


def _save_load(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_state_dict_round_trip(name):
    make = ROUND_TRIP[name]
    grads = grad_sequence(9)
    params = torch_params(initial_params())
    opt = make(grouped(params, [{}, {"lr": 0.02}]))
    for g in grads[:4]:                       # 4 steps: mid-way through a Lookahead cycle of 3
        set_grads(params, g)
        opt.step()
    saved = _save_load(opt.state_dict())
    params2 = [p.detach().clone().requires_grad_() for p in params]
    opt2 = make(grouped(params2, [{}, {"lr": 0.02}]))
    opt2.load_state_dict(saved)
    for g in grads[4:]:
        for ps, o in ((params, opt), (params2, opt2)):
            set_grads(ps, g)
            o.step()
    for a, b in zip(params, params2):
        assert torch.equal(a, b)
    assert opt2.param_groups[1]["lr"] == 0.02


def test_lookahead_shares_groups_with_inner_after_load():
    params = torch_params(initial_params())
    opt = Lookahead(torch.optim.SGD(params, lr=0.1), k=2)
    assert opt.param_groups is opt.inner.param_groups
    opt.load_state_dict(_save_load(opt.state_dict()))
    assert opt.param_groups is opt.inner.param_groups
    opt.param_groups[0]["lr"] = 0.5          # what an LR scheduler does
    assert opt.inner.param_groups[0]["lr"] == 0.5
    copied = copy.deepcopy(opt)
    assert copied.param_groups is copied.inner.param_groups


def test_lookahead_add_param_group_reaches_inner():
    a, b = torch.zeros(2, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = Lookahead(torch.optim.SGD([a], lr=0.1), k=2, alpha=0.5)
    opt.add_param_group({"params": [b], "lr": 1.0})
    assert len(opt.inner.param_groups) == 2 and opt.param_groups[1]["k"] == 2
    for _ in range(2):
        a.grad, b.grad = torch.ones(2), torch.ones(3)
        opt.step()
    # b: fast 1 -> 0 -> -1, then slow 1 + 0.5 (-1 - 1) = 0
    torch.testing.assert_close(b.detach(), torch.zeros(3))


# ---------------------------------------------------------------------------------------------------
# Rosenbrock, f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, from (-1.5, 2) to the minimum (1, 1). The settings
# are chosen per optimizer (documented here, not tuned in the library); LAMB's steps have length
# lr * ||w|| whatever the gradient, so it needs a decaying lr to settle: a cosine schedule.

ROSENBROCK = {
    # name: (make(params) -> optimizer, steps, schedule or None)
    "rmsproptf": (lambda ps: RMSpropTF(ps, lr=3e-4, momentum=0.9), 3000, None),   # DQN's alpha, eps
    "lamb": (lambda ps: LAMB(ps, lr=0.02, weight_decay=0.0), 3000, "cosine"),
    "adabelief": (lambda ps: AdaBelief(ps, lr=0.02, betas=(0.9, 0.999), eps=1e-16), 3000, None),
    # Rosenbrock's raw gradient at the start is ~150: the rectified momentum-only first steps would
    # throw the point far away at this lr, so they are skipped.
    "adabelief_rectified": (lambda ps: AdaBelief(ps, lr=0.02, rectify=True, degenerated_to_sgd=False), 3000, None),
    "sharedadam": (lambda ps: SharedAdam(ps, lr=0.02), 3000, None),
    "lookahead_sgd": (lambda ps: Lookahead(torch.optim.SGD(ps, lr=1e-3, momentum=0.9), k=5, alpha=0.5), 3000, None),
    "lookahead_adam": (lambda ps: optim.build("lookahead", ps, base="adam", lr=0.02), 3000, None),
}


@pytest.mark.parametrize("name", sorted(ROSENBROCK))
def test_rosenbrock_converges(name):
    make, steps, schedule = ROSENBROCK[name]
    xy = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    opt = make([xy])
    sched = optim.schedules.WarmupCosine(opt, 0, steps) if schedule == "cosine" else None
    for _ in range(steps):
        opt.zero_grad()
        x, y = xy[0], xy[1]
        loss = (1 - x) ** 2 + 100 * (y - x**2) ** 2
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    torch.testing.assert_close(xy.detach(), torch.ones(2, dtype=torch.float64), atol=2e-2, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Registry and argument checks.


def test_registry_knows_torch_and_ours():
    names = optim.names()
    for n in ("adam", "adamw", "rmsprop", "nadam", "radam", "adafactor", "sgd",
              "rmsproptf", "lamb", "adabelief", "lookahead", "sharedadam", "adabound", "swats"):
        assert n in names
    w = torch.zeros(2, requires_grad=True)
    assert isinstance(optim.build("LAMB", [w]), LAMB)
    assert isinstance(optim.build("adabelief", [w], rectify=True), AdaBelief)
    la = optim.build("lookahead", [w], base="sgd", k=5, alpha=0.5, lr=0.1, momentum=0.9)
    assert isinstance(la.inner, torch.optim.SGD) and la.inner.defaults["momentum"] == 0.9
    assert isinstance(optim.build("lookahead", [w]).inner, torch.optim.Adam)   # Adam by default


def test_registry_errors_are_clear():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'; choose one of: .*lamb"):
        optim.build("adamx", [w])
    with pytest.raises(ValueError, match="takes no momentum"):
        optim.build("lamb", [w], momentum=0.9)
    with pytest.raises(ValueError, match="unknown base optimizer"):
        optim.build("lookahead", [w], base="nope")
    with pytest.raises(ValueError, match="lamb: Invalid learning rate"):
        optim.build("lamb", [w], lr=-1.0)
    with pytest.raises(ValueError, match="Invalid k"):
        Lookahead(torch.optim.SGD([w], lr=0.1), k=0)
    with pytest.raises(ValueError, match="go to the wrapped optimizer"):
        Lookahead(torch.optim.SGD([w], lr=0.1), lr=0.2)


def test_rmsproptf_foreach_handles_mixed_dtypes():
    # A fused list needs one dtype: float32 and float64 parameters are stepped as separate lists, and
    # match the per-tensor path.
    def params():
        g = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(4, 3, generator=g)),
              torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        return ps

    fused, loop = params(), params()
    a = optim.build("rmsproptf", fused, foreach=True, momentum=0.9)
    b = optim.build("rmsproptf", loop, foreach=False, momentum=0.9)
    for _ in range(3):
        a.step()
        b.step()
    for x, y in zip(fused, loop):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-12)


def test_pairings_are_the_trainers_defaults():
    """`python -m optim`'s table of what each trainer uses says what the trainers' presets say."""
    from agents import dqn, ppo, rainbow, sac
    from gans import dcgan
    from optim.__main__ import PAIRINGS, main

    rows = {task: (opt, hp) for task, opt, hp, _ in PAIRINGS}
    checks = [("DQN, Atari", dqn.ATARI["optimizer"], dqn.ATARI["learning_rate"]),
              ("DQN, classic control", dqn.CLASSIC["optimizer"], dqn.CLASSIC["learning_rate"]),
              ("Rainbow, Atari", rainbow.Config.optimizer, rainbow.ATARI["learning_rate"]),
              ("Rainbow, Atari 100k", rainbow.Config.optimizer, rainbow.ATARI100K["learning_rate"]),
              ("PPO, Atari", ppo.Config.optimizer, ppo.ATARI["learning_rate"]),
              ("PPO, MuJoCo", ppo.Config.optimizer, ppo.MUJOCO["learning_rate"]),
              ("SAC, MuJoCo", "kfac", sac.DEFAULT_LR),
              ("DCGAN, images", dcgan.Config.g_optimizer, dcgan.IMAGE_PRESET["g_lr"])]
    for task, optimizer, lr in checks:
        opt, hp = rows[task]
        said = float(re.search(r"lr ([0-9.e-]+)", hp).group(1))
        assert opt.startswith(optimizer) and said == lr, (task, opt, hp, lr)
    cfg = sac.prepare(sac.Config(env="HalfCheetah"))
    assert cfg.optimizer == "kfac" and cfg.q_lr == cfg.policy_lr == sac.DEFAULT_LR
    assert f"({cfg.kfac_combine})" in rows["SAC, MuJoCo"][0]  # the listing names the default combination
    plain = sac.prepare(sac.Config(env="HalfCheetah", optimizer="adam"))
    said = float(re.search(r"adam: plain SAC, lr ([0-9.e-]+)", rows["SAC, MuJoCo"][1]).group(1))
    assert plain.q_lr == plain.policy_lr == sac.DEFAULT_LR == said
    assert dcgan.Config.d_optimizer == "rmsprop" and dcgan.IMAGE_PRESET["d_lr"] == dcgan.IMAGE_PRESET["g_lr"]
    assert dcgan.DEFAULT_G_BETAS == (0.5, 0.999) and dcgan.DEFAULT_D_ALPHA == 0.9
    main([])  # the listing runs


def test_optim_command_lists_every_optimizer(capsys, monkeypatch):
    from optim.__main__ import main

    monkeypatch.setenv("COLUMNS", "100")
    main([])  # a terminal of 100 columns: cells wrap, not lines
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 110
    monkeypatch.setenv("COLUMNS", "400")
    main([])
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in optim.drivable_names())  # a row each
    offered = out.split("In the registry but not offered")
    assert all(f"\n{name} " not in offered[0] and f"{name} (" in offered[1] for name in optim.NOT_DRIVABLE)
    assert "muon" in optim.NOT_DRIVABLE
    for name in optim.SEMANTICS:  # each row says what its eps/alpha mean
        row = re.search(rf"\n{name} .*", out).group(0)
        said = (("eps", optim.eps_means(name)), ("alpha", optim.alpha_means(name)))
        assert all(f"{hp} {v}" in row for hp, v in said if v), row
    main(["adabound"])
    assert "Luo et al. 2019" in capsys.readouterr().out
    main(["adabelief"])
    assert "eps (belief): s = b2 s" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["adamx"])
    assert e.value.code == 2 and "unknown optimizer 'adamx'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# What eps and alpha mean (optim.SEMANTICS), against the optimizers themselves: each declared meaning is
# checked by stepping the real optimizer and comparing with a float64 transcription of that meaning, on
# gradients that straddle eps so that an eps placed elsewhere fails. Each check also shows that its
# inputs tell the meanings apart (the neighbouring meaning's prediction does not match).

SEM_LR = 1e-3
SEM_W = np.array([0.5, -0.3, 0.8, -1.2, 0.1])
SEM_G = np.array([1e-4, -3e-4, 1e-3, -3e-3, 1e-2])  # |g| from below to above the eps values used
B1, B2 = 0.9, 0.999


def _declared(eps=None, alpha=None):
    return [n for n, s in optim.SEMANTICS.items()
            if (eps is None or s.eps in eps) and (alpha is None or s.alpha == alpha)]


def _steps(name, grads, **hparams):
    """Step optimizer `name` (from the registry, float64, weight decay 0) on SEM_W with `grads` in turn;
    return the weights before the last step and the last step's change."""
    p = torch.nn.Parameter(torch.tensor(SEM_W))
    if optim.accepts(name, "weight_decay"):
        hparams.setdefault("weight_decay", 0.0)
    opt = optim.build(name, [p], lr=SEM_LR, **hparams)
    before = None
    for g in grads:
        before = p.detach().numpy().copy()
        p.grad = torch.tensor(g)
        opt.step()
    return before, p.detach().numpy() - before


def _adam_step(name, w, g, eps, t, hat):
    """Step t of `name` under a constant gradient g, where m_hat = g and v_hat = g^2 exactly: Adam's
    -lr * m_hat / (sqrt(v_hat) + eps), eps-hat's with eps / sqrt(1 - b2^t) in place of eps; times the
    per-tensor factor that NAdam's Nesterov weights, LAMB's trust ratio and RAdam's rectification put
    on the whole step."""
    r = g / (np.abs(g) + (eps / math.sqrt(1 - B2**t) if hat else eps))
    c = 1.0
    if name == "nadam":  # torch's momentum_decay 4e-3; the step is lr (1 - mu) / (1 - mu) g + lr mu' / (1 - mu mu') m
        mu, mu_next = (B1 * (1 - 0.5 * 0.96 ** (k * 4e-3)) for k in (t, t + 1))
        assert t == 1
        c = 1 + mu_next * (1 - B1) / (1 - mu * mu_next)
    elif name == "lamb":
        c = np.linalg.norm(w) / np.linalg.norm(r)
    elif name == "radam":
        rho_inf = 2 / (1 - B2) - 1
        rho_t = rho_inf - 2 * t * B2**t / (1 - B2**t)
        assert rho_t > 5
        c = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    return -SEM_LR * c * r


# RAdam takes an eps-free momentum step until rho_t > 5 (its 6th step at b2 0.999).
FIRST_ADAPTIVE_STEP = {"radam": 6}
# SWATS's eps is eps-hat in its Adam phase (and its switch tolerance besides, see test_swats_*).
PLACEMENT = {"swats": "adam-hat"}


@pytest.mark.parametrize("name", _declared(eps=("adam", "adam-hat", "swats")))
@pytest.mark.parametrize("eps", [1e-3, 1e-4])
def test_adam_eps_is_where_the_declaration_says(name, eps):
    meaning = PLACEMENT.get(optim.eps_means(name), optim.eps_means(name))
    t = FIRST_ADAPTIVE_STEP.get(name, 1)
    w, delta = _steps(name, [SEM_G] * t, eps=eps)
    # rtol 1e-6: NAdam keeps its mu product in float32
    np.testing.assert_allclose(delta, _adam_step(name, w, SEM_G, eps, t, hat=meaning == "adam-hat"), rtol=1e-6, atol=0)
    other = _adam_step(name, w, SEM_G, eps, t, hat=meaning != "adam-hat")
    assert not np.allclose(delta, other, rtol=1e-2, atol=0)


def test_radam_takes_no_eps_before_rectifying():
    for eps in (1e-3, 1e-4):
        _, delta = _steps("radam", [SEM_G] * 5, eps=eps)
        np.testing.assert_allclose(delta, -SEM_LR * SEM_G, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", _declared(eps=("inside-max",)))
@pytest.mark.parametrize("eps", [1e-3, 1e-4])
def test_adamax_eps_is_inside_the_infinity_norm(name, eps):
    # b2 0.5, so that the decayed u wins the max and eps's place in it shows (at 0.999 it hardly does)
    grads, b2 = [10 * SEM_G, SEM_G, -3 * SEM_G, 0.1 * SEM_G], 0.5

    def reference(inside):
        w, m, u = SEM_W.copy(), np.zeros(5), np.zeros(5)
        for t, g in enumerate(grads, 1):
            before = w.copy()
            m = B1 * m + (1 - B1) * g
            u = np.maximum(b2 * u, np.abs(g) + (eps if inside else 0.0))
            w = w - SEM_LR / (1 - B1**t) * m / (u if inside else u + eps)
        return w - before

    _, delta = _steps(name, grads, eps=eps, betas=(B1, b2))
    np.testing.assert_allclose(delta, reference(inside=True), rtol=1e-9, atol=0)
    assert not np.allclose(delta, reference(inside=False), rtol=1e-2, atol=0)
    # gradient units, as Adam's: the first step is Adam's for the same eps
    _, first = _steps(name, [SEM_G], eps=eps)
    np.testing.assert_allclose(first, _adam_step("adam", SEM_W, SEM_G, eps, 1, hat=False), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", _declared(eps=("belief",)))
def test_adabelief_eps_is_inside_its_s_so_it_is_not_an_adam(name):
    for eps in (1e-8, 1e-10):
        _, delta = _steps(name, [SEM_G], eps=eps)
        # m = (1 - b1) g, so g - m = b1 g and s_hat = b1^2 g^2 + eps / (1 - b2); eps again outside the root
        s_hat = B1**2 * SEM_G**2 + eps / (1 - B2)
        np.testing.assert_allclose(delta, -SEM_LR * SEM_G / (np.sqrt(s_hat) + eps), rtol=1e-9, atol=0)
        assert not np.allclose(delta, _adam_step("adam", SEM_W, SEM_G, eps, 1, hat=False), rtol=1e-2, atol=0)
    # Rainbow's Adam eps 1.5e-4 would make AdaBelief's steps on these gradients >30x smaller than Adam's
    _, belief = _steps(name, [SEM_G], eps=1.5e-4)
    _, adam = _steps("adam", [SEM_G], eps=1.5e-4)
    assert np.all(np.abs(belief) * 30 < np.abs(adam))
    assert name not in optim.ADAMS and not optim.takes_adam_eps(name)


@pytest.mark.parametrize("name", optim.RMSPROPS)
@pytest.mark.parametrize("alpha", [0.9, 0.7])
def test_rmsprops_alpha_is_the_squared_gradient_decay(name, alpha):
    eps, grads = 1e-5, [10 * SEM_G, SEM_G, -0.5 * SEM_G]
    inside = {"inside-sqrt": True, "outside-sqrt": False}[optim.eps_means(name)]

    def reference(decay, inside):
        w, v = SEM_W.copy(), np.zeros(5)
        for g in grads:
            before = w.copy()
            v = decay * v + (1 - decay) * g * g
            w = w - SEM_LR * g / (np.sqrt(v + eps) if inside else np.sqrt(v) + eps)
        return w - before

    _, delta = _steps(name, grads, alpha=alpha, eps=eps, centered=False)
    np.testing.assert_allclose(delta, reference(alpha, inside), rtol=1e-9, atol=0)
    assert not np.allclose(delta, reference(1 - alpha, inside), rtol=1e-2, atol=0)
    assert not np.allclose(delta, reference(alpha, not inside), rtol=1e-2, atol=0)  # eps where declared


@pytest.mark.parametrize("name", _declared(alpha="interpolation"))
def test_lookahead_alpha_is_the_interpolation(name):
    for alpha in (0.5, 0.25):
        _, delta = _steps(name, [SEM_G], base="sgd", k=1, alpha=alpha)
        np.testing.assert_allclose(delta, -alpha * SEM_LR * SEM_G, rtol=1e-9, atol=0)
    assert name not in optim.RMSPROPS


def test_semantics_are_declared_for_the_registry():
    for name, s in optim.SEMANTICS.items():
        assert name in optim.REGISTRY, name
        for hp in ("eps", "alpha"):
            if getattr(s, hp) is not None:
                assert optim.accepts(name, hp), (name, hp)
    # every drivable optimizer with Adam's (betas, eps) or with an alpha says what they mean
    for name in optim.drivable_names():
        params = inspect.signature(optim.REGISTRY[name].__init__).parameters
        if {"betas", "eps"} <= set(params) or "alpha" in params:
            assert name in optim.SEMANTICS, name
    with pytest.raises(ValueError, match="eps='outside': not one of adam"):
        optim.Semantics(eps="outside")


def test_families_follow_the_declarations():
    assert "adabelief" not in optim.ADAMS and optim.eps_means("AdaBelief") == "belief"
    assert {"adam", "adamw", "sharedadam", "nadam", "lamb", "radam", "adabound", "adamax"} == set(optim.ADAMS)
    assert set(optim.RMSPROPS) == {"rmsprop", "rmsproptf"} and "lookahead" not in optim.RMSPROPS
    assert optim.eps_means("rmsproptf") == "inside-sqrt" and optim.eps_means("rmsprop") == "outside-sqrt"
    assert "swats" not in optim.ADAMS  # its eps is the switch tolerance too
    # no declaration, no family: torch's Adagrad adds its eps like Adam, to a sum that never decays
    assert optim.eps_means("adagrad") is None and not optim.takes_adam_eps("adagrad")
    assert optim.alpha_means("sgd") is None and not optim.takes_rmsprop_alpha("sgd")
    assert isinstance(optim.ADAMS, tuple) and isinstance(optim.RMSPROPS, tuple)


def test_rainbow_leaves_adabelief_its_own_eps():
    """The defect this guards: Rainbow gave every ADAMS member its Adam eps 1.5e-4, AdaBelief included."""
    from agents import rainbow
    from common.errors import UserError

    assert rainbow.prepare(rainbow.Config(env="Breakout", optimizer="adabelief")).adam_eps is None  # its 1e-16
    assert rainbow.prepare(rainbow.Config(env="Breakout", optimizer="adam")).adam_eps == 1.5e-4
    with pytest.raises(UserError, match="--adam-eps: optimizer 'adabelief' takes no Adam epsilon"):
        rainbow.prepare(rainbow.Config(env="Breakout", optimizer="adabelief", adam_eps=1e-3))


# ---------------------------------------------------------------------------------------------------
# Parameter groups by module name (--lr-mult).

def test_groups_by_pattern_take_the_first_match_and_keep_ratios():
    from optim import groups

    net = torch.nn.ModuleDict({"torso": torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 4)),
                               "head": torch.nn.Linear(4, 2)})
    gs = groups.by_pattern(net.named_parameters(), groups.parse(["torso.0=0.1", "torso=0.5"]), lr=1e-3)
    by_mult = {g["lr_mult"]: g for g in gs}
    assert sorted(by_mult) == [0.1, 0.5, 1.0]
    assert by_mult[0.1]["params"] == list(net["torso"][0].parameters()) and by_mult[0.1]["lr"] == pytest.approx(1e-4)
    assert by_mult[0.5]["params"] == list(net["torso"][1].parameters())
    assert by_mult[1.0]["params"] == list(net["head"].parameters()) and by_mult[1.0]["patterns"] == ["the rest"]
    assert groups.matches("*.weight", "torso.0.weight") and not groups.matches("orso", "torso.0.weight")
    opt = optim.build("adabound", gs, lr=1e-3)
    sched = optim.schedules.from_spec("cosine", opt, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    lrs = {g["lr_mult"]: g["lr"] for g in opt.param_groups}
    assert lrs[0.1] / lrs[1.0] == pytest.approx(0.1) and lrs[0.5] / lrs[1.0] == pytest.approx(0.5)
    assert "torso.0 x0.1 (2 tensors, 16 weights)" in groups.describe(gs)
    with pytest.raises(ValueError, match="'tail' matches no parameter; the top-level modules are head, torso"):
        groups.by_pattern(net.named_parameters(), {"tail": 0.1}, lr=1e-3)
    for bad in ("torso", "torso=x", "torso=-1", "=1"):
        with pytest.raises(ValueError, match="PATTERN=FACTOR"):
            groups.parse([bad])
