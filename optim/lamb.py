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

from optim._util import blocks, group_by_device_dtype, new_step, to_device, use_foreach


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

    With c = sqrt(bc2) / bc1, r = m_hat / (sqrt(v_hat) + eps) = c * m / d with d = sqrt(v) + eps sqrt(bc2),
    so the bias corrections become per-tensor scalars, and u = r + wd w = c x with x = m / d + (wd / c) w.
    The trust ratio is scale-free in u, so phi(||w||)/||u|| * u = phi(||w||)/||y|| * y for any positive
    multiple y of u; the scale only matters where the ratio falls back to 1 (then the step is u itself).
    With weight decay we take y = (c / wd) x = w + (c / wd) m / d: one addcdiv straight from d, where x
    needs a division and then an add (u = wd y).

    Passes over parameter-sized memory (a read or a write of one tensor each), with Adam's for
    comparison: moments 8 (Adam 8), d 4 (Adam 6), y 4, the two norms 2, the update 3 (Adam's addcdiv 4):
    21 against Adam's 18 (the first version took 25). On CPU everything but the update runs block by
    block (see `_CPU_BLOCK`), so that most of those passes hit the cache: from memory, the blocks read
    w, g, m, v and write m, v, y once each, and the update reads w, y and writes w, 10 passes in all.
    Temporaries: y, parameter-sized, and one block's d.
    """
    for (device, dtype), (p_, g_, m_, v_, t_) in group_by_device_dtype(
            params, grads, exp_avgs, exp_avg_sqs, steps).items():
        if bias_correction:
            bc1 = [1 - beta1**t for t in t_]
            bc2_sqrt = [math.sqrt(1 - beta2**t) for t in t_]
        else:
            bc1 = [1.0] * len(t_)
            bc2_sqrt = [1.0] * len(t_)
        c = [b2 / b1 for b1, b2 in zip(bc1, bc2_sqrt)]
        fold = weight_decay != 0 and max(c) / weight_decay <= _FOLD_LIMIT * torch.finfo(dtype).max
        block = _CPU_BLOCK if device.type == "cpu" else _DEVICE_BLOCK
        # per slice (of a block): the index of its tensor, its w and y, and their norms
        owners, ws, ys, w_norms, y_norms = [], [], [], [], []
        for idx, (p, g, m, v) in blocks([p_, g_, m_, v_], block):
            torch._foreach_lerp_(m, g, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, g, g, value=1 - beta2)
            d = torch._foreach_sqrt(v)
            torch._foreach_add_(d, [eps * bc2_sqrt[i] for i in idx])
            if fold:
                y = torch._foreach_addcdiv(p, m, d, [c[i] / weight_decay for i in idx])
            else:
                # No weight decay, or c / wd near the dtype's range (float16): x itself, as in the docstring.
                y = torch._foreach_div(m, d)
                if weight_decay != 0:
                    torch._foreach_add_(y, torch._foreach_mul(p, [weight_decay / c[i] for i in idx]))
            del d  # freed here, so that the next block's d reuses this memory while it is still in cache
            owners += idx
            ws += p
            ys += y
            if trust_ratio:
                w_norms += torch._foreach_norm(p)
                y_norms += torch._foreach_norm(y)
        u_per_y = to_device([weight_decay] * len(c) if fold else c, dtype, device)
        if trust_ratio:
            w_norm, y_norm = _combine(w_norms, owners, len(p_)), _combine(y_norms, owners, len(p_))
            scale = (_ratio(w_norm, y_norm, clamp, u_per_y) * -lr).to(dtype)
        else:
            scale = u_per_y * -lr
        if len(owners) > len(p_):  # tensors cut into slices: each slice takes its tensor's scale
            scale = scale[to_device(owners, torch.int64, device)]
        # w += scale * y with the scales as 0-d device tensors: one pass, no sync.
        torch._foreach_addcmul_(ws, ys, list(scale.unbind()))


def _combine(part_norms: list[torch.Tensor], owners: list[int], n: int) -> torch.Tensor:
    """Norms of n whole tensors from the norms of their slices (owners[j]: whose slice j is), as one
    1-D tensor, in at least float32: a float16 norm squared could overflow."""
    parts = torch.stack(part_norms)
    if len(owners) == n:  # every tensor in one piece
        return parts
    parts = parts.to(torch.promote_types(parts.dtype, torch.float32))
    index = to_device(owners, torch.int64, parts.device)
    return parts.new_zeros(n).index_add_(0, index, parts.square()).sqrt_()


# y = w + (c / wd) m / d is built only while c / wd stays this far below the dtype's largest value, so
# that y itself (|m / d| is at most about 1 / sqrt(1 - beta2)) cannot overflow: always for float32,
# bfloat16 and float64 at any sane weight decay, never for float16.
_FOLD_LIMIT = 1e-10

# The fused path runs block by block, ~this many elements per block across the parameters (large
# tensors cut into slices): every op over one block before the next. On CPU a block's operands (w, g, m,
# v, d, y: 6 x 512 KB in float32) mostly stay in cache. bench/optim_step.py, 10M parameters, 1 thread:
# 1.07-1.18x Adam per step, where the same ops over whole tensors took 1.22-1.26x; smaller blocks lose
# it to per-op overhead (1.30x at 32K, 1.56x at 16K). On accelerators a block only bounds d's memory.
_CPU_BLOCK = 1 << 17
_DEVICE_BLOCK = 1 << 26


__all__ = ["LAMB"]
