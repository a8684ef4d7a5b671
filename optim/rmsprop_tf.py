"""RMSprop as DeepMind's DQN used it (Mnih et al. 2015; Graves 2013, eq. 38-40).

    v <- alpha * v + (1 - alpha) * g^2
    m <- alpha * m + (1 - alpha) * g            (centered only)
    w <- w - lr * g / sqrt(v - m^2 + eps)       (eps inside the square root)

torch.optim.RMSprop adds eps outside the root (g / (sqrt(v - m^2) + eps)), which with DQN's
eps = 0.01 is a much larger step for small gradients: a different optimizer.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer

from optim._util import group_by_device_dtype, new_step, use_foreach


class RMSpropTF(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 2.5e-4,
        alpha: float = 0.95,
        eps: float = 0.01,
        centered: bool = True,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"Invalid alpha: {alpha}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, alpha=alpha, eps=eps, centered=centered, momentum=momentum,
                        weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    def _init_group(self, group, params, grads, square_avgs, grad_avgs, bufs):
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("RMSpropTF does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = new_step()
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["centered"]:
                    state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["momentum"] > 0:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            square_avgs.append(state["square_avg"])
            grad_avgs.append(state.get("grad_avg"))  # None where not centered: lists stay parallel
            bufs.append(state.get("momentum_buffer"))
            state["step"] += 1

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, square_avgs, grad_avgs, bufs = [], [], [], [], []
            self._init_group(group, params, grads, square_avgs, grad_avgs, bufs)
            if not params:
                continue
            hparams = dict(lr=group["lr"], alpha=group["alpha"], eps=group["eps"], centered=group["centered"],
                           momentum=group["momentum"], weight_decay=group["weight_decay"])
            if use_foreach(group["foreach"], params):
                # A fused list needs one device and dtype.
                for lists in group_by_device_dtype(params, grads, square_avgs, grad_avgs, bufs).values():
                    _multi_tensor(*lists, **hparams)
            else:
                _single_tensor(params, grads, square_avgs, grad_avgs, bufs, **hparams)
        return loss


def _single_tensor(params, grads, square_avgs, grad_avgs, bufs, *, lr, alpha, eps, centered, momentum,
                   weight_decay):
    for i, (p, g, v) in enumerate(zip(params, grads, square_avgs)):
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        v.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        if centered:
            m = grad_avgs[i]
            m.mul_(alpha).add_(g, alpha=1 - alpha)
            denom = v.addcmul(m, m, value=-1).add_(eps).sqrt_()
        else:
            denom = v.add(eps).sqrt_()
        if momentum > 0:
            buf = bufs[i]
            buf.mul_(momentum).addcdiv_(g, denom)
            p.add_(buf, alpha=-lr)
        else:
            p.addcdiv_(g, denom, value=-lr)


def _multi_tensor(params, grads, square_avgs, grad_avgs, bufs, *, lr, alpha, eps, centered, momentum,
                  weight_decay):
    grads = list(grads)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
    if centered:
        torch._foreach_mul_(grad_avgs, alpha)
        torch._foreach_add_(grad_avgs, grads, alpha=1 - alpha)
        denom = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
        torch._foreach_add_(denom, eps)
    else:
        denom = torch._foreach_add(square_avgs, eps)
    torch._foreach_sqrt_(denom)
    if momentum > 0:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_addcdiv_(bufs, grads, denom)
        torch._foreach_add_(params, bufs, alpha=-lr)
    else:
        torch._foreach_addcdiv_(params, grads, denom, value=-lr)


__all__ = ["RMSpropTF"]
