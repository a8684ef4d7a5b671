"""SWATS: Adam first, then SGD with momentum at a learning rate that Adam's own steps estimate
(Keskar & Socher 2017, "Improving Generalization Performance by Switching from Adam to SGD",
arXiv:1712.07628, Algorithm 1).

Per parameter tensor, at step k with g the gradient (plus the L2 term weight_decay * w):

    Adam phase:  m <- b1 m + (1 - b1) g,   a <- b2 a + (1 - b2) g^2
                 p = -lr sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(a) + eps),   w <- w + p
                 if p.g != 0:  gamma = (p.p) / (-p.g),   lam <- b2 lam + (1 - b2) gamma
                 switch when k > 1, lam / (1 - b2^k) > 0 and |lam / (1 - b2^k) - gamma| < eps;
                 SGD's lr is then lam / (1 - b2^k)
    SGD phase:   v <- b1 v + g,   w <- w - (1 - b1) sgd_lr v

gamma is the step size along -g whose SGD step would project onto Adam's step p; lam is its bias-
corrected running mean, and the switch happens once that mean has settled. `switch_step=N` switches at
step N instead (after its Adam step, at the estimate then), the `sgd@N` form of a fixed schedule.
Either way a tensor switches only while its estimate is positive: gamma is negative whenever Adam's
step p climbs the current gradient (p.g > 0, as momentum or a preconditioner upstream makes it do),
and a negative rate would make SGD ascend the loss for the rest of training. The paper's Algorithm 1
does not write the condition; the public implementations (Mrpatekful/swats, torch-optimizer,
pytorch-optimizer) all check `corrected_exp_avg > 0`, and a fixed switch waits, step by step after N,
for its tensor's estimate to turn positive.
A learning-rate schedule scales the SGD phase's rate by the lr's ratio to its value at the switch, as
the paper decays both phases' rates at the same epochs. The
paper estimates one rate for the whole network or per layer; here each tensor gets its own, as with
per-layer estimates. The automatic criterion reads one number per tensor per step from the device; a
fixed `switch_step` reads one per tensor from step N until that tensor switches (N alone, as a rule).
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from optim._util import new_step


class SWATS(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-9,
                 weight_decay: float = 0.0, switch_step: int | None = None):
        if lr <= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if switch_step is not None and switch_step < 1:
            raise ValueError(f"Invalid switch_step, need >= 1 or None (the paper's criterion): {switch_step}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, switch_step=switch_step)
        super().__init__(params, defaults)

    def switched(self) -> list[bool]:
        """Per tensor with state: whether it has switched to SGD."""
        return [bool(s.get("sgd", False)) for s in self.state.values()]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SWATS does not support sparse gradients")
                g = p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = new_step()
                    state["sgd"] = False
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["lam"] = torch.zeros((), dtype=p.dtype, device=p.device)
                    state["sgd_lr"] = torch.zeros((), dtype=p.dtype, device=p.device)
                state["step"] += 1
                k = float(state["step"])
                if state["sgd"]:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(beta1).add_(g)
                    # a schedule moves SGD's rate as it moved Adam's: by the lr's ratio to its value at the switch
                    at_switch = state.get("switch_lr", group["lr"])
                    scale = group["lr"] / at_switch if at_switch else 1.0
                    p.add_(buf * state["sgd_lr"], alpha=-(1 - beta1) * scale)
                    continue
                m, a = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)
                a.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                step = m / (a.sqrt() + group["eps"]) * (-group["lr"] * math.sqrt(1 - beta2**k) / (1 - beta1**k))
                p.add_(step)
                pg = torch.dot(step.flatten(), g.flatten())
                moves = pg != 0
                gamma = torch.where(moves, torch.dot(step.flatten(), step.flatten()) / torch.where(moves, -pg, 1.0),
                                    0.0)
                state["lam"] = torch.where(moves, beta2 * state["lam"] + (1 - beta2) * gamma, state["lam"])
                estimate = state["lam"] / (1 - beta2**k)
                if group["switch_step"] is not None:  # from step N on, the first positive estimate
                    switch = k >= group["switch_step"] and bool(estimate > 0)
                else:  # the paper's criterion, at a positive rate: one read from the device
                    switch = k > 1 and bool(moves & (estimate > 0) & ((estimate - gamma).abs() < group["eps"]))
                if switch:
                    state["sgd"] = True
                    state["sgd_lr"] = estimate.clone()
                    state["switch_lr"] = group["lr"]
        return loss


__all__ = ["SWATS"]
