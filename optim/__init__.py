"""Optimizers that torch.optim lacks, in its conventions, and a registry of all of them by name.

    import optim
    opt = optim.build("rmsproptf", model.parameters(), lr=2.5e-4)
    opt = optim.build("lookahead", model.parameters(), base="sgd", k=5, alpha=0.5, lr=0.1, momentum=0.9)

Also here: the K-FAC preconditioner (`optim.KFAC`, which rewrites gradients for any optimizer),
gradient clipping (`optim.clip`) and learning-rate schedules (`optim.schedules`).

Depends on torch only.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from optim import clip, schedules
from optim.adabelief import AdaBelief
from optim.adabound import AdaBound
from optim.kfac import KFAC
from optim.lamb import LAMB
from optim.lookahead import Lookahead
from optim.rmsprop_tf import RMSpropTF
from optim.shared_adam import SharedAdam
from optim.swats import SWATS

# Every torch.optim optimizer by lower-case name, then ours (below); a name here is what `--optimizer`
# and `--g-optimizer`/`--d-optimizer` accept. K-FAC is a preconditioner, not an optimizer: see KFAC.
REGISTRY: dict[str, Callable[..., torch.optim.Optimizer]] = {
    name.lower(): cls
    for name, cls in vars(torch.optim).items()
    if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
}
REGISTRY["rmsproptf"] = RMSpropTF
REGISTRY["lamb"] = LAMB
REGISTRY["adabelief"] = AdaBelief
REGISTRY["lookahead"] = Lookahead
REGISTRY["sharedadam"] = SharedAdam
REGISTRY["adabound"] = AdaBound
REGISTRY["swats"] = SWATS


# Optimizers that a training loop of `loss.backward(); optimizer.step()` cannot drive: trainers
# refuse them at start rather than fail at their first step.
NOT_DRIVABLE = {
    "lbfgs": "L-BFGS needs a closure that re-evaluates the loss at each step",
    "sparseadam": "SparseAdam needs sparse gradients (nn.Embedding(sparse=True)), which these networks do not make",
}


# Families whose like-named hyper-parameters mean the same thing, for trainers' defaults: RMSprop's
# `alpha` is the squared-gradient decay (Lookahead's `alpha` is its interpolation), Adam's `eps` is
# added outside the root of the second moment (RMSpropTF's is inside it).
RMSPROPS = ("rmsprop", "rmsproptf")
ADAMS = ("adam", "adamw", "adamax", "nadam", "radam", "sharedadam", "lamb", "adabelief", "adabound")


def names() -> list[str]:
    return sorted(REGISTRY)


def accepts(name: str, hparam: str) -> bool:
    """Whether optimizer `name` takes hyper-parameter `hparam` (e.g. "betas", "alpha")."""
    cls = REGISTRY[name.lower()]
    params = inspect.signature(cls.__init__).parameters
    return hparam in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def check_drivable(name: str) -> None:
    """ValueError (one line) for an unknown name or one that `loss.backward(); step()` cannot drive."""
    key = name.lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(drivable_names())}")
    if key in NOT_DRIVABLE:
        raise ValueError(f"{name!r} cannot be used here: {NOT_DRIVABLE[key]}; choose one of: {', '.join(drivable_names())}")


def drivable_names() -> list[str]:
    return [n for n in names() if n not in NOT_DRIVABLE]


def parse_switch(spec: str) -> int | None:
    """`sgd@N` -> N (switch after Adam's N-th step), `sgd@auto` -> None (SWATS's own criterion)."""
    target, _, when = spec.strip().partition("@")
    if target.lower() != "sgd" or not when:
        raise ValueError(f"{spec!r}: write sgd@STEP (e.g. sgd@10000) or sgd@auto; Adam switches to SGD only")
    if when == "auto":
        return None
    try:
        step = int(when)
    except ValueError:
        raise ValueError(f"{spec!r}: the step after @ must be a whole number or auto") from None
    if step < 1:
        raise ValueError(f"{spec!r}: the switch step must be at least 1")
    return step


def build(name: str, params, switch: str = "", **hparams) -> torch.optim.Optimizer:
    """Make optimizer `name` (case-insensitive) over `params`; with `switch` (`sgd@N`, `sgd@auto`) an
    Adam is made as SWATS with Adam's hyper-parameters, which moves to SGD then.

    One policy for hyper-parameters, which trainers follow before calling this: what a user typed must
    be taken by the optimizer (or it is a ValueError naming it); a trainer's defaults go only to the
    optimizers that `accepts` them. An unknown name, one in NOT_DRIVABLE, or a rejected value raises
    ValueError with a one-line message.
    """
    check_drivable(name)
    key = name.lower()
    if switch:
        if key != "adam":
            raise ValueError(f"--optimizer-switch {switch} moves Adam to SGD (SWATS); {name} is not Adam")
        hparams = {k: v for k, v in hparams.items() if k not in ("fused", "foreach")}  # no such kernels
        # torch Adam's eps where the trainer set none (SWATS's own default is the paper's 1e-9)
        name, key, hparams = "swats", "swats", {"eps": 1e-8, **hparams, "switch_step": parse_switch(switch)}
    unknown = [k for k in hparams if not accepts(key, k)]
    if unknown:
        raise ValueError(f"optimizer {name!r} takes no {', '.join(unknown)}")
    try:
        return REGISTRY[key](params, **hparams)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


__all__ = ["AdaBelief", "AdaBound", "KFAC", "SWATS", "LAMB", "Lookahead", "RMSpropTF", "SharedAdam", "REGISTRY", "build", "clip",
           "names", "parse_switch", "schedules", "accepts", "check_drivable", "drivable_names", "NOT_DRIVABLE", "RMSPROPS", "ADAMS"]
