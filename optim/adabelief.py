"""AdaBelief: Adam whose second moment tracks the gradient's deviation from its own EMA, the "belief"
(Zhuang et al. 2020, "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
NeurIPS, arXiv:2010.07468, Algorithm 2).

    m <- b1 m + (1 - b1) g
    s <- b2 s + (1 - b2) (g - m)^2 + eps        (uses the new m; eps is part of the state)
    w <- w - lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)

Weight decay is decoupled (w <- w (1 - lr wd), as AdamW and the authors' release) by default, or an L2
term added to g with `decoupled=False`.

`rectify=True` applies RAdam's variance rectification (Liu et al. 2019, arXiv:1908.03265), as the
authors' release offers: with rho_inf = 2 / (1 - b2) - 1 and rho_t = rho_inf - 2 t b2^t / (1 - b2^t),
the adaptive step is scaled by r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2)
rho_t)) while rho_t > 5, and for the first few steps, where the variance of the adaptive rate is not
yet tractable, the update is SGD with momentum: w <- w - lr * m / (1 - b1^t), or, with
`degenerated_to_sgd=False` (the authors' option), no update at all. (The threshold 5 is
torch.optim.RAdam's; the paper states 4.) Large raw gradients make those momentum steps large: on such
problems, skip them or use a small lr.

The authors recommend a much smaller eps than Adam's (1e-16 rather than 1e-8) because eps enters s
itself, so it plays the part of eps^2 in Adam.
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from optim._util import group_by_device_dtype, new_step, use_foreach


class AdaBelief(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        weight_decay: float = 0.0,
        decoupled: bool = True,
        rectify: bool = False,
        degenerated_to_sgd: bool = True,
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
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, decoupled=decoupled,
                        rectify=rectify, degenerated_to_sgd=degenerated_to_sgd, foreach=foreach)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("decoupled", True)
            group.setdefault("rectify", False)
            group.setdefault("degenerated_to_sgd", True)
            group.setdefault("foreach", None)

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_vars, steps):
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdaBelief does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = new_step()
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_vars.append(state["exp_avg_var"])
            steps.append(float(state["step"]))  # a CPU tensor: no device sync

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_vars, steps = [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_vars, steps)
            if not params:
                continue
            fn = _multi_tensor if use_foreach(group["foreach"], params) else _single_tensor
            beta1, beta2 = group["betas"]
            fn(params, grads, exp_avgs, exp_avg_vars, steps, lr=group["lr"], beta1=beta1, beta2=beta2,
               eps=group["eps"], weight_decay=group["weight_decay"], decoupled=group["decoupled"],
               rectify=group["rectify"], degenerated_to_sgd=group["degenerated_to_sgd"])
        return loss


def rectification(step: float, beta2: float) -> float | None:
    """RAdam's r_t for step t, or None while rho_t <= 5 (take the un-adapted momentum step)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2**step / (1.0 - beta2**step)
    if rho_t <= 5.0:
        return None
    return math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))


def _single_tensor(params, grads, exp_avgs, exp_avg_vars, steps, *, lr, beta1, beta2, eps, weight_decay,
                   decoupled, rectify, degenerated_to_sgd):
    """The reference path: the paper's update written out per tensor."""
    for p, g, m, s, t in zip(params, grads, exp_avgs, exp_avg_vars, steps):
        if weight_decay != 0:
            if decoupled:
                p.mul_(1 - lr * weight_decay)
            else:
                g = g.add(p, alpha=weight_decay)
        m.lerp_(g, 1 - beta1)
        residual = g - m
        s.mul_(beta2).addcmul_(residual, residual, value=1 - beta2).add_(eps)
        bc1 = 1 - beta1**t
        bc2 = 1 - beta2**t
        r = rectification(t, beta2) if rectify else 1.0
        if r is None:
            if degenerated_to_sgd:
                p.add_(m, alpha=-lr / bc1)
        else:
            p.addcdiv_(m, (s / bc2).sqrt_().add_(eps), value=-lr * r / bc1)


def _multi_tensor(params, grads, exp_avgs, exp_avg_vars, steps, *, lr, beta1, beta2, eps, weight_decay,
                  decoupled, rectify, degenerated_to_sgd):
    """The fused path, rearranged to need fewer passes over memory (same numbers up to rounding):

    - With the old m, r = g - m_old gives both updates: m_new = m_old + (1 - b1) r, and the belief
      residual g - m_new = b1 r, so s <- b2 s + (1 - b2) b1^2 r^2 + eps.
    - The bias correction of s is folded into scalars, as in LAMB's:
      m_hat / (sqrt(s_hat) + eps) = (sqrt(bc2) / bc1) * m / (sqrt(s) + eps sqrt(bc2)).
    """
    for _, (p_, g_, m_, s_, t_) in group_by_device_dtype(params, grads, exp_avgs, exp_avg_vars, steps).items():
        if weight_decay != 0:
            if decoupled:
                torch._foreach_mul_(p_, 1 - lr * weight_decay)
            else:
                g_ = torch._foreach_add(g_, p_, alpha=weight_decay)
        residual = torch._foreach_sub(g_, m_)
        torch._foreach_add_(m_, residual, alpha=1 - beta1)
        torch._foreach_mul_(s_, beta2)
        torch._foreach_addcmul_(s_, residual, residual, value=(1 - beta2) * beta1 * beta1)
        torch._foreach_add_(s_, eps)
        del residual

        rs = [rectification(t, beta2) if rectify else 1.0 for t in t_]
        adaptive = [i for i, r in enumerate(rs) if r is not None]
        momentum_only = [i for i, r in enumerate(rs) if r is None]
        if momentum_only and degenerated_to_sgd:  # rectify's first steps: SGD with momentum
            torch._foreach_add_([p_[i] for i in momentum_only],
                                torch._foreach_mul([m_[i] for i in momentum_only],
                                                   [-lr / (1 - beta1**t_[i]) for i in momentum_only]))
        if not adaptive:
            continue
        if len(adaptive) < len(p_):
            p_, m_, s_, t_, rs = ([seq[i] for i in adaptive] for seq in (p_, m_, s_, t_, rs))
        bc2_sqrt = [math.sqrt(1 - beta2**t) for t in t_]
        denom = torch._foreach_sqrt(s_)
        torch._foreach_add_(denom, [eps * b for b in bc2_sqrt])
        torch._foreach_addcdiv_(p_, m_, denom, [-lr * r * b / (1 - beta1**t) for r, b, t in zip(rs, bc2_sqrt, t_)])


__all__ = ["AdaBelief", "rectification"]
