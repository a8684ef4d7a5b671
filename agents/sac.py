"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications") with a K-FAC
preconditioner.

    python -m agents.sac --env HalfCheetah                    # Adam in K-FAC's eigenbasis on the critics (the default)
    python -m agents.sac --env HalfCheetah --optimizer adam   # plain SAC: the baseline
    python -m agents.sac --env Pendulum-v1                    # preset classic: 15k steps
    python -m agents.sac --eval runs/HalfCheetah-v5__sac__1__1700000000/final.pt

Twin Q critics with Polyak-averaged targets, a tanh-squashed Gaussian actor, and the entropy
temperature alpha tuned towards a target entropy of -|A|; one update of each per env step.

With `--optimizer kfac` (the default) optim.KFAC keeps Kronecker-factored curvature of the critics (and,
with `--kfac-actor`, of the actor, which otherwise steps with plain Adam): the critics' factors from a
Gaussian read of their outputs (targets sampled from N(Q, 1), ACKTR's critic Fisher), the actor's from
the log-likelihood of actions sampled from its own pre-tanh Gaussian, each recorded only inside its own
capture, so the actor's loss, which flows through the critics, never feeds the critics' factors. Factors
are refreshed every `--kfac-factor-interval` updates (each an extra Fisher backward) and decomposed every
`--kfac-inverse-interval`. `--kfac-combine` says how the curvature makes a step (optim.kfac_steps):
Adam in the factors' eigenbasis (eigen-adam, the default), K-FAC's direction at Adam's step size
(graft), or ACKTR's natural gradient with a KL clip and SGD momentum (sgd). Not, by default,
K-FAC's output fed to Adam, which K-FAC's author warns against (tensorflow/kfac#25) and which learned far
worse than Adam here (`--kfac-combine base`, kept to compare).

Measured, and not in K-FAC's favour: on HalfCheetah-v5 at 50k steps (2 seeds) graft on both networks, the
best of the three combinations, ends at 1,285 against plain Adam's 2,587 (evaluation of the final weights;
eigen-adam 1,118, sgd 670), graft on the critics only (the critics alone: the default since) at 1,941. At
100k steps (3 seeds) and Haarnoja et al.'s learning rate 3e-4 graft on the critics ends level with Adam on
HalfCheetah (4,207 against 4,700: -10% [-24%, +6%]) and behind it on Hopper-v5 (518 against 774: -33%
[-58%, +11%]), while graft on both networks is clearly behind (Adam needs 37% and 72% fewer steps);
K-FAC's update costs 1.4-1.5x Adam's. At 1e-3 (Tianshou's), the default rate since, both gain and the gap
widens: Adam ends at 2,923 on Hopper and 6,845 on HalfCheetah, level with Tianshou's SAC, graft on the
critics at 1,005 and 5,199 (-66% and -24% of Adam's; on Hopper no graft seed passes 1,400, every Adam seed
passes 2,400).
Adam in the critics' eigenbasis (eigen-adam), the default combination since, closes part of that gap on
Hopper: 1,685 over 5 seeds against graft's 878 (+92% [+6%, +211%]), level with graft on HalfCheetah (5,244
against 5,199, 3 seeds), still below Adam on both. `--optimizer adam` is the surer agent at these budgets;
README's SAC section has the figures and the studies behind them.
"""
from __future__ import annotations

import copy
import math
import re
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal

import gymnasium as gym

import envs
import optim
from agents import env_setup, off_policy, replay
from agents.networks import MLP
from common import device as devices, lifecycle
from common.checks import (LAYER_WIDTH, NON_NEGATIVE, POSITIVE, UNIT, check_fields, fits_in_memory, flag,
                           limit)
from common.compiled import compiled
from common.config import OptimizerAidsConfig, PresetInt, ReplayConfig, RunConfig, describe_preset, fill_preset
from common.errors import fail
from common.optimizers import check_lr_schedule, off_policy_updates, param_groups
from common.seeding import derived_seed, seed_everything
from common.session import Session
from common.state import RNG, Counters, RunState, Tensor
from optim import kfac_steps
from optim.kfac import KFAC, StackedLinear, gaussian_fisher_loss, policy_fisher_loss


@dataclass
class Config(OptimizerAidsConfig, ReplayConfig, RunConfig):
    """SAC. Fields that say "preset" take the value of the env family's preset unless typed: mujoco =
    Haarnoja et al. (2018) and CleanRL's sac_continuous_action.py; classic = the same agent on a
    15k-step budget for Pendulum-v1 and other small Box-action envs."""

    env: str = "HalfCheetah"
    """A gymnasium env with Box actions: `HalfCheetah`, `Hopper`, `Walker2d`, `Ant`, `Humanoid` (v5),
    `Pendulum-v1`, ..."""
    env_kwargs: tuple[str, ...] = ()
    """KEY=VALUE ... passed to the env's constructor (gymnasium envs; each value read as a Python literal:
    3, 0.5, True, 'text'); a user's env is named `module:EnvId`, whose module registers it."""
    env_wrappers: tuple[str, ...] = ()
    """module:callable ... wrapped around each env, innermost first (gymnasium.Wrapper classes, or any env ->
    env), before this toolkit's own wrappers; saved with the run, so that --eval and agents.load rebuild it."""
    total_timesteps: Annotated[PresetInt, POSITIVE] = None
    """Environment steps. Preset mujoco 1,000,000; classic 15,000."""
    num_envs: Annotated[int, POSITIVE, limit(1024, "one process steps them all")] = 1
    """Parallel environments (one update per env step each)."""
    vector_mode: Literal["sync", "async"] = "sync"
    """Step the envs in this process (sync) or one subprocess each (async)."""
    buffer_size: Annotated[int, POSITIVE] = 1_000_000
    """Replay memory capacity in transitions (observations stored once, as float32)."""
    learning_starts: Annotated[PresetInt, NON_NEGATIVE] = None
    """Steps of uniformly random actions before the first update (after --resume without a saved replay:
    steps of the restored policy that refill it). Preset mujoco 5,000; classic 1,000."""
    batch_size: Annotated[int, POSITIVE, limit(1 << 20, "a batch lives in memory at once")] = 256
    """Transitions per update."""
    gamma: Annotated[float, UNIT] = 0.99
    """Discount factor."""
    tau: Annotated[float, UNIT] = 0.005
    """Polyak averaging of the target critics per update."""
    hidden_sizes: Annotated[tuple[int, ...], LAYER_WIDTH] = (256, 256)
    """Hidden layers of the actor and of each critic."""
    optimizer: str = "kfac"
    """kfac (K-FAC's curvature, combined as --kfac-combine says) or any name of optim's registry (adam, ...).
    Measured at 100k steps (lr 1e-3): kfac (critics only, eigen-adam, the default) ends at 5,244 against
    adam's 6,845 on HalfCheetah-v5 (3 seeds, -23% [-28%, -20%]) and at 1,685 (5 seeds) against 2,923 (3) on
    Hopper-v5 (seeds 1-3: -34% [-74%, +11%]); its step costs 1.56x adam's (graft's 1.37x; HalfCheetah,
    bench/sac_speed.py, the twin critics stacked); adam is the surer choice."""
    kfac_combine: Literal["eigen-adam", "graft", "sgd", "base"] = "eigen-adam"
    """With --optimizer kfac, how K-FAC's curvature makes a step (optim.kfac_steps): eigen-adam = Adam in the
    eigenbasis of K-FAC's factors (EKFAC, SOAP; no damping). On the critics alone at lr 1e-3 and 100k steps
    it ends Hopper-v5 at 1,685 against graft's 878 (5 seeds, +92% [+6%, +211%]) and HalfCheetah-v5 at
    5,244 against 5,199 (3 seeds, level), at 1.14x graft's step cost (each layer's gradient rotated into the
    eigenbasis and back every update); graft = K-FAC's direction at Adam's per-layer step size, pure Adam
    for the first 100 updates, the default until those runs (on both networks at lr 3e-4, HalfCheetah-v5,
    50k steps, 2 seeds, the best of the three: final 1,285 against eigen-adam's 1,118, Adam's 2,587); sgd =
    ACKTR's K-FAC natural gradient with a KL clip and SGD momentum 0.9 (670); base = the preconditioned
    gradient handed to --base-optimizer, which K-FAC's author warns against (tensorflow/kfac#25): the
    earlier versions' way, kept to resume their runs and to compare."""
    base_optimizer: str = "adam"
    """With --kfac-combine base: the optimizer that steps on the preconditioned gradients."""
    kfac_actor: bool = False
    """With --optimizer kfac, precondition the actor too (its own Fisher pass when factors are due). Off by
    default: the critics alone preconditioned, the actor on plain Adam, learned better at a slightly lower
    cost (HalfCheetah-v5 at 100k steps, 3 seeds, lr 3e-4: final 4,207 against 3,083 with the actor's K-FAC; Hopper-v5
    518 against 391)."""
    learning_rate: Annotated[Optional[float], POSITIVE] = None
    """The learning rate of both networks and of alpha, as every trainer's --learning-rate; --policy-lr and
    --q-lr override it for one of them. Unset: 1e-3 (Tianshou's SAC; Haarnoja et al.'s 3e-4 learned far
    slower here, with Adam and with K-FAC)."""
    policy_lr: Annotated[Optional[float], POSITIVE] = None
    """Learning rate of the actor (default: --learning-rate, else as --learning-rate says)."""
    q_lr: Annotated[Optional[float], POSITIVE] = None
    """Learning rate of the critics and of alpha (default: --learning-rate, else as --learning-rate says)."""
    autotune: bool = True
    """Tune the entropy temperature alpha towards a target entropy of -|A|."""
    alpha: Annotated[float, NON_NEGATIVE] = 0.2
    """The temperature when --no-autotune (its starting value is 1 with autotune, as CleanRL)."""
    kfac_damping: Annotated[Optional[float], NON_NEGATIVE] = None
    """K-FAC's Tikhonov damping of the critics' curvature (graft, sgd, base). Default: 0.1 (ACKTR's critic),
    with base 1e-3."""
    kfac_actor_damping: Annotated[Optional[float], NON_NEGATIVE] = None
    """The same for the actor. Default: 0.01 (ACKTR's policy), with base --kfac-damping."""
    kfac_factor_interval: Annotated[int, POSITIVE] = 10
    """Updates between refreshes of the K-FAC factors (each costs one extra Fisher backward)."""
    kfac_inverse_interval: Annotated[int, POSITIVE] = 30
    """Updates between eigendecompositions (or inversions) of the factors."""
    kfac_mode: Literal["eigen", "inverse"] = "inverse"
    """graft, sgd, base: eigen = the exact inverse of the damped Kronecker product; inverse = factored
    damping, cheaper. (eigen-adam always keeps the eigenbases.)"""
    kfac_kl_clip: Annotated[Optional[float], NON_NEGATIVE] = None
    """ACKTR's KL clip on the critics' natural-gradient step (sgd, base; 0: off). Default: sgd 0.3
    (ACKTR's critic), base off."""
    kfac_actor_kl_clip: Annotated[Optional[float], NON_NEGATIVE] = None
    """The same for the actor. Default: sgd 0.01 (ACKTR's policy), base --kfac-kl-clip."""
    LEGACY: ClassVar[dict] = {"kfac_combine": "base", "kfac_actor": True}
    """What a field missing from an earlier version's config meant (common.config.config_from_checkpoint)."""

    checkpoint_interval: Annotated[PresetInt, NON_NEGATIVE] = None
    """Environment steps between checkpoints (checkpoint.pt in the run folder); 0: only at the end.
    Preset mujoco 50,000; classic 5,000."""
    log_interval: Annotated[int, POSITIVE] = 1_000
    """Environment steps between logged losses (each log costs one host-device sync)."""
    eval_interval: Annotated[PresetInt, NON_NEGATIVE] = None
    """Environment steps between evaluations during training (--eval-episodes with the deterministic
    policy, logged as eval/episodic_return; best.pt keeps the best); 0: none. Preset mujoco 50,000;
    classic 5,000."""
    eval_episodes: Annotated[int, POSITIVE, limit(100_000, "evaluation plays them all")] = 10
    """Episodes (full games) per evaluation, during training and with --eval, played at once, one env
    each (up to 64). During training an evaluation plays at most --total-timesteps agent steps: each
    episode is cut at total_timesteps / eval_episodes steps and scored as it stands (said when it
    happens), so that it never outlasts the training it checks; --eval plays full games."""
    capture_video: bool = False
    """Save an mp4 of one evaluation episode (after training, or with --eval) in the run folder's videos/."""


# What each --kfac-combine leaves unset takes: (critics' damping, actor's, critics' KL clip, actor's); None:
# the critics' value. ACKTR's continuous-control settings (openai/baselines acktr: value function damping
# 0.1 and KL clip 0.3, policy damping 1e-2 and the optimizer's default KL clip 0.01); base: the earlier
# versions' 1e-3 and no clip.
KFAC_DEFAULTS = {"eigen-adam": (0.0, 0.0, 0.0, 0.0), "graft": (0.1, 0.01, 0.0, 0.0), "sgd": (0.1, 0.01, 0.3, 0.01),
                 "base": (1e-3, None, 0.0, None)}
KFAC_MOMENTUM = 0.9  # sgd: ACKTR's momentum
# Which combinations use the damping and the KL clip (eigen-adam: Adam's eps stands in for damping)
KFAC_DAMPED, KFAC_CLIPPED = ("graft", "sgd", "base"), ("sgd", "base")

MUJOCO = dict(total_timesteps=1_000_000, learning_starts=5_000, checkpoint_interval=50_000, eval_interval=50_000)
CLASSIC = dict(total_timesteps=15_000, learning_starts=1_000, checkpoint_interval=5_000, eval_interval=5_000)
PRESETS = {"mujoco": MUJOCO, "classic": CLASSIC}
FIXED_ON_RESUME = ("env", "env_kwargs", "env_wrappers", "hidden_sizes", "optimizer", "kfac_combine", "base_optimizer",
                   "kfac_mode", "kfac_actor", "autotune", "lr_mult", "optimizer_switch")
# Both networks' and alpha's learning rate when none is typed, with any optimizer: 1e-3, as Tianshou's
# mujoco_sac.py (CleanRL's sac_continuous_action.py: its critics' and alpha's, 3e-4 for the actor). Haarnoja
# et al.'s 3e-4 (Table 1) learned far slower at 100k steps here (3 seeds, final evaluation; Adam: Hopper-v5
# 2,923 [2,407, 3,253] against 774 [468, 982], HalfCheetah-v5 6,845 [6,623, 7,247] against 4,700 [4,404,
# 5,008]; K-FAC, grafted: Hopper 1,005 [747, 1,378] against 518 [365, 723], HalfCheetah 5,199 [5,136,
# 5,262] against 4,207 [3,627, 5,036]; studies/results/sac-lr-*-100k/, sac-kfac-lr-*-100k/).
DEFAULT_LR = 1e-3
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # the actor's log-std range (CleanRL, Haarnoja et al.'s code: -20, 2)


def preset_name(cfg: Config) -> str:
    return "mujoco" if env_setup.family(cfg.env) == "mujoco" else "classic"


def prepare(cfg: Config) -> Config:
    """Fill the preset's fields and check them (each field's declared rules, then what relates fields
    to each other), flag named, before anything is built."""
    cfg = fill_preset(cfg, PRESETS[preset_name(cfg)])
    cfg.hidden_sizes = tuple(cfg.hidden_sizes)
    for field in ("optimizer", "base_optimizer"):
        name = getattr(cfg, field)
        if field == "optimizer" and name.lower() == "kfac":
            continue
        try:
            optim.check_drivable(name)
        except ValueError as e:
            fail(f"--{flag(field)}: {e}")
    check_fields(cfg)
    if cfg.optimizer.lower() == "kfac":
        fill_kfac_defaults(cfg)
        if cfg.compile:
            fail("--compile: K-FAC's layer hooks capture activations in some updates only, which torch.compile "
                 "does not trace; use it with a plain optimizer (--optimizer adam)")
    for name in ("policy_lr", "q_lr"):  # typed ones win over --learning-rate
        if getattr(cfg, name) is None:
            setattr(cfg, name, cfg.learning_rate if cfg.learning_rate is not None else DEFAULT_LR)
    check_lr_schedule(cfg, off_policy_updates(cfg), ("q_lr", "policy_lr"))
    if not cfg.hidden_sizes:
        fail("--hidden-sizes must be one or more layers (got none)")
    if cfg.buffer_size < cfg.batch_size:
        fail(f"--buffer-size {cfg.buffer_size} is smaller than --batch-size {cfg.batch_size}")
    if cfg.buffer_size < 3 * cfg.num_envs:
        fail(f"--buffer-size {cfg.buffer_size} is too small for --num-envs {cfg.num_envs} "
             f"(at least {3 * cfg.num_envs})")
    return cfg


def fill_kfac_defaults(cfg: Config) -> None:
    """The K-FAC fields left unset take --kfac-combine's values (KFAC_DEFAULTS); one typed for a combination
    that does not use it is refused rather than ignored (0, what a checkpoint's config holds for an unused
    field, passes)."""
    for field, used_by in (("kfac_damping", KFAC_DAMPED), ("kfac_actor_damping", KFAC_DAMPED),
                           ("kfac_kl_clip", KFAC_CLIPPED), ("kfac_actor_kl_clip", KFAC_CLIPPED)):
        if getattr(cfg, field) and cfg.kfac_combine not in used_by:
            fail(f"--{field.replace('_', '-')} is not used by --kfac-combine {cfg.kfac_combine} (only by "
                 f"{', '.join(used_by)}); add --kfac-combine {used_by[0]} to use it")
    critics, actor, critics_clip, actor_clip = KFAC_DEFAULTS[cfg.kfac_combine]
    if cfg.kfac_damping is None:
        cfg.kfac_damping = critics
    if cfg.kfac_actor_damping is None:
        cfg.kfac_actor_damping = cfg.kfac_damping if actor is None else actor
    if cfg.kfac_kl_clip is None:
        cfg.kfac_kl_clip = critics_clip
    if cfg.kfac_actor_kl_clip is None:
        cfg.kfac_actor_kl_clip = cfg.kfac_kl_clip if actor_clip is None else actor_clip
    if cfg.optimizer_switch and cfg.kfac_combine != "base":
        fail(f"--optimizer-switch switches a plain optimizer (or --kfac-combine base's --base-optimizer), "
             f"not --kfac-combine {cfg.kfac_combine}")


def announce(cfg: Config) -> str:
    name = preset_name(cfg)
    return describe_preset(name, PRESETS[name], cfg)


class Actor(nn.Module):
    """A Gaussian over pre-tanh actions, squashed by tanh into the env's [-1, 1] Box (envs rescales)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.body = MLP(obs_dim, hidden)
        self.mean = nn.Linear(self.body.out_features, act_dim)
        self.log_std = nn.Linear(self.body.out_features, act_dim)

    def distribution(self, obs: torch.Tensor) -> Independent:
        h = self.body(obs)
        # squashed into [LOG_STD_MIN, LOG_STD_MAX] smoothly (as CleanRL and Spinning Up's SAC)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(self.log_std(h)) + 1)
        # validate_args=False: no parameter and value checks (small ops each, and a host sync on CUDA):
        # the network's mean and std are valid by construction
        return Independent(Normal(self.mean(h), log_std.exp(), validate_args=False), 1, validate_args=False)

    def sample(self, obs: torch.Tensor, dist: Independent | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action and its log-probability under the squashed Gaussian: log N(u) -
        sum log(1 - tanh(u)^2) (Haarnoja et al. 2018, appendix C), in the stable form
        2 (log 2 - u - softplus(-2u))."""
        dist = self.distribution(obs) if dist is None else dist
        u = dist.rsample()
        log_prob = dist.log_prob(u) - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(dim=1)
        return torch.tanh(u), log_prob

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean(self.body(obs)))


class Critics(nn.Module):
    """The twin critics Q1(s, a), Q2(s, a), each an MLP over the observation and the action with one
    output, as one module whose every layer holds both (optim.kfac.StackedLinear): one batched product
    per layer instead of two, and one K-FAC and one optimizer over both, K-FAC keeping each critic's own
    factors. LeanRL stacks its twin critics the same way (vmap over stacked parameters); on two CPU
    threads it takes SAC's whole Adam update from 9.4 to 8.1 ms (HalfCheetah's sizes, batch 256). An
    optimizer that keeps statistics per parameter tensor sees a layer of both critics as one tensor:
    LAMB's trust ratio and SWATS' switch are taken over both critics together (eigen-adam and graft work
    per critic)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        widths = [obs_dim + act_dim, *hidden]
        self.body = nn.ModuleList(StackedLinear(2, a, b) for a, b in zip(widths, widths[1:]))
        self.head = StackedLinear(2, widths[-1], 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([obs, action], dim=1).float()
        for layer in self.body:
            h = F.relu(layer(h))
        q = self.head(h).squeeze(-1)
        return q[0], q[1]


def make_optimizer(cfg: Config, params, lr: float, what: str) -> torch.optim.Optimizer:
    """A plain optimizer from optim's registry: --optimizer, or with K-FAC the optimizer of its combination."""
    name = cfg.optimizer
    if cfg.optimizer.lower() == "kfac":
        name = {"sgd": "sgd", "base": cfg.base_optimizer}[cfg.kfac_combine]
    hparams = {"lr": lr}
    if name.lower() == "sgd" and cfg.optimizer.lower() == "kfac":
        hparams["momentum"] = KFAC_MOMENTUM
    # torch's fused kernels run on the CPU too, a few times faster than per-tensor steps
    if optim.accepts(name, "fused") and name.lower() != "sharedadam":
        hparams["fused"] = True
    try:
        return optim.build(name, params, cfg.optimizer_switch, **hparams)
    except ValueError as e:
        fail(f"--optimizer ({what}): {e}")


class Preconditioners:
    """K-FAC over the critics and over the actor, with the Fisher losses that feed their factors and the
    optimizers that step with them (--kfac-combine); with a plain optimizer, nothing: the Fisher methods
    then only run the forward, and `optimizer` builds the plain one."""

    def __init__(self, cfg: Config, critics: Critics, actor: Actor):
        self.cfg = cfg
        self.enabled = cfg.optimizer.lower() == "kfac"
        if not self.enabled:
            return
        # eigen-adam and graft step themselves (their step() refreshes K-FAC's curvature); sgd and base have
        # K-FAC rewrite the gradients (with ACKTR's KL clip) that a plain optimizer then steps on
        self.rewrites = cfg.kfac_combine in ("sgd", "base")
        options = dict(factor_update_freq=cfg.kfac_factor_interval, inv_update_freq=cfg.kfac_inverse_interval,
                       mode="eigenbasis" if cfg.kfac_combine == "eigen-adam" else cfg.kfac_mode)
        self.critics = KFAC(critics, damping=cfg.kfac_damping, kl_clip=cfg.kfac_kl_clip or None, lr=cfg.q_lr,
                            **options)
        self.actor = (KFAC(actor, damping=cfg.kfac_actor_damping, kl_clip=cfg.kfac_actor_kl_clip or None,
                           lr=cfg.policy_lr, **options) if cfg.kfac_actor else None)

    def optimizer(self, params, lr: float, which: str) -> torch.optim.Optimizer:
        """The critics' or the actor's optimizer."""
        if self.enabled and which == "actor" and self.actor is None:  # --no-kfac-actor: plain Adam
            return optim.build("adam", params, self.cfg.optimizer_switch, lr=lr, fused=True)
        if not self.enabled or self.rewrites:
            return make_optimizer(self.cfg, params, lr, which)
        kfac = self.critics if which == "critics" else self.actor
        cls = {"eigen-adam": kfac_steps.EigenAdam, "graft": kfac_steps.Graft}[self.cfg.kfac_combine]
        return cls(params, kfac, lr=lr)

    def critic_fisher(self, critics: Critics, obs, actions):
        """Both critics' Q(s, a), and when the critics' factors are due, their Gaussian Fisher
        backward inside the critics' capture (its gradients are then cleared)."""
        if not (self.enabled and self.critics.factors_due):
            return critics(obs, actions)
        with self.critics.capture():
            q1, q2 = critics(obs, actions)
            (gaussian_fisher_loss(q1) + gaussian_fisher_loss(q2)).backward(retain_graph=True)
        critics.zero_grad(set_to_none=True)
        return q1, q2

    def actor_fisher(self, actor: Actor, obs):
        """The actor's distribution at `obs`, and when its factors are due, the log-likelihood of its
        own sampled (pre-tanh) actions backpropagated inside the actor's capture."""
        if not (self.enabled and self.actor is not None and self.actor.factors_due):
            return actor.distribution(obs)
        with self.actor.capture():
            dist = actor.distribution(obs)
            policy_fisher_loss(dist).backward(retain_graph=True)
        actor.zero_grad(set_to_none=True)
        return dist

    def step_critics(self, q_opt):
        """Before the critics' optimizer steps: K-FAC rewrites their gradients (sgd, base), the KL clip at
        the optimizer's learning rate as scheduled."""
        if self.enabled and self.rewrites:
            self.critics.step(lr=q_opt.param_groups[0]["lr"])

    def step_actor(self, actor_opt):
        if self.enabled and self.rewrites and self.actor is not None:
            self.actor.step(lr=actor_opt.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        if not self.enabled:
            return {}
        return {"critics": self.critics.state_dict(), **({"actor": self.actor.state_dict()} if self.actor else {})}

    def load_state_dict(self, state: dict) -> None:
        if self.enabled:
            self.critics.load_state_dict(state["critics"])
            if self.actor is not None:
                self.actor.load_state_dict(state["actor"])


def make_env(cfg: Config, num_envs: int, render: bool = False):
    return env_setup.make_env("SAC", cfg.env, num_envs, env_kwargs=cfg.env_kwargs, env_wrappers=cfg.env_wrappers,
                              actions=(gym.spaces.Box,), render=render,
                              vector_mode=cfg.vector_mode)


def dims(env) -> tuple[int, int]:
    """The sizes of an observation and of an action."""
    return int(np.prod(env.single_observation_space.shape)), int(np.prod(env.single_action_space.shape))


def make_networks(cfg: Config, env, device: torch.device) -> tuple[Actor, Critics]:
    obs_dim, act_dim = dims(env)
    # actor, critics, target critics, gradients and two optimizer states
    fits_in_memory(lambda: Critics(obs_dim, act_dim, cfg.hidden_sizes), copies=6,
                   what=f"the critics (--hidden-sizes {cfg.hidden_sizes})")
    try:
        return (Actor(obs_dim, act_dim, cfg.hidden_sizes).to(device),
                Critics(obs_dim, act_dim, cfg.hidden_sizes).to(device))
    except (RuntimeError, MemoryError) as e:
        fail(f"cannot build the networks {cfg.hidden_sizes}: {str(e).splitlines()[0][:160]}")


def critic_losses(batch: dict, actor: Actor, critics, target: Critics, alpha: torch.Tensor):
    """Each critic's squared error to the soft target r + discount * (min of the target critics - alpha
    * log-prob) at an action the actor samples for the next observation; and the first critic's mean
    Q(s, a). `critics`: the critics, or their forward inside K-FAC's capture when its factors are due."""
    with torch.no_grad():
        next_action, next_log_prob = actor.sample(batch["next_obs"])
        next_q = torch.min(*target(batch["next_obs"], next_action)) - alpha * next_log_prob
        y = batch["rewards"] + batch["discounts"] * (~batch["terminated"]).float() * next_q
    q1, q2 = critics(batch["obs"], batch["actions"])
    return F.mse_loss(q1, y), F.mse_loss(q2, y), q1.detach().mean()


def actor_loss_of(obs: torch.Tensor, dist: Independent | None, actor: Actor, critics: Critics, alpha: torch.Tensor):
    """alpha * log-prob - min Q at an action sampled from `dist` (the actor's at `obs`, made here when
    None), averaged; and the log-probs, which alpha's loss takes."""
    action, log_prob = actor.sample(obs, dist)
    return (alpha * log_prob - torch.min(*critics(obs, action))).mean(), log_prob


class Losses:
    """The update's two loss functions, compiled with --compile (refused with K-FAC, whose layer hooks
    capture activations only some updates: those stay eager)."""

    def __init__(self, enabled: bool):
        self.critics = compiled(critic_losses, enabled)
        self.actor = compiled(actor_loss_of, enabled)


def update(cfg: Config, batch: dict, actor: Actor, critics: Critics, target: Critics, kfac: Preconditioners,
           q_opt, actor_opt, log_alpha: torch.Tensor, alpha_opt, target_entropy: float,
           losses: Losses = Losses(False)) -> dict:
    """One SAC update of the critics, the actor, alpha and the target critics; returns the losses as
    tensors (read back only when logged)."""
    alpha = log_alpha.exp().detach() if cfg.autotune else torch.tensor(cfg.alpha, device=log_alpha.device)
    critic_forward = critics if not kfac.enabled else partial(kfac.critic_fisher, critics)
    qf1_loss, qf2_loss, q_mean = losses.critics(batch, actor, critic_forward, target, alpha)
    q_opt.zero_grad(set_to_none=True)
    (qf1_loss + qf2_loss).backward()
    kfac.step_critics(q_opt)
    q_opt.step()

    # Through the critics (outside their capture: their factors see nothing of it), into the actor's
    # parameters only: the critics' weight gradients are neither computed nor left behind.
    dist = kfac.actor_fisher(actor, batch["obs"]) if kfac.enabled else None  # None: drawn in the loss
    actor_loss, log_prob = losses.actor(batch["obs"], dist, actor, critics, alpha)
    actor_opt.zero_grad(set_to_none=True)
    actor_loss.backward(inputs=list(actor.parameters()))
    kfac.step_actor(actor_opt)
    actor_opt.step()

    out = {"qf1_loss": qf1_loss.detach(), "qf2_loss": qf2_loss.detach(), "actor_loss": actor_loss.detach(),
           "alpha": alpha, "q_values": q_mean}
    if cfg.autotune:
        alpha_loss = (-log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()
        alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        alpha_opt.step()
        out["alpha_loss"] = alpha_loss.detach()

    with torch.no_grad():
        params, targets = list(critics.parameters()), list(target.parameters())
        torch._foreach_lerp_(targets, params, cfg.tau)
    return out


def act(actor: Actor, obs: np.ndarray, device: torch.device, deterministic: bool, sample=None) -> np.ndarray:
    """The actor's actions at `obs`: its mean's, or sampled (`sample`: actor.sample, compiled with --compile)."""
    with torch.no_grad():
        obs = torch.as_tensor(obs, device=device, dtype=torch.float32)
        if deterministic:
            action = actor.deterministic(obs)
        else:
            action = (actor.sample if sample is None else sample)(obs)[0]
    return action.cpu().numpy()


def figures(cfg: Config, losses: dict | None, kfac: Preconditioners, actor: Actor, critics: Critics,
            schedule) -> dict:
    """What a log shows: the learning rate and the last update's losses (tensors, read back by the
    session in one transfer), with K-FAC the norm of its preconditioned steps and its damping."""
    out = {"charts/learning_rate": schedule.lr}
    if losses is None:
        return out
    out.update({f"losses/{k}": v for k, v in losses.items()})
    if kfac.enabled and kfac.rewrites:
        # the last update's preconditioned actor and critic gradients, before the plain optimizer
        out["losses/kfac_update_norm"] = optim.clip.grad_norm(
            [p for p in [*critics.parameters(), *actor.parameters()] if p.grad is not None])
    return out


def _stacked_name(name: str) -> str | None:
    """An earlier version's critic module or parameter name (`qf2.body.net.2.weight`: two networks, each
    an MLP body and a head) as Critics names it (`body.1.weight`); None for a name of neither."""
    m = re.fullmatch(r"qf[12]\.(?:body\.net\.(\d+)|(head))(\..+)?", name)
    if m is None:
        return None
    return (f"body.{int(m[1]) // 2}" if m[1] is not None else "head") + (m[3] or "")


def stack_twin_critics(saved: dict, path) -> None:
    """Rewrite, in place, a checkpoint whose critics were two networks (before 2026-12-07) into the stacked
    layout of Critics: their weights and the target's, the critics' optimizer state (each parameter's
    moments, and eigen-adam's bases) and their K-FAC factors stacked critic 1 then 2, the pairs matched
    by position, so that it resumes where it stopped. One line when it cannot be matched."""
    def stack(first, second):
        if isinstance(first, torch.Tensor) and first.dim() > 0:
            return torch.stack([first, second])
        return first  # step counts and versions (the two stepped together); SWATS' switch: critic 1's

    def stack_dict(old: dict) -> dict:
        """{qf1.X: v, qf2.X: w} -> {X': stack(v, w)}, v a tensor or a dict of them (a K-FAC layer's)."""
        new = {}
        for name, value in old.items():
            if name.startswith("qf1."):
                twin = old["qf2." + name[4:]]
                new[_stacked_name(name)] = ({k: stack(v, twin[k]) for k, v in value.items()}
                                            if isinstance(value, dict) else stack(value, twin))
        return new

    try:
        for key in ("critics", "target"):
            saved[key] = stack_dict(saved[key])
        opt = saved["q_optimizer"]
        (group,) = opt["param_groups"]
        half = len(group["params"]) // 2
        ids = group["params"]
        opt["state"] = {ids[j]: {k: stack(v, opt["state"][ids[j + half]][k]) for k, v in opt["state"][ids[j]].items()}
                        for j in range(half) if ids[j] in opt["state"]}
        group["params"] = ids[:half]
        kfac = saved.get("kfac", {}).get("critics")
        if kfac is not None:
            kfac["layers"] = stack_dict(kfac["layers"])
            kfac["versions"] = {_stacked_name(n): v for n, v in kfac.get("versions", {}).items()
                                if n.startswith("qf1.")}
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        fail(f"cannot resume from {path}: its critics are two networks, as an earlier version kept them, and "
             f"their state does not stack into this version's ({type(e).__name__}: {e}); --eval still plays it")


def fit(cfg: Config, saved: dict | None = None) -> Path:
    """Train, log to TensorBoard, evaluate and checkpoint; returns the final checkpoint's path.

    `saved`: the checkpoint at `cfg.resume`, already loaded, to continue from."""
    if saved and any(k.startswith("qf1.") for k in saved.get("critics", {})):
        stack_twin_critics(saved, cfg.resume)
    device = devices.pick(cfg.device)
    rng = seed_everything(cfg.seed)
    env = make_env(cfg, cfg.num_envs)
    actor, critics = make_networks(cfg, env, device)
    target = copy.deepcopy(critics)  # outside any capture: no K-FAC hooks come along
    target.requires_grad_(False)
    kfac = Preconditioners(cfg, critics, actor)
    params = param_groups(cfg, {"critics": critics, "actor": actor}, {"critics": cfg.q_lr, "actor": cfg.policy_lr})
    q_opt = kfac.optimizer(params["critics"], cfg.q_lr, "critics")
    actor_opt = kfac.optimizer(params["actor"], cfg.policy_lr, "actor")
    target_entropy = -float(dims(env)[1])
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=cfg.q_lr)
    rb = replay.for_env(env, cfg.buffer_size, cfg.num_envs, device, gamma=cfg.gamma)
    c = Counters(global_step=0)
    state = RunState(actor=actor, critics=critics, target=target, q_optimizer=q_opt, actor_optimizer=actor_opt,
                     kfac=kfac, log_alpha=Tensor(log_alpha), alpha_optimizer=alpha_opt, rng=RNG(rng), counters=c)
    replay_restored = off_policy.add_replay(state, rb, cfg, saved)
    session = Session(cfg, "sac", envs.resolve(cfg.env).id, state, saved, announce=announce(cfg),
                      evaluate=lambda episodes, video, stop: evaluate(cfg, actor, device, episodes, video, stop),
                      weights=lambda: [*actor.parameters(), *critics.parameters()],
                      resume_note=off_policy.refill_note(cfg, saved, replay_restored))
    # the critics' and the actor's learning rates follow it together (the temperature's stays put)
    schedule = session.lr_schedule([q_opt, actor_opt], off_policy_updates(cfg), ("q_lr", "policy_lr"))
    learning_starts = off_policy.learning_starts(cfg, c.global_step, saved is not None, replay_restored)
    obs, _ = env.reset(seed=derived_seed(cfg.seed, c.global_step))
    env.action_space.seed(derived_seed(cfg.seed, c.global_step + 1))
    losses, loss_fns, sample = None, Losses(cfg.compile), compiled(actor.sample, cfg.compile)
    with session.open(c.global_step):
        while c.global_step < cfg.total_timesteps and not session.stop:
            if c.global_step < learning_starts and (saved is None or replay_restored):
                # uniform random warm-up, also for the rest of it after a resume with the memory; a
                # refill after a resume without it plays the restored policy
                actions = env.action_space.sample()
            else:
                actions = act(actor, obs, device, deterministic=False, sample=sample)
            next_obs, rewards, terminated, truncated, info = env.step(actions)
            rb.add(obs, actions, rewards, terminated, info["episode_end"])
            obs = next_obs
            c.global_step += cfg.num_envs
            session.episodes(info, c.global_step)

            if c.global_step > learning_starts and rb.can_sample:
                session.updates_began(c.global_step)
                for _ in range(cfg.num_envs):  # one update per env step
                    losses = update(cfg, rb.sample(cfg.batch_size, rng), actor, critics, target, kfac, q_opt,
                                    actor_opt, log_alpha, alpha_opt, target_entropy, loss_fns)
                    schedule.step()
            session.tick(c.global_step, lambda: figures(cfg, losses, kfac, actor, critics, schedule))
        env.close()
        return session.finish(c.global_step)


def evaluate(cfg: Config, actor: Actor, device: torch.device, episodes: int, video: Path | None = None,
             stop=None, training: bool = True) -> list[float]:
    """Raw returns of `episodes` episodes of the deterministic policy tanh(mean), played at once on envs
    of their own (the same seeds every time)."""
    return env_setup.evaluate(lambda n, render: make_env(cfg, n, render),
                              lambda obs: act(actor, obs, device, deterministic=True),
                              cfg, episodes, video, stop, training, modules=(actor,))


def restore(cfg: Config, saved: dict, device: torch.device) -> Actor:
    """The actor in `saved` (the checkpoint at `cfg.eval`), on `device`."""
    return env_setup.restore_policy(cfg, saved, lambda env: Actor(*dims(env), cfg.hidden_sizes), "actor",
                                    lambda n: make_env(cfg, n), device)


def policy(cfg: Config, saved: dict, device: torch.device):
    """agents.load's parts: the deterministic actions tanh(mean) for a batch of observations, and the env
    they come from."""
    actor = restore(cfg, saved, device).eval()
    return (lambda obs: act(actor, obs, device, deterministic=True)), lambda n: make_env(cfg, n)


def run_eval(cfg: Config, saved: dict) -> list[float]:
    """Play `cfg.eval_episodes` episodes with the policy in `saved` (the checkpoint at `cfg.eval`)."""
    device = devices.pick(cfg.device)
    actor = restore(cfg, saved, device)
    video = env_setup.eval_video(cfg.eval, cfg.capture_video)
    return env_setup.report(cfg.env, evaluate(cfg, actor, device, cfg.eval_episodes, video, training=False), video)


def unused(config: dict) -> tuple[str, ...]:
    """What a prepared config holds but does not act on, so that two runs may differ in it: learning_rate,
    which only fills q_lr and policy_lr (compared themselves), and the K-FAC fields when the optimizer is
    not K-FAC (a run with Adam recorded the K-FAC defaults of its day: kfac_combine graft until 2026-12-07)."""
    kfac = () if str(config.get("optimizer", "")).lower() == "kfac" else \
        tuple(k for k in config if k.startswith("kfac_") or k == "base_optimizer")
    return ("learning_rate", *kfac)


TRAINER = lifecycle.Trainer(
    config_cls=Config, kind="sac", prog="python -m agents.sac", description=__doc__.split("\n")[0],
    prepare=prepare, train=fit, run_eval=run_eval, fixed_on_resume=FIXED_ON_RESUME, canonical=env_setup.canonical,
    unused=unused,
)


def train(cfg: Config) -> lifecycle.Result:
    """Train from Python: `train(Config(...))` checks `cfg` as the command line does (fields left unset take
    the preset), trains in this process and returns the run folder, final.pt and the evaluations."""
    return lifecycle.train(TRAINER, cfg)


def main(args: list[str] | None = None):
    return lifecycle.main(TRAINER, args)


if __name__ == "__main__":
    main()
