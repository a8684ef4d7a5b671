"""AdaBound: Adam whose per-coordinate step size is clipped into bounds that close in on one SGD learning
rate over training, so that it starts adaptive and ends like SGD (Luo et al. 2019, "Adaptive Gradient
Methods with Dynamic Bound of Learning Rate", ICLR, arXiv:1902.09843).

As the authors' release computes it (Luolc/AdaBound, `adabound.py`), at step t of a group with initial
learning rate lr0 and current lr:

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2                    (AMSBound: v_max <- max(v_max, v), used below)
    final = final_lr * lr / lr0                 (a schedule that scales lr scales the bounds too)
    lower = final * (1 - 1 / (gamma t + 1)),   upper = final * (1 + 1 / (gamma t))
    w <- w - clip(lr sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps), lower, upper) * m

The paper's Algorithm 2 divides the clipped step by sqrt(t) and has no bias corrections; the release,
which its experiments ran, does not divide and corrects the bias, and that is what this follows.
Weight decay is the release's L2 term added to the gradient.
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from optim._util import new_step


class AdaBound(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), final_lr: float = 0.1,
                 gamma: float = 1e-3, eps: float = 1e-8, weight_decay: float = 0.0, amsbound: bool = False):
        if lr <= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if final_lr <= 0.0:
            raise ValueError(f"Invalid final learning rate: {final_lr}")
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"Invalid gamma (the bounds' convergence speed), need 0 < gamma < 1: {gamma}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), final_lr=final_lr, gamma=gamma, eps=eps,
                        weight_decay=weight_decay, amsbound=amsbound)
        super().__init__(params, defaults)
        for group in self.param_groups:
            # lr0 in the group, so that state_dict carries it and a resumed run's bounds stay put
            group.setdefault("initial_lr_adabound", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            final = group["final_lr"] * group["lr"] / group["initial_lr_adabound"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdaBound does not support sparse gradients")
                g = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = new_step()
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsbound"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])  # a CPU tensor: no device sync
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if group["amsbound"]:
                    torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                lower = final * (1 - 1 / (group["gamma"] * t + 1))
                upper = final * (1 + 1 / (group["gamma"] * t))
                rate = v.sqrt().add_(group["eps"]).reciprocal_().mul_(step_size).clamp_(lower, upper)
                p.addcmul_(rate, m, value=-1)
        return loss


__all__ = ["AdaBound"]
