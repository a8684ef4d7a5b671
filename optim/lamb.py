"""LAMB: Adam moments with a per-tensor trust ratio (You et al. 2019, "Large Batch Optimization for
Deep Learning: Training BERT in 76 Minutes", arXiv:1904.00962, Algorithm 2).

For each parameter tensor w ("layer" in the paper) with gradient g, at step t:

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    r = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    u = r + wd w                                 (decoupled weight decay, inside the ratio)
    w <- w - lr * phi(||w||) / ||u|| * u         (trust ratio 1 where ||w|| or ||u|| is 0)

phi is the identity unless `clamp=(lo, hi)` bounds ||w|| (the paper's phi(z) = min(max(z, lo), hi);
NVIDIA's and other reference implementations clamp at 10). A group with `trust_ratio=False` takes the
plain AdamW step (u itself), the usual treatment of biases and normalization gains.

The ratio is computed on the device with `torch.where`, never read back: no host-device sync.
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from optim._util import group_by_device_dtype, new_step, use_foreach


class LAMB(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        clamp: tuple[float, float] | None = None,
        bias_correction: bool = True,
        trust_ratio: bool = True,
        foreach: bool | None = None,
    ):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if clamp is not None:
            clamp = (float(clamp[0]), float(clamp[1]))
            if not 0.0 <= clamp[0] <= clamp[1]:
                raise ValueError(f"Invalid clamp: {clamp} (need 0 <= lo <= hi)")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, clamp=clamp,
                        bias_correction=bias_correction, trust_ratio=trust_ratio, foreach=foreach)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("clamp", None)
            group.setdefault("bias_correction", True)
            group.setdefault("trust_ratio", True)
            group.setdefault("foreach", None)

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, steps):
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("LAMB does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = new_step()
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            # The step lives on the CPU (see new_step), so this read is not a device sync.
            steps.append(float(state["step"]))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, steps)
            if not params:
                continue
            fn = _multi_tensor if use_foreach(group["foreach"], params) else _single_tensor
            beta1, beta2 = group["betas"]
            fn(params, grads, exp_avgs, exp_avg_sqs, steps, lr=group["lr"], beta1=beta1, beta2=beta2,
               eps=group["eps"], weight_decay=group["weight_decay"], clamp=group["clamp"],
               bias_correction=group["bias_correction"], trust_ratio=group["trust_ratio"])
        return loss


def _ratio(w_norm, u_norm, clamp, fallback):
    """phi(||w||) / ||u||, or `fallback` where either norm is 0 (an all-zero layer, or no update)."""
    phi = w_norm if clamp is None else w_norm.clamp(clamp[0], clamp[1])
    return torch.where((w_norm > 0) & (u_norm > 0), phi / u_norm, fallback)


def _single_tensor(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                   clamp, bias_correction, trust_ratio):
    """The reference path: the paper's update written out per tensor."""
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1 = 1 - beta1**t if bias_correction else 1.0
        bc2 = 1 - beta2**t if bias_correction else 1.0
        update = (m / bc1).div_((v / bc2).sqrt_().add_(eps))
        if weight_decay != 0:
            update.add_(p, alpha=weight_decay)
        if trust_ratio:
            update.mul_(_ratio(p.norm(), update.norm(), clamp, 1.0))
        p.add_(update, alpha=-lr)


def _multi_tensor(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                  clamp, bias_correction, trust_ratio):
    """The fused path. Same numbers as `_single_tensor` up to rounding, in fewer passes over memory.

    With c = sqrt(bc2) / bc1, r = m_hat / (sqrt(v_hat) + eps) = c * m / (sqrt(v) + eps sqrt(bc2)), so
    the bias corrections become per-tensor scalars: x = m / (sqrt(v) + eps sqrt(bc2)) + (wd / c) w and
    u = c x. The trust ratio is scale-free in u, so phi(||w||)/||u|| * u = phi(||w||)/||x|| * x and
    c only survives where the ratio falls back to 1 (u = c x).
    """
    for (device, _), (p_, g_, m_, v_, t_) in group_by_device_dtype(
            params, grads, exp_avgs, exp_avg_sqs, steps).items():
        torch._foreach_lerp_(m_, g_, 1 - beta1)
        torch._foreach_mul_(v_, beta2)
        torch._foreach_addcmul_(v_, g_, g_, value=1 - beta2)
        if bias_correction:
            bc1 = [1 - beta1**t for t in t_]
            bc2_sqrt = [math.sqrt(1 - beta2**t) for t in t_]
        else:
            bc1 = [1.0] * len(t_)
            bc2_sqrt = [1.0] * len(t_)
        c = [b2 / b1 for b1, b2 in zip(bc1, bc2_sqrt)]
        # x = m / (sqrt(v) + eps sqrt(bc2)), built in the one buffer that sqrt allocates: on CPU a fresh
        # buffer costs page faults comparable to a whole pass, so we allocate no second one.
        x = torch._foreach_sqrt(v_)
        torch._foreach_add_(x, [eps * b for b in bc2_sqrt])
        torch._foreach_reciprocal_(x)
        torch._foreach_mul_(x, m_)
        if weight_decay != 0:
            if len(set(c)) == 1:            # the usual case: every tensor at the same step
                torch._foreach_add_(x, p_, alpha=weight_decay / c[0])
            else:
                torch._foreach_add_(x, torch._foreach_mul(p_, [weight_decay / ci for ci in c]))
        if trust_ratio:
            w_norms = torch.stack(torch._foreach_norm(p_))
            x_norms = torch.stack(torch._foreach_norm(x))
            scale = _ratio(w_norms, x_norms, clamp, torch.tensor(c, dtype=w_norms.dtype, device=device))
            # p += (-lr * scale_i) * x_i with the per-tensor scales as 0-d device tensors: one pass, no sync.
            torch._foreach_addcmul_(p_, x, list((scale * -lr).unbind()))
        else:
            torch._foreach_mul_(x, [-lr * ci for ci in c])
            torch._foreach_add_(p_, x)


__all__ = ["LAMB"]
