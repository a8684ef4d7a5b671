"""Optimizers that torch.optim lacks, in its conventions, and a registry of all of them by name.

    import optim
    opt = optim.build("rmsproptf", model.parameters(), lr=2.5e-4)
    opt = optim.build("lookahead", model.parameters(), base="sgd", k=5, alpha=0.5, lr=0.1, momentum=0.9)

Also here: K-FAC's curvature (`optim.KFAC`, which can rewrite gradients for SGD, as ACKTR) and the
optimizers that step with it as its authors combine it (`optim.EigenAdam`, Adam in its eigenbasis;
`optim.Graft`, its direction at Adam's step size; optim.kfac_steps), gradient clipping (`optim.clip`)
and learning-rate schedules (`optim.schedules`).

Depends on torch only.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from optim import clip, schedules
from optim.adabelief import AdaBelief
from optim.adabound import AdaBound
from optim.kfac import KFAC
from optim.kfac_steps import EigenAdam, Graft
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
    "muon": "torch's Muon steps 2D weight matrices only, and every network here has biases (and convolutions)",
}


# What the hyper-parameters that trainers' defaults care about (`eps`, `alpha`) mean in each optimizer, as
# data beside the registry. A trainer's family default (Rainbow's Adam eps 1.5e-4, DQN's RMSprop alpha
# 0.95) goes only to the optimizers whose declared meaning is the one that default was chosen for; an
# entry without a declaration (most of torch.optim) takes none. The values, and what each means:
EPS_MEANINGS = {
    # Adam's, torch.optim.Adam: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    "adam": "m_hat / (sqrt(v_hat) + eps): outside the root of the bias-corrected second moment (Adam)",
    # Kingma & Ba's eps-hat, TensorFlow's Adam: the same as Adam's eps / sqrt(1 - b2^t), so larger early
    # and within 1% of Adam's after 4,000 steps at b2 0.999
    "adam-hat": "lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps): outside the root of the uncorrected v "
                "(eps-hat), Adam's eps / sqrt(1 - b2^t)",
    # a floor on the denominator in gradient units, as Adam's is (the first step is Adam's)
    "inside-max": "m_hat / u, u = max(b2 u, |g| + eps): inside Adamax's infinity norm, gradient units",
    # squared units, accumulating to eps / (1 - b2) in s; the authors' 1e-16 plays the part of Adam's eps^2
    "belief": "s = b2 s + (1 - b2)(g - m)^2 + eps at every step: inside AdaBelief's s (and again outside its root)",
    # squared units; torch.optim.RMSprop's is outside (a different optimizer at DQN's eps 0.01)
    "inside-sqrt": "g / sqrt(v + eps), centred g / sqrt(v - m^2 + eps): inside the root (RMSpropTF)",
    "outside-sqrt": "g / (sqrt(v) + eps), centred g / (sqrt(v - m^2) + eps), v uncorrected (torch RMSprop)",
    # an Adam eps default would move the switch too
    "swats": "adam-hat in the Adam phase, and the switch test's tolerance: |lam / (1 - b2^k) - gamma| < eps",
    "base": "handed to the wrapped optimizer (Lookahead's base): the base's meaning",
}
ALPHA_MEANINGS = {
    "sq-decay": "v = alpha v + (1 - alpha) g^2: the squared gradients' decay (RMSprop)",
    "interpolation": "phi = phi + alpha (theta - phi) every k steps: slow weights towards fast ones (Lookahead)",
    "eta-power": "eta = lr / (1 + lambd lr t)^alpha: the step size's decay power (ASGD)",
}
# The eps meanings that take an Adam-family default: gradient units, added once to the denominator's
# magnitude estimate (not to a squared or accumulating state, not a second use besides).
ADAM_EPS = ("adam", "adam-hat", "inside-max")


@dataclass(frozen=True)
class Semantics:
    """What optimizer `eps` and `alpha` mean (keys of EPS_MEANINGS / ALPHA_MEANINGS); None: takes none."""

    eps: str | None = None
    alpha: str | None = None

    def __post_init__(self):
        if self.eps is not None and self.eps not in EPS_MEANINGS:
            raise ValueError(f"eps={self.eps!r}: not one of {', '.join(EPS_MEANINGS)}")
        if self.alpha is not None and self.alpha not in ALPHA_MEANINGS:
            raise ValueError(f"alpha={self.alpha!r}: not one of {', '.join(ALPHA_MEANINGS)}")


# Each declaration names the line of the optimizer's step that shows it.
SEMANTICS: dict[str, Semantics] = {
    "adam": Semantics(eps="adam"),            # denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    "adamw": Semantics(eps="adam"),           # torch.optim.Adam's step (AdamW subclasses it), decay decoupled
    "sharedadam": Semantics(eps="adam"),      # a torch.optim.Adam subclass; only where its state lives differs
    "nadam": Semantics(eps="adam"),           # denom = exp_avg_sq.div(bias_correction2).sqrt(); denom.add_(eps)
    "lamb": Semantics(eps="adam"),            # update = (m / bc1).div_((v / bc2).sqrt_().add_(eps)), then the trust
                                              # ratio
    "radam": Semantics(eps="adam-hat"),       # (bias_correction2**0.5) / exp_avg_sq.sqrt().add_(eps), once rho_t > 5
    "adabound": Semantics(eps="adam-hat"),    # v.sqrt().add_(eps).reciprocal_().mul_(lr sqrt(1 - b2^t) / (1 - b1^t))
    "adamax": Semantics(eps="inside-max"),    # torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps))
    "adabelief": Semantics(eps="belief"),     # s.mul_(beta2).addcmul_(residual, residual, value=1 - beta2).add_(eps)
    "swats": Semantics(eps="swats"),          # m / (a.sqrt() + eps) * (-lr sqrt(1 - b2^k) / (1 - b1^k)); switch if
                                              # ... < eps
    "rmsprop": Semantics(eps="outside-sqrt", alpha="sq-decay"),  # square_avg.mul_(alpha)...;
                                                                 # avg = square_avg.sqrt().add_(eps)
    "rmsproptf": Semantics(eps="inside-sqrt", alpha="sq-decay"),  # v.mul_(alpha)...; denom = v.add(eps).sqrt_()
    "lookahead": Semantics(eps="base", alpha="interpolation"),    # slow.add_(fast - slow, alpha=group["alpha"])
    "asgd": Semantics(alpha="eta-power"),     # eta.copy_(lr / ((1 + lambd * lr * step_t) ** alpha))
}


def semantics(name: str) -> Semantics | None:
    """The declaration for optimizer `name` (case-insensitive), None where there is none."""
    return SEMANTICS.get(name.lower())


def eps_means(name: str) -> str | None:
    """What `eps` means in optimizer `name` (a key of EPS_MEANINGS); None: it takes none, or undeclared."""
    s = semantics(name)
    return s.eps if s else None


def alpha_means(name: str) -> str | None:
    """What `alpha` means in optimizer `name` (a key of ALPHA_MEANINGS); None: it takes none, or undeclared."""
    s = semantics(name)
    return s.alpha if s else None


def takes_adam_eps(name: str) -> bool:
    """Whether an Adam-family eps default (Rainbow's 1.5e-4, PPO's 1e-5) means in `name` what it means in Adam."""
    return eps_means(name) in ADAM_EPS


def takes_rmsprop_alpha(name: str) -> bool:
    """Whether `name`'s alpha is RMSprop's squared-gradient decay (not Lookahead's interpolation)."""
    return alpha_means(name) == "sq-decay"


# The families as name tuples, derived from the declarations (for `name in optim.ADAMS`): ADAMS whose eps
# means Adam's (AdaBelief's does not: it is inside its s), RMSPROPS whose alpha is the squared-gradient
# decay. RMSPROPS' eps differ (rmsproptf's inside the root, rmsprop's outside it): see eps_means.
ADAMS = tuple(n for n in SEMANTICS if takes_adam_eps(n))
RMSPROPS = tuple(n for n in SEMANTICS if takes_rmsprop_alpha(n))


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
        raise ValueError(f"{name!r} cannot be used here: {NOT_DRIVABLE[key]}; "
                         f"choose one of: {', '.join(drivable_names())}")


def drivable_names() -> list[str]:
    return [n for n in names() if n not in NOT_DRIVABLE]


def parse_switch(spec: str) -> int | None:
    """`sgd@N` -> N (switch after Adam's N-th step, or later for a tensor whose estimated rate is not yet
    positive), `sgd@auto` -> None (SWATS's own criterion)."""
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


__all__ = ["AdaBelief", "AdaBound", "KFAC", "EigenAdam", "Graft", "SWATS", "LAMB", "Lookahead", "RMSpropTF",
           "SharedAdam", "REGISTRY",
           "build", "clip", "names", "parse_switch", "schedules", "accepts", "check_drivable", "drivable_names",
           "NOT_DRIVABLE", "RMSPROPS", "ADAMS", "ADAM_EPS", "ALPHA_MEANINGS", "EPS_MEANINGS", "SEMANTICS", "Semantics",
           "semantics", "eps_means", "alpha_means", "takes_adam_eps", "takes_rmsprop_alpha"]
