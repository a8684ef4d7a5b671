"""Gradient clipping: global norm, adaptive (AGC) and by value. None of them reads a value back to the
host, so they cost no device sync; the global norm is returned as a tensor for logging.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from optim._util import group_by_device_dtype, use_foreach


def _grads(parameters) -> list[torch.Tensor]:
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


@torch.no_grad()
def grad_norm(parameters: Iterable[torch.Tensor] | torch.Tensor, norm_type: float = 2.0,
              foreach: bool | None = None) -> torch.Tensor:
    """The global `norm_type` norm of all gradients, as a 0-d tensor on the first gradient's device."""
    return _total_norm(_grads(parameters), float(norm_type), foreach)


def _total_norm(grads: list[torch.Tensor], norm_type: float, foreach: bool | None) -> torch.Tensor:
    if not grads:
        return torch.tensor(0.0)
    first = grads[0].device
    # The total is accumulated in float32, or float64 where any gradient is float64.
    acc = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    per_group = []
    for _, (g_,) in group_by_device_dtype(grads).items():
        if use_foreach(foreach, g_):
            norms = torch._foreach_norm(g_, norm_type)
        else:
            norms = [torch.linalg.vector_norm(g, norm_type) for g in g_]
        per_group.append(torch.linalg.vector_norm(torch.stack(norms).to(acc), norm_type).to(first))
    return torch.linalg.vector_norm(torch.stack(per_group), norm_type)


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float, norm_type: float = 2.0,
                    foreach: bool | None = None) -> torch.Tensor:
    """Scale all gradients together so that their global `norm_type` norm is at most `max_norm`.

    Returns the norm before clipping (a 0-d tensor on the first gradient's device). The scale is
    min(1, max_norm / (norm + 1e-6)) applied unconditionally rather than behind an `if norm > max`,
    which would read the norm back to the host. A non-finite norm propagates into the gradients
    (check the returned norm, e.g. when logging, to detect it).
    """
    grads = _grads(parameters)
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    if not grads:
        return torch.tensor(0.0)
    total = _total_norm(grads, float(norm_type), foreach)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for (device, dtype), (g_,) in group_by_device_dtype(grads).items():
        c = coef.to(device=device, dtype=dtype)
        if use_foreach(foreach, g_):
            torch._foreach_mul_(g_, c)
        else:
            for g in g_:
                g.mul_(c)
    return total


def clip_or_measure_(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float,
                     measure: bool = True) -> torch.Tensor | None:
    """What a training step does with its gradient's norm: clip to `max_norm` (returning the norm
    before clipping) when it is positive; else, when `measure`, only the norm (for a log); else None.
    A tensor on the gradients' device: no host sync."""
    if max_norm > 0:
        return clip_grad_norm_(parameters, max_norm)
    return grad_norm(parameters) if measure else None


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm per output unit, in PyTorch's layout (output dimension first): a Linear weight (out, in) or a
    Conv weight (out, in, kh, kw) gets one norm per row/filter, keeping dims for broadcasting; a bias or
    other vector, or a scalar, gets a single norm (as the NFNets release does)."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(parameters: Iterable[torch.Tensor] | torch.Tensor, clipping: float = 0.01,
                        eps: float = 1e-3) -> None:
    """Adaptive gradient clipping (Brock, De, Smith & Simonyan 2021, "High-Performance Large-Scale Image
    Recognition Without Normalization", arXiv:2102.06171, section 4.1).

    Each unit's gradient G_i is rescaled to at most `clipping` times its weight's norm:
    G_i <- G_i * lambda max(||W_i||, eps) / ||G_i|| where ||G_i|| > lambda max(||W_i||, eps). eps keeps
    zero-initialized weights from freezing. The paper leaves the final classifier layer unclipped: pass
    only the parameters to clip. lambda = 0.01 suits batch 4096; smaller batches tolerate larger values.
    """
    if clipping <= 0:
        raise ValueError(f"clipping must be > 0, got {clipping}")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p).clamp_(min=eps).mul_(clipping)
        grad_norm = unitwise_norm(p.grad)
        scale = torch.where(grad_norm > max_norm, max_norm / grad_norm.clamp(min=1e-6), 1.0)
        p.grad.mul_(scale.to(p.grad.dtype))


@torch.no_grad()
def clip_grad_value_(parameters: Iterable[torch.Tensor] | torch.Tensor, clip_value: float,
                     foreach: bool | None = None) -> None:
    """Clamp every gradient element to [-clip_value, clip_value]."""
    if clip_value < 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value}")
    grads = _grads(parameters)
    for _, (g_,) in group_by_device_dtype(grads).items():
        if use_foreach(foreach, g_):
            torch._foreach_clamp_min_(g_, -clip_value)
            torch._foreach_clamp_max_(g_, clip_value)
        else:
            for g in g_:
                g.clamp_(-clip_value, clip_value)


__all__ = ["clip_grad_norm_", "clip_or_measure_", "adaptive_clip_grad_", "clip_grad_value_", "unitwise_norm"]
