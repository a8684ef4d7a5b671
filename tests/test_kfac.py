"""K-FAC against dense computations: the Kronecker factors against the per-example Fisher, the
preconditioned gradient against a dense solve, batch-size independence, capture only inside the
context, deepcopy safety, state_dict round trip, Conv2d, KL clipping, the Fisher sampling helpers,
and a small regression that K-FAC + SGD fits better than SGD."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optim.kfac import KFAC, gaussian_fisher_loss, policy_fisher_loss

D64 = torch.float64

# The first layer's input needs no gradient, so torch warns that the hook sees output gradients only,
# which is all K-FAC uses. optim.kfac filters that warning, but pytest resets filters for each test.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def grad_vec(layer: nn.Module) -> torch.Tensor:
    """vec([dW, db]) row-major: index out * (in + 1) + in, the order of kron(G, A)."""
    w = layer.weight.grad.reshape(layer.weight.shape[0], -1)
    return torch.cat([w, layer.bias.grad[:, None]], 1).flatten()


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def loss_fn(y, target):
    # something non-quadratic, so that g depends on the output
    return F.cross_entropy(y, target)


def one_layer(seed=0, n_in=3, n_out=4):
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out).to(D64)


def test_kron_factors_equal_per_example_fisher():
    """One Linear layer, one example: kron(G, A) is exactly the outer product of the example's gradient."""
    layer = one_layer()
    x = torch.randn(1, 3, dtype=D64)
    kfac = KFAC(layer)
    with kfac.capture():
        loss_fn(layer(x), torch.tensor([2])).backward()
    g = grad_vec(layer).clone()
    kfac.step()
    state = kfac.layers[""]
    fisher = torch.outer(g, g)
    assert rel_err(torch.kron(state.G, state.A), fisher) <= 1e-12


def test_layer_without_bias():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False).to(D64)
    x = torch.randn(1, 3, dtype=D64)
    kfac = KFAC(layer, damping=0.1)
    with kfac.capture():
        loss_fn(layer(x), torch.tensor([0])).backward()
    g = layer.weight.grad.flatten().clone()
    kfac.step()
    state = kfac.layers[""]
    assert state.A.shape == (3, 3)
    assert rel_err(torch.kron(state.G, state.A), torch.outer(g, g)) <= 1e-12
    dense = torch.linalg.solve(torch.outer(g, g) + 0.1 * torch.eye(6, dtype=D64), g)
    assert rel_err(layer.weight.grad.flatten(), dense) <= 1e-10


def test_eigen_mode_is_exact_damped_inverse_for_one_example():
    layer = one_layer()
    x = torch.randn(1, 3, dtype=D64)
    damping = 0.1
    kfac = KFAC(layer, damping=damping, mode="eigen")
    with kfac.capture():
        loss_fn(layer(x), torch.tensor([1])).backward()
    g = grad_vec(layer).clone()
    kfac.step()
    dense = torch.linalg.solve(torch.outer(g, g) + damping * torch.eye(g.numel(), dtype=D64), g)
    assert rel_err(grad_vec(layer), dense) <= 1e-10


def _per_example_factors(layer, x, target):
    """A and G computed directly: per-example output gradients from separate backward passes."""
    a_bar = torch.cat([x, torch.ones(x.shape[0], 1, dtype=D64)], 1)
    A = a_bar.T @ a_bar / x.shape[0]
    gs = []
    for n in range(x.shape[0]):
        y = layer(x[n : n + 1]).detach().requires_grad_()
        loss_fn(y, target[n : n + 1]).backward()
        gs.append(y.grad[0])
    g = torch.stack(gs)
    return A, g.T @ g / x.shape[0]


@pytest.mark.parametrize("mode", ["eigen", "inverse"])
def test_preconditioned_gradient_matches_dense_solve(mode):
    """A batch of 8: the factors equal the per-example expectations, and the new gradient is the dense
    (G (x) A + damping I)^-1 g (eigen) or the factored-damping inverse (inverse mode)."""
    layer = one_layer(n_in=5, n_out=3)
    x, target = torch.randn(8, 5, dtype=D64), torch.randint(0, 3, (8,))
    damping = 0.05
    kfac = KFAC(layer, damping=damping, mode=mode)
    with kfac.capture():
        loss_fn(layer(x), target).backward()
    g = grad_vec(layer).clone()
    kfac.step()
    A, G = _per_example_factors(layer, x, target)
    state = kfac.layers[""]
    assert rel_err(state.A, A) <= 1e-12 and rel_err(state.G, G) <= 1e-12
    if mode == "eigen":
        dense = torch.linalg.solve(torch.kron(G, A) + damping * torch.eye(g.numel(), dtype=D64), g)
    else:  # Martens & Grosse section 6.3: (G + sqrt(damping)/pi I) (x) (A + pi sqrt(damping) I)
        pi = math.sqrt((torch.trace(A) / A.shape[0]) / (torch.trace(G) / G.shape[0]))
        r = math.sqrt(damping)
        damped = torch.kron(G + r / pi * torch.eye(3, dtype=D64), A + pi * r * torch.eye(6, dtype=D64))
        dense = torch.linalg.solve(damped, g)
    assert rel_err(grad_vec(layer), dense) <= 1e-10


def test_factors_do_not_depend_on_batch_size():
    """The same examples twice over: same per-example statistics, same factors (mean-reduced loss);
    a summed loss with reduction='sum' gives them too."""
    x, target = torch.randn(6, 5, dtype=D64), torch.randint(0, 3, (6,))
    factors = []
    for xb, tb, reduction in ((x, target, "mean"), (x.repeat(2, 1), target.repeat(2), "mean"),
                              (x.repeat(3, 1), target.repeat(3), "sum")):
        layer = one_layer(n_in=5, n_out=3)
        kfac = KFAC(layer, reduction=reduction)
        with kfac.capture():
            F.cross_entropy(layer(xb), tb, reduction=reduction).backward()
        kfac.step()
        factors.append((kfac.layers[""].A, kfac.layers[""].G))
    for A, G in factors[1:]:
        assert rel_err(A, factors[0][0]) <= 1e-12 and rel_err(G, factors[0][1]) <= 1e-12


def _mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).to(dtype)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_nothing_is_captured_outside_the_context():
    critic = _mlp()
    kfac = KFAC(critic)
    x = torch.randn(10, 4)
    assert _no_hooks(critic)
    critic(x).pow(2).mean().backward()                 # outside: no statistics, no factors
    raw = [p.grad.clone() for p in critic.parameters()]
    kfac.step()
    assert all(layer.A is None for layer in kfac.layers.values())
    assert all(torch.equal(p.grad, r) for p, r in zip(critic.parameters(), raw))

    # The critic's own loss inside; an "actor loss" through the critic afterwards, outside, even through
    # a graph built inside (autograd keeps the backward hook): the factors are the critic loss's alone.
    def factors(with_actor_loss):
        model = _mlp()
        k = KFAC(model)
        obs = torch.randn(10, 4)
        action = torch.randn(10, 4, requires_grad=True)
        with k.capture():
            q = model(obs)
            q.pow(2).mean().backward(retain_graph=True)
        assert _no_hooks(model)
        if with_actor_loss:
            (-model(action).mean()).backward()
            (-q.mean()).backward()
        k.step()
        return [(layer.A, layer.G) for layer in k.layers.values()]

    for (a1, g1), (a2, g2) in zip(factors(False), factors(True)):
        assert torch.equal(a1, a2) and torch.equal(g1, g2)


def test_capture_hooks_only_on_factor_update_steps():
    """With factor_update_freq=3, captures at steps 1 and 2 register no hooks and record nothing; the
    factors change only at step 3, while every step still preconditions with the last decomposition."""
    model = _mlp()
    kfac = KFAC(model, factor_update_freq=3, inv_update_freq=3)
    x = torch.randn(8, 4)
    seen = []
    for step in range(4):
        model.zero_grad()
        with kfac.capture():
            seen.append(not _no_hooks(model))
            model(x * (step + 1)).pow(2).mean().backward()
        raw = [p.grad.clone() for p in model.parameters()]
        before = kfac.layers["0"].A.clone() if kfac.layers["0"].A is not None else None
        kfac.step()
        changed = before is None or not torch.equal(before, kfac.layers["0"].A)
        assert changed == (step % 3 == 0), step
        assert not all(torch.equal(p.grad, r) for p, r in zip(model.parameters(), raw))
    assert seen == [True, False, False, True]


def test_no_grad_forward_inside_capture_is_not_recorded():
    model = _mlp()
    kfac = KFAC(model)
    x = torch.randn(5, 4)
    with kfac.capture():
        with torch.no_grad():
            model(x * 100)                                # e.g. a target computation
        model(x).sum().backward()
    kfac.step()
    ref = KFAC(m := _mlp())
    with ref.capture():
        m(x).sum().backward()
    ref.step()
    for a, b in zip(kfac.layers.values(), ref.layers.values()):
        assert torch.equal(a.A, b.A)


def test_deepcopy_of_model_is_safe():
    model = _mlp()
    kfac = KFAC(model)
    x = torch.randn(8, 4)
    with kfac.capture():
        model(x).pow(2).mean().backward()
    kfac.step()
    target = copy.deepcopy(model)                      # a target network, made between captures
    assert _no_hooks(target)
    before = {name: layer.A.clone() for name, layer in kfac.layers.items()}
    with kfac.capture():
        target(x * 3).pow(2).mean().backward()         # the copy records nothing into our factors
        inside = copy.deepcopy(model)                  # even a copy made during a capture
    inside(x).sum().backward()
    with kfac.capture():
        inside(x * 5).pow(2).mean().backward()
        assert all(layer._a_count == 0 for layer in kfac.layers.values())
    # Hooks copied during a capture stay on the copy but are inert, and refer to this K-FAC object
    # rather than to a deep copy of it (which would duplicate every factor).
    copied_hooks = [h for mod in inside.modules() for h in mod._forward_hooks.values()]
    assert copied_hooks
    for h in copied_hooks:
        owners = [c.cell_contents for c in h.__closure__ if isinstance(c.cell_contents, KFAC)]
        assert owners and all(o is kfac for o in owners)
    assert all(any(layer.helper.module is mod for mod in model.modules()) for layer in kfac.layers.values())
    for name, layer in kfac.layers.items():
        assert torch.equal(layer.A, before[name])


def _kfac_training_step(model, kfac, opt, x, y):
    opt.zero_grad()
    with kfac.capture():
        out = model(x)
        gaussian_fisher_loss(out).backward(retain_graph=True)   # true Fisher: sampled targets
    opt.zero_grad()
    loss = F.mse_loss(out, y)
    loss.backward()
    kfac.step()
    opt.step()
    return loss.detach()


def test_state_dict_round_trip():
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    model = _mlp()
    kfac = KFAC(model, inv_update_freq=3, kl_clip=1e-2, lr=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(3)
    for _ in range(4):
        _kfac_training_step(model, kfac, opt, x, y)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "kfac": kfac.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model2 = _mlp(seed=7)
    model2.load_state_dict(saved["model"])
    kfac2 = KFAC(model2, inv_update_freq=3, kl_clip=1e-2, lr=0.05)
    kfac2.load_state_dict(saved["kfac"])
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(saved["opt"])
    for t in range(5):
        for m, k, o in ((model, kfac, opt), (model2, kfac2, opt2)):
            torch.manual_seed(100 + t)
            _kfac_training_step(m, k, o, x, y)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert kfac2.steps == 9


def test_kfac_sgd_fits_better_than_sgd_at_equal_steps():
    """Regression of a smooth 2-D function with a tanh MLP, 60 full-batch steps each. SGD (momentum 0.9)
    gets the best of three learning rates; K-FAC + plain SGD one setting: Gaussian Fisher from sampled
    targets, damping 0.01, ACKTR's KL clip 1e-3 (without a trust region, natural-gradient steps this
    lightly damped overshoot in directions the block-diagonal approximation under-weights)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 2, generator=g) * 4 - 2
    y = torch.sin(2 * x[:, :1]) * torch.cos(x[:, 1:]) + 0.5 * x[:, :1]

    def model():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))

    steps = 60
    sgd_losses = []
    for lr in (0.03, 0.1, 0.3):
        m = model()
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
        for _ in range(steps):
            opt.zero_grad()
            F.mse_loss(m(x), y).backward()
            opt.step()
        sgd_losses.append(F.mse_loss(m(x), y).item())
    m = model()
    kfac = KFAC(m, damping=0.01, inv_update_freq=5, kl_clip=1e-3, lr=0.1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    torch.manual_seed(2)
    for _ in range(steps):
        _kfac_training_step(m, kfac, opt, x, y)
    kfac_loss = F.mse_loss(m(x), y).item()
    assert kfac_loss < 0.5 * min(sgd_losses), (kfac_loss, sgd_losses)


def test_kfac_with_adam_steps():
    model = _mlp()
    kfac = KFAC(model, mode="inverse", factor_update_freq=2, inv_update_freq=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    losses = [_kfac_training_step(model, kfac, opt, x, y).item() for _ in range(30)]
    assert losses[-1] < losses[0]


# ---- Conv2d ------------------------------------------------------------------------------------


def test_conv1x1_on_one_pixel_is_a_linear_layer():
    torch.manual_seed(0)
    lin = nn.Linear(3, 4).to(D64)
    conv = nn.Conv2d(3, 4, 1).to(D64)
    with torch.no_grad():
        conv.weight.copy_(lin.weight[:, :, None, None])
        conv.bias.copy_(lin.bias)
    x, t = torch.randn(6, 3, dtype=D64), torch.randint(0, 4, (6,))
    results = []
    for layer, inp in ((lin, x), (conv, x[:, :, None, None])):
        kfac = KFAC(layer, damping=0.01)
        with kfac.capture():
            F.cross_entropy(layer(inp).reshape(6, 4), t).backward()
        kfac.step()
        results.append((kfac.layers[""].A, kfac.layers[""].G, grad_vec(layer)))
    for a, b in zip(*results):
        assert rel_err(a, b) <= 1e-12


def test_conv_factors_match_explicit_patches_and_dense_solve():
    """A 3x3 convolution with stride 2 and padding 1: A from explicitly sliced patches, G from the
    per-example output gradients summed over locations, and the eigen-mode gradient against the dense
    (G (x) A + damping I)^-1 g with the weight flattened as (out, in * kh * kw) + bias."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).to(D64)
    x = torch.randn(4, 2, 5, 5, dtype=D64)
    damping = 0.02
    kfac = KFAC(conv, damping=damping)
    with kfac.capture():
        out = conv(x)
        out.retain_grad()
        out.pow(3).mean().backward()
    g = grad_vec(conv).clone()
    kfac.step()
    n, (h, w) = x.shape[0], out.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1))
    rows = [torch.cat([padded[b, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].flatten(), torch.ones(1, dtype=D64)])
            for b in range(n) for i in range(h) for j in range(w)]
    a = torch.stack(rows)
    A = a.T @ a / a.shape[0]
    per_example = out.grad * n                                   # undo the mean over examples
    G = sum(per_example[b, :, i, j, None] * per_example[b, None, :, i, j]
            for b in range(n) for i in range(h) for j in range(w)) / n
    state = kfac.layers[""]
    assert rel_err(state.A, A) <= 1e-12 and rel_err(state.G, G) <= 1e-12
    dense = torch.linalg.solve(torch.kron(G, A) + damping * torch.eye(g.numel(), dtype=D64), g)
    assert rel_err(grad_vec(conv), dense) <= 1e-10


def test_unsupported_conv_is_a_clear_error_and_can_be_skipped():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"layer '0'.*groups=1.*skip=\['0'\]"):
        KFAC(model)
    assert list(KFAC(model, skip=["0"]).layers) == ["2"]


# ---- KL clipping and Fisher sampling -------------------------------------------------------------


def test_kl_clip_bounds_the_step():
    x, y = torch.randn(16, 4, dtype=D64), torch.randn(16, 1, dtype=D64)
    lr, kl_clip = 0.5, 1e-4
    results = {}
    for clip in (None, kl_clip):
        model = _mlp(dtype=D64)
        kfac = KFAC(model, kl_clip=clip, lr=lr)
        with kfac.capture():
            F.mse_loss(model(x), y).backward()
        raw = [p.grad.clone() for p in model.parameters()]
        kfac.step()
        results[clip] = (raw, [p.grad.clone() for p in model.parameters()])
    raw, unclipped = results[None]
    _, clipped = results[kl_clip]
    vg = sum((r * u).sum() for r, u in zip(raw, unclipped))
    nu = min(1.0, math.sqrt(kl_clip / (lr**2 * vg.item())))
    assert nu < 1.0                                               # the clip is active here
    for c, u in zip(clipped, unclipped):
        torch.testing.assert_close(c, nu * u, rtol=1e-10, atol=0)
    # The clipped step's quadratic form in the damped K-FAC Fisher, computed densely per layer, is the bound:
    # lr^2 c^T (G (x) A + damping I) c = kl_clip.
    quad = 0.0
    for layer in kfac.layers.values():
        c = torch.cat([layer.helper.module.weight.grad, layer.helper.module.bias.grad[:, None]], 1).flatten()
        dense = torch.kron(layer.G, layer.A) + kfac.damping * torch.eye(c.numel(), dtype=D64)
        quad += (c @ dense @ c).item()
    assert lr**2 * quad == pytest.approx(kl_clip, rel=1e-9)


def test_gaussian_fisher_loss_samples_the_gaussian_fisher():
    torch.manual_seed(0)
    n, std = 20000, 0.5
    mean = torch.zeros(n, 2, dtype=D64, requires_grad=True)
    gaussian_fisher_loss(mean, std).backward()
    per_example = mean.grad * n                                   # d/dmean of each example's loss
    fisher = per_example.T @ per_example / n
    torch.testing.assert_close(fisher, torch.eye(2, dtype=D64) / std**2, atol=0.15, rtol=0)


def test_policy_fisher_loss_samples_the_categorical_fisher():
    torch.manual_seed(0)
    n = 20000
    probs = torch.tensor([0.2, 0.5, 0.3], dtype=D64)
    logits = probs.log().repeat(n, 1).requires_grad_()
    policy_fisher_loss(torch.distributions.Categorical(logits=logits)).backward()
    score = logits.grad * n
    fisher = score.T @ score / n
    torch.testing.assert_close(fisher, torch.diag(probs) - torch.outer(probs, probs), atol=0.02, rtol=0)
    # a diagonal Normal's per-dimension log-probs are summed per example
    loc = torch.zeros(5, 3, requires_grad=True)
    loss = policy_fisher_loss(torch.distributions.Normal(loc, 1.0))
    assert loss.dim() == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        KFAC(_mlp(), mode="cholesky")
    with pytest.raises(ValueError, match="no trainable Linear or Conv2d"):
        KFAC(nn.ReLU())
    kfac = KFAC(m := _mlp(), kl_clip=1e-3)
    with kfac.capture():
        m(torch.randn(2, 4)).sum().backward()
    with pytest.raises(ValueError, match="learning rate"):
        kfac.step()
    with pytest.raises(ValueError, match="lacks"):
        kfac.load_state_dict({"steps": 0, "mode": "eigen", "layers": {"9": {}}})
