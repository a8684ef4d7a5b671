"""Gradient clipping: global norm (against a direct float64 computation and torch.nn.utils), AGC
(against a per-unit loop transcription of Brock et al. 2021), value clipping."""
from __future__ import annotations

import math

import pytest
import torch

import optim
from optim.clip import adaptive_clip_grad_, clip_grad_norm_, clip_grad_value_, unitwise_norm


def _params(dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (4,), (2, 3, 3, 3), (2,), (5, 5)]
    ps = [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]
    for p in ps:
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=dtype)
    ps.append(torch.ones(3, dtype=dtype, requires_grad=True))   # no grad: skipped
    return ps


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_direct_computation(foreach, norm_type, max_norm):
    ps = _params()
    before = [p.grad.clone() for p in ps if p.grad is not None]
    flat = torch.cat([g.flatten() for g in before])
    expected_norm = torch.linalg.vector_norm(flat, norm_type)
    norm = clip_grad_norm_(ps, max_norm, norm_type=norm_type, foreach=foreach)
    assert isinstance(norm, torch.Tensor) and norm.dim() == 0
    torch.testing.assert_close(norm, expected_norm, rtol=1e-12, atol=0)
    coef = min(1.0, max_norm / (expected_norm.item() + 1e-6))
    for g0, p in zip(before, ps):
        torch.testing.assert_close(p.grad, g0 * coef, rtol=1e-12, atol=0)
    if max_norm < expected_norm:
        after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ps if p.grad is not None]), norm_type)
        assert after.item() == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_agrees_with_torch_in_float32():
    ours, theirs = _params(torch.float32, scale=10.0), _params(torch.float32, scale=10.0)
    n1 = clip_grad_norm_(ours, 1.0)
    n2 = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    torch.testing.assert_close(n1, n2)
    for a, b in zip(ours, theirs):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad)


def test_clip_grad_norm_without_grads_and_bad_args():
    assert clip_grad_norm_([torch.zeros(2, requires_grad=True)], 1.0).item() == 0.0
    with pytest.raises(ValueError):
        clip_grad_norm_(_params(), -1.0)


def _agc_reference(w: torch.Tensor, g: torch.Tensor, clipping: float, eps: float) -> torch.Tensor:
    """Section 4.1 of the NFNets paper, one unit (row / filter; a vector is one unit) at a time."""
    w64, g64 = w.double(), g.double().clone()
    units = [(slice(None),)] if w.dim() <= 1 else [(i,) for i in range(w.shape[0])]
    for u in units:
        w_norm = max(math.sqrt(float((w64[u] ** 2).sum())), eps)
        g_norm = math.sqrt(float((g64[u] ** 2).sum()))
        if g_norm > clipping * w_norm:
            g64[u] = g64[u] * (clipping * w_norm / g_norm)
    return g64


@pytest.mark.parametrize("clipping", [0.01, 0.5])
def test_adaptive_clipping_matches_per_unit_reference(clipping):
    ps = _params()
    ps[1].data.zero_()                      # a zero weight: eps keeps it trainable
    expected = [_agc_reference(p.detach(), p.grad, clipping, 1e-3) for p in ps if p.grad is not None]
    adaptive_clip_grad_(ps, clipping=clipping, eps=1e-3)
    for e, p in zip(expected, ps):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-15)
    # with clipping = 0.01 every unit of these random tensors is clipped; with 0.5 only some are
    clipped = [not torch.equal(e, g0.grad) for e, g0 in zip(expected, _params()) if g0.grad is not None]
    assert any(clipped)


def test_unitwise_norm_shapes():
    assert unitwise_norm(torch.ones(4, 3)).shape == (4, 1)
    assert unitwise_norm(torch.ones(2, 3, 3, 3)).shape == (2, 1, 1, 1)
    assert unitwise_norm(torch.ones(5)).shape == ()
    assert unitwise_norm(torch.ones(2, 3, 3, 3))[0].item() == pytest.approx(math.sqrt(27))


@pytest.mark.parametrize("foreach", [False, True])
def test_clip_grad_value(foreach):
    ps = _params(scale=3.0)
    expected = [p.grad.clamp(-0.7, 0.7) for p in ps if p.grad is not None]
    assert any((p.grad.abs() > 0.7).any() for p in ps if p.grad is not None)
    clip_grad_value_(ps, 0.7, foreach=foreach)
    for e, p in zip(expected, ps):
        assert torch.equal(p.grad, e)


def test_grad_norm_matches_the_clip_norm_and_leaves_gradients_alone():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    for p in params:
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in params]
    norm = optim.clip.grad_norm(params)
    expected = torch.cat([g.flatten() for g in before]).norm()
    torch.testing.assert_close(norm, expected)
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before))
    torch.testing.assert_close(optim.clip.clip_grad_norm_(params, 1e9), expected)


def test_clip_or_measure_clips_measures_or_leaves_alone():
    """Clipping on: torch's clip_grad_norm_ (norm before clipping, gradients scaled); off: the norm
    only when asked, gradients untouched; neither: None."""
    import torch

    from optim.clip import clip_or_measure_

    def params():
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
        for p in ps:
            p.grad = torch.randn_like(p) * 10
        return ps

    ours, ref = params(), params()
    norm = clip_or_measure_(ours, 1.0)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, 1.0)
    assert torch.allclose(norm, ref_norm)
    assert all(torch.allclose(a.grad, b.grad) for a, b in zip(ours, ref))
    untouched = params()
    before = [p.grad.clone() for p in untouched]
    assert torch.allclose(clip_or_measure_(untouched, 0.0), ref_norm)
    assert all(torch.equal(p.grad, g) for p, g in zip(untouched, before))
    assert clip_or_measure_(untouched, 0.0, measure=False) is None
