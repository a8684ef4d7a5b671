"""The optimizers that step with K-FAC's curvature (optim.kfac_steps), and ACKTR's recipe, against float64
transcriptions of their updates: EigenAdam against Adam run on vec(V) in the dense Kronecker eigenbasis
kron(Q_G, Q_A) (the first moment rotated by dense matrices when the bases change), Graft against a dense
solve at Adam's per-layer step norm, and K-FAC + KL clip + SGD momentum against ACKTR's step."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optim.kfac import KFAC, StackedLinear, gaussian_fisher_loss
from optim.kfac_steps import EigenAdam, Graft

D64 = torch.float64
LR, B1, B2, EPS = 1e-2, 0.9, 0.999, 1e-8


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)).to(D64)


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 3, generator=g, dtype=D64), torch.randn(16, 1, generator=g, dtype=D64))
            for _ in range(n)]


def linears(model):
    return [m for m in model if isinstance(m, nn.Linear)]


def vec_grad(layer):
    """vec([dW, db]) row-major: the order of kron(G, A)."""
    return torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).flatten()


def add_vec(layer, u, alpha):
    u = u.reshape(layer.weight.shape[0], -1)
    layer.weight.data.add_(u[:, :-1], alpha=alpha)
    layer.bias.data.add_(u[:, -1], alpha=alpha)


def capture_backward(model, kfac, x, y):
    with kfac.capture():
        F.mse_loss(model(x), y).backward()


def adam_dir(st, g, t):
    st["m"] = B1 * st["m"] + (1 - B1) * g
    st["v"] = B2 * st["v"] + (1 - B2) * g * g
    return (st["m"] / (1 - B1**t)) / ((st["v"] / (1 - B2**t)).sqrt() + EPS)


@pytest.mark.parametrize("inv_every,first_capture", [(1, 1), (2, 1), (2, 3)])
def test_eigen_adam_is_adam_in_the_dense_kronecker_eigenbasis(inv_every, first_capture):
    """Before `first_capture` the layers have no factors: Adam in the identity basis, whose moments the
    first bases then take over."""
    model = mlp()
    ref = copy.deepcopy(model)
    kfac = KFAC(model, mode="eigenbasis", factor_update_freq=1, inv_update_freq=inv_every, factor_decay=0.8)
    opt = EigenAdam(model.parameters(), kfac, lr=LR, betas=(B1, B2), eps=EPS)
    state = [dict(m=torch.zeros(n, dtype=D64), v=torch.zeros(n, dtype=D64), Q=torch.eye(n, dtype=D64))
             for n in (layer.weight.numel() + layer.bias.numel() for layer in linears(ref))]
    for t, (x, y) in enumerate(batches(6), start=1):
        opt.zero_grad()
        if t >= first_capture:
            capture_backward(model, kfac, x, y)
        else:
            F.mse_loss(model(x), y).backward()
        opt.step()
        # the reference: its own gradients at its own weights, the bases from K-FAC's factors (tested against
        # the per-example Fisher in test_kfac.py) decomposed densely when they were refreshed
        ref.zero_grad()
        F.mse_loss(ref(x), y).backward()
        for layer, kl, st in zip(linears(ref), kfac.layers.values(), state):
            if t >= first_capture and (t - 1) % inv_every == 0:
                q_new = torch.kron(torch.linalg.eigh(kl.G)[1], torch.linalg.eigh(kl.A)[1])
                st["m"] = q_new.T @ st["Q"] @ st["m"]  # the second moment stays as it is
                st["Q"] = q_new
            q = st["Q"]
            add_vec(layer, q @ adam_dir(st, q.T @ vec_grad(layer), t), -LR)
    for p, r in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-9, atol=1e-12)


def test_eigen_adam_state_dict_resumes_exactly():
    model = mlp()
    kfac = KFAC(model, mode="eigenbasis", factor_update_freq=1, inv_update_freq=2)
    opt = EigenAdam(model.parameters(), kfac, lr=LR)
    data = batches(6)
    for x, y in data[:3]:
        opt.zero_grad()
        capture_backward(model, kfac, x, y)
        opt.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "kfac": kfac.state_dict(), "opt": opt.state_dict()}, buf)
    model2 = mlp(seed=5)
    kfac2 = KFAC(model2, mode="eigenbasis", factor_update_freq=1, inv_update_freq=2)
    opt2 = EigenAdam(model2.parameters(), kfac2, lr=LR)
    buf.seek(0)
    saved = torch.load(buf)
    model2.load_state_dict(saved["model"])
    kfac2.load_state_dict(saved["kfac"])
    opt2.load_state_dict(saved["opt"])
    for (x, y) in data[3:]:
        for m, k, o in ((model, kfac, opt), (model2, kfac2, opt2)):
            o.zero_grad()
            capture_backward(m, k, x, y)
            o.step()
    for p, r in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-12, atol=1e-14)


def test_eigen_adam_needs_the_eigenbases():
    model = mlp()
    with pytest.raises(ValueError, match="eigenbasis"):
        EigenAdam(model.parameters(), KFAC(model, mode="eigen"))


@pytest.mark.parametrize("warmup", [0, 2])
def test_graft_takes_kfac_direction_at_adams_layer_norm(warmup):
    damping = 0.05
    model = mlp()
    ref = copy.deepcopy(model)
    kfac = KFAC(model, mode="eigen", damping=damping, factor_update_freq=1, inv_update_freq=1)
    opt = Graft(model.parameters(), kfac, lr=LR, betas=(B1, B2), eps=EPS, warmup=warmup)
    state = [dict(m=0.0, v=0.0) for _ in linears(ref)]
    for t, (x, y) in enumerate(batches(4), start=1):
        opt.zero_grad()
        capture_backward(model, kfac, x, y)
        opt.step()
        ref.zero_grad()
        F.mse_loss(ref(x), y).backward()
        for layer, kl, st in zip(linears(ref), kfac.layers.values(), state):
            adam = adam_dir(st, vec_grad(layer), t)
            if t <= warmup:
                step = adam
            else:
                m_hat = st["m"] / (1 - B1**t)
                n = m_hat.numel()
                p = torch.linalg.solve(torch.kron(kl.G, kl.A) + damping * torch.eye(n, dtype=D64), m_hat)
                step = p * adam.norm() / p.norm()
                assert step.norm().item() == pytest.approx(adam.norm().item(), rel=1e-12)
            add_vec(layer, step, -LR)
    for p, r in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-9, atol=1e-12)


def test_params_outside_kfac_layers_take_adams_step():
    """A LayerNorm's parameters (no K-FAC layer) step as torch's Adam steps them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)).to(D64)
    twin = copy.deepcopy(model)
    kfac = KFAC(model, mode="eigenbasis")
    opt = EigenAdam(model.parameters(), kfac, lr=LR)
    adam = torch.optim.Adam(twin[1].parameters(), lr=LR)
    for x, y in batches(3):
        for m in (model, twin):
            m.zero_grad()
        capture_backward(model, kfac, x, y)
        opt.step()
        F.mse_loss(twin(x), y).backward()
        adam.step()
        twin[0].load_state_dict(model[0].state_dict())
        twin[2].load_state_dict(model[2].state_dict())
    for p, r in zip(model[1].parameters(), twin[1].parameters()):
        torch.testing.assert_close(p, r, rtol=1e-10, atol=1e-12)


def test_acktr_recipe_kl_clipped_natural_gradient_with_momentum():
    """KFAC(kl_clip) then SGD(momentum=0.9): each step the dense damped natural gradient, scaled by
    min(1, sqrt(kl_clip / (lr^2 g^T P g))) over all layers, into the momentum buffer (ACKTR's order)."""
    lr, kl_clip, damping, mom = 0.5, 1e-3, 0.1, 0.9
    model = mlp()
    ref = copy.deepcopy(model)
    kfac = KFAC(model, mode="eigen", damping=damping, kl_clip=kl_clip, lr=lr, factor_update_freq=1,
                inv_update_freq=1)
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=mom)
    bufs = [None] * 3
    clipped = False
    for x, y in batches(3):
        sgd.zero_grad()
        capture_backward(model, kfac, x, y)
        kfac.step()
        sgd.step()
        ref.zero_grad()
        F.mse_loss(ref(x), y).backward()
        nat = []
        for layer, kl in zip(linears(ref), kfac.layers.values()):
            g = vec_grad(layer)
            nat.append((g, torch.linalg.solve(torch.kron(kl.G, kl.A) + damping * torch.eye(g.numel(), dtype=D64), g)))
        vg = sum((g * p).sum() for g, p in nat).item()
        nu = min(1.0, math.sqrt(kl_clip / (lr**2 * vg)))
        clipped |= nu < 1.0
        for i, (layer, (_, p)) in enumerate(zip(linears(ref), nat)):
            bufs[i] = nu * p if bufs[i] is None else mom * bufs[i] + nu * p
            add_vec(layer, bufs[i], -lr)
    assert clipped  # the clip was active on some step
    for p, r in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", [EigenAdam, Graft])
def test_kfac_steps_fit_a_regression_better_than_adam(cls):
    """300 steps on a smooth regression with the Gaussian (true) Fisher, as SAC's critics capture it:
    the final loss well below Adam's at the same learning rate (measured: 7-8x below)."""
    torch.manual_seed(0)
    x = torch.randn(256, 3, dtype=D64)
    y = torch.sin(x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=D64))
    losses = {}
    for name in ("adam", "kfac"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).to(D64)
        kfac = None
        if name == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=LR)
        else:
            kfac = KFAC(model, mode="eigenbasis" if cls is EigenAdam else "eigen", damping=1e-2)
            opt = cls(model.parameters(), kfac, lr=LR)
        for _ in range(300):
            opt.zero_grad()
            if kfac is None:
                out = model(x)
            else:
                with kfac.capture():
                    out = model(x)
                    gaussian_fisher_loss(out).backward(retain_graph=True)
                model.zero_grad()
            F.mse_loss(out, y).backward()
            opt.step()
        losses[name] = F.mse_loss(model(x), y).item()
    assert losses["kfac"] < 0.5 * losses["adam"]


# ------------------------------------------------------------------------------------------------
# A StackedLinear is preconditioned exactly as its members would be as separate Linear layers
# ------------------------------------------------------------------------------------------------


class Twins(nn.Module):
    """Two 3-5-1 networks as StackedLinear layers (SAC's twin critics' layout): an input shared by both,
    their outputs (2, B)."""

    def __init__(self):
        super().__init__()
        self.hidden, self.head = StackedLinear(2, 3, 5), StackedLinear(2, 5, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.hidden(x))).squeeze(-1)


def twins_and_separate(seed=0):
    torch.manual_seed(seed)
    twins = Twins().to(D64)
    separate = nn.ModuleList(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)) for _ in range(2)).to(D64)
    with torch.no_grad():
        for i, net in enumerate(separate):
            for mine, theirs in ((twins.hidden, net[0]), (twins.head, net[2])):
                theirs.weight.copy_(mine.weight[i])
                theirs.bias.copy_(mine.bias[i])
    return twins, separate


def twin_loss(q, y):
    """Each member's own mean squared error, summed (SAC's critic loss), and its Gaussian Fisher loss."""
    return sum(F.mse_loss(q[i], y) for i in range(2)), sum(gaussian_fisher_loss(q[i]) for i in range(2))


@pytest.mark.parametrize("combine", ["eigen-adam", "graft", "eigen", "inverse"])
def test_stacked_linear_steps_as_its_members_would_as_separate_layers(combine):
    """Forward, factors (A per member from the shared input, G per member) and three steps of each
    combination: EigenAdam, Graft, and K-FAC's own preconditioning (eigen with the one-output shortcut,
    inverse) under SGD, each on the stacked twins and on two separate networks, equal in float64."""
    twins, separate = twins_and_separate()
    mode = {"eigen-adam": "eigenbasis", "graft": "eigen"}.get(combine, combine)
    kfacs = [KFAC(m, damping=1e-2, inv_update_freq=2, mode=mode) for m in (twins, separate)]
    if combine == "eigen-adam":
        opts = [EigenAdam(m.parameters(), k, lr=LR) for m, k in zip((twins, separate), kfacs)]
    elif combine == "graft":
        opts = [Graft(m.parameters(), k, lr=LR, warmup=1) for m, k in zip((twins, separate), kfacs)]
    else:
        opts = [torch.optim.SGD(m.parameters(), lr=LR) for m in (twins, separate)]
    for step, (x, y) in enumerate(batches(3)):
        y = y.squeeze(1)
        outs = []
        for model, kfac, opt in zip((twins, separate), kfacs, opts):
            torch.manual_seed(step)  # the Fisher loss's sampled targets alike for both
            with kfac.capture():
                q = model(x) if model is twins else torch.stack([net(x).squeeze(-1) for net in model])
                loss, fisher = twin_loss(q, y)
                fisher.backward(retain_graph=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if combine in ("eigen", "inverse"):
                kfac.step()
            opt.step()
            outs.append(q.detach())
        torch.testing.assert_close(outs[0], outs[1])
        for i, net in enumerate(separate):
            for stacked, name in ((twins.hidden, "hidden"), (twins.head, "head")):
                layer = kfacs[0].layers[name]
                theirs = kfacs[1].layers[f"{i}.{0 if name == 'hidden' else 2}"]
                torch.testing.assert_close(layer.A[i], theirs.A, msg=f"A of {name}[{i}], step {step}")
                torch.testing.assert_close(layer.G[i], theirs.G, msg=f"G of {name}[{i}], step {step}")
                torch.testing.assert_close(stacked.weight[i], theirs.helper.module.weight, msg=f"{name}[{i}]")
                torch.testing.assert_close(stacked.bias[i], theirs.helper.module.bias, msg=f"{name}[{i}] bias")


def test_stacked_linear_is_its_members_as_linear_layers_and_its_state_resumes():
    twins, separate = twins_and_separate()
    x = torch.randn(4, 3, dtype=D64)
    per_member = torch.randn(2, 4, 3, dtype=D64)  # each member its own rows
    torch.testing.assert_close(twins.hidden(per_member)[1], separate[1][0](per_member[1]))
    torch.testing.assert_close(twins(x), torch.stack([net(x).squeeze(-1) for net in separate]))
    # its factors save and load with their shape, and a wrong shape is refused
    kfac = KFAC(twins, mode="eigenbasis")
    with kfac.capture():
        twin_loss(twins(x), torch.zeros(4, dtype=D64))[1].backward()
    kfac.update_curvature()
    state = kfac.state_dict()
    assert state["layers"]["hidden"]["A"].shape == (2, 4, 4) and state["layers"]["hidden"]["QG"].shape == (2, 5, 5)
    other = KFAC(Twins().to(D64), mode="eigenbasis")
    other.load_state_dict(state)
    torch.testing.assert_close(other.layers["head"].G, kfac.layers["head"].G)
    state["layers"]["hidden"]["A"] = state["layers"]["hidden"]["A"][0]
    with pytest.raises(ValueError, match="layer 'hidden' has the wrong shape"):
        other.load_state_dict(state)


def test_a_stacked_factor_starts_from_its_first_batch_whatever_its_buffer_held():
    """With one input for every member, the batch statistics fold into each member's factor; a new
    buffer's leftover contents (NaN here) are ignored, not scaled by 0."""
    from optim.kfac import _add_to_mean

    rows, more = torch.randn(4, 3, dtype=D64), torch.randn(2, 3, dtype=D64)
    mean, count = _add_to_mean(torch.full((2, 3, 3), float("nan"), dtype=D64), 0, rows, 1.0, 4, members=2)
    torch.testing.assert_close(mean, (rows.T @ rows / 4).expand(2, 3, 3))
    mean, count = _add_to_mean(mean, count, more, 1.0, 2, members=2)
    assert count == 6
    torch.testing.assert_close(mean[1], (rows.T @ rows + more.T @ more) / 6)
