"""--compile: torch.compile of a trainer's tensor functions, its loss (the networks' forward and, through
AOTAutograd, their backward, with the loss's elementwise ops fused) and its acting forward.

The optimizer's step stays eager: this toolkit's optimizers (DeepMind's RMSprop, K-FAC's combinations,
SharedAdam) are Python code over per-parameter state, and torch's own Adam already runs fused kernels.
Compilation costs tens of seconds at the first update and after a shape changes (one more graph for the
last, smaller batch of a loop, for instance); where it pays is measured by each trainer's bench
(`bench/*_speed.py --compile`): on a 2-core CPU the compiled updates of the CNN agents run faster once
compiled (PPO's 8% in-process, Rainbow's 12% within 3,000 steps), SAC's small MLPs slower, and the
compilation itself costs 20-25 s per command (README's Figures), which is why it is off by default.
Gradients and updates agree with eager ones to float tolerance (tests/test_compile.py), not bit for bit:
fused kernels sum in another order.

Depends on torch and common (errors, device).
"""
from __future__ import annotations

import os
import shutil
from typing import Callable, TypeVar

import torch

from common.errors import fail

F = TypeVar("F", bound=Callable)


def compiled(fn: F, enabled: bool) -> F:
    """`fn` compiled when `enabled`, else `fn` itself. Shapes start static (the batch size of an update
    does not change) and a second shape makes dynamo mark the dimension dynamic instead of compiling
    one graph per size."""
    return torch.compile(fn) if enabled else fn


def check_compile(cfg) -> None:
    """Refuse, before anything is built, a --compile that cannot run here: inductor writes C++ for the CPU
    (a compiler on PATH, $CXX or g++) and Triton kernels for a GPU (the triton package)."""
    from common.device import pick

    if not getattr(cfg, "compile", False) or cfg.eval:
        return
    device = pick(cfg.device)
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            fail("--compile on a GPU needs the triton package (pip install triton), or leave --compile off")
    elif device.type == "cpu":
        compiler = os.environ.get("CXX") or "g++"
        if not any(shutil.which(c) for c in (compiler, "c++", "clang++")):
            fail(f"--compile on the CPU needs a C++ compiler ({compiler} is not on PATH), or leave --compile off")
    else:
        fail(f"--compile: not supported on {device.type}; leave it off")
