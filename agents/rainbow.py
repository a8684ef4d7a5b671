"""Rainbow (Hessel et al. 2018, "Rainbow: Combining Improvements in Deep Reinforcement Learning").

    python -m agents.rainbow --env Breakout                      # the paper's agent (preset atari)
    python -m agents.rainbow --env Breakout --preset atari100k   # data-efficient Rainbow, 100k steps
    python -m agents.rainbow --env CartPole-v1                   # preset classic: learns it in 30k steps
    python -m agents.rainbow --env Breakout --optimizer rmsproptf   # the same agent with RMSprop
    python -m agents.rainbow --eval runs/ALE_Breakout-v5__rainbow__1__1700000000/final.pt

DQN with all six of its improvements: double Q-learning (the online network picks the next action,
the target network values it), a dueling network (value and advantage streams), a distribution over
51 returns instead of their mean (C51: cross-entropy to the target distribution projected onto the
support), noisy linear layers for exploration (no epsilon-greedy), prioritized replay (proportional,
by each transition's loss) and 3-step returns. Trained with Adam (lr 6.25e-5, eps 1.5e-4) as the
paper; `--optimizer` takes any of optim's registry to compare. Fields left unset take the preset
of the env's family (or `--preset`), printed at start. On Atari the updates an env step pays for
run while ale-py plays that step on its own threads, drawing from the replay memory exactly as after
the step (agents.off_policy.EnvStep).
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gymnasium as gym
import tyro

import envs
import optim
from agents import env_setup, off_policy, replay
from agents.batches import micro_batches
from agents.networks import MLP, DataEfficientCNN, NatureCNN, NoisyLinear
from common import device as devices, lifecycle
from common.checks import (BELOW_ONE, LAYER_WIDTH, NON_NEGATIVE, POSITIVE, UNIT, between, check_fields,
                           check_grad_accum, family_default, fits_in_memory, limit)
from common.compiled import compiled
from common.config import (OptimizerAidsConfig, PresetFloat, PresetInt, PresetInts, PresetStr, ReplayConfig, RunConfig,
                           describe_preset, fill_preset)
from common.errors import fail
from common.optimizers import check_lr_schedule, off_policy_updates, param_groups
from common.precision import AmpConfig, Precision, check_amp
from common.seeding import EVAL_SEED_OFFSET, derived_seed, seed_everything
from common.session import Session
from common.state import RNG, Counters, RunState


@dataclass
class Config(OptimizerAidsConfig, AmpConfig, ReplayConfig, RunConfig):
    """Rainbow. Fields that say "preset" take the value of the preset unless typed: atari = Hessel et al.
    (2018), Table 1, with frames counted as agent steps (4 frames each); atari100k = data-efficient
    Rainbow (van Hasselt et al. 2019, "When to use parametric models in reinforcement learning?",
    their table of hyper-parameters); classic = tuned here on CartPole-v1."""

    env: str = "Breakout"
    """Atari game (`Breakout`, `Pong`, ...) or a gymnasium id with discrete actions (`CartPole-v1`)."""
    env_kwargs: tuple[str, ...] = ()
    """KEY=VALUE ... passed to the env's constructor (gymnasium envs; each value read as a Python literal:
    3, 0.5, True, 'text'); a user's env is named `module:EnvId`, whose module registers it."""
    env_wrappers: tuple[str, ...] = ()
    """module:callable ... wrapped around each env, innermost first (gymnasium.Wrapper classes, or any env ->
    env), before this toolkit's own wrappers; saved with the run, so that --eval and agents.load rebuild it."""
    preset: Optional[Literal["atari", "atari100k", "classic"]] = None
    """Preset for the unset fields; default: atari for Atari games, classic for everything else."""
    total_timesteps: Annotated[PresetInt, POSITIVE] = None
    """Environment steps (agent steps; 4 frames each on Atari). Preset atari 10,000,000 (the paper
    trained 50M), atari100k 100,000, classic 30,000."""
    num_envs: Annotated[int, POSITIVE, limit(1024, "one process steps them all")] = 1
    """Parallel environments (Atari: ale-py's C++ vector env)."""
    vector_mode: Literal["sync", "async"] = "sync"
    """Gymnasium envs (not Atari): step the envs in this process (sync) or one subprocess each (async)."""
    buffer_size: Annotated[PresetInt, POSITIVE] = None
    """Replay memory capacity in transitions. Preset atari 1,000,000; atari100k 100,000; classic 100,000."""
    learning_starts: Annotated[PresetInt, NON_NEGATIVE] = None
    """Steps played before the first update (after --resume without a saved replay: steps of the restored
    policy that refill it). Preset atari 20,000 (80k frames); atari100k 1,600; classic 1,000."""
    train_frequency: Annotated[PresetInt, POSITIVE] = None
    """Environment steps between rounds of updates. Preset atari 4; atari100k 1; classic 1."""
    gradient_steps: Annotated[int, POSITIVE] = 1
    """Gradient updates per round."""
    batch_size: Annotated[PresetInt, POSITIVE, limit(1 << 20, "a batch lives in memory at once")] = None
    """Transitions per update. Preset atari 32; atari100k 32; classic 64."""
    grad_accum: int = 1
    """Micro-batches per update: each of K equal slices adds its share (1/K) of the batch's mean loss
    to the gradient before the step, under the same noise (the same update, one K-th of the
    activations in memory at a time); priorities are updated for the whole batch."""
    gamma: Annotated[float, UNIT] = 0.99
    """Discount factor."""
    n_step: Annotated[PresetInt, POSITIVE] = None
    """Rewards summed before bootstrapping (multi-step returns). Preset atari 3; atari100k 20; classic 3."""
    target_network_frequency: Annotated[PresetInt, POSITIVE] = None
    """Environment steps between copies of the online network into the target network. Preset atari
    8,000 (32k frames); atari100k 2,000 (= 2,000 updates, one per step); classic 500."""
    num_atoms: Annotated[int, between(2, 1024)] = 51
    """Atoms of the return distribution (C51)."""
    v_min: PresetFloat = None
    """Lowest atom. Preset atari -10 (clipped rewards); atari100k -10; classic -100 (|r| <= 1 and
    gamma 0.99 keep returns within +/-100)."""
    v_max: PresetFloat = None
    """Highest atom. Preset atari 10; atari100k 10; classic 100."""
    noisy_sigma: Annotated[PresetFloat, NON_NEGATIVE] = None
    """sigma0 of the noisy layers' factorised noise (initial sigma = sigma0 / sqrt(inputs)). Preset atari
    0.5 (Fortunato et al. 2018, Hessel et al. 2018); atari100k 0.1; classic 0.5."""
    priority_alpha: Annotated[float, UNIT] = 0.5
    """Prioritization exponent in [0, 1]: transitions drawn with probability p^alpha / sum p^alpha. After
    --resume a memory saved with --save-replay keeps its priorities; a refilled one starts afresh (at 1,
    then the largest loss seen)."""
    priority_beta: Annotated[float, UNIT] = 0.4
    """Importance-sampling exponent at learning_starts, annealed linearly to 1 at total_timesteps."""
    priority: Literal["cross-entropy", "kl"] = "cross-entropy"
    """Each transition's priority: its loss, the cross-entropy to the projected target (Dopamine's and
    Kaixhin's code), or the KL divergence (the paper's words), the cross-entropy less the target's
    entropy. The gradient is the same; the sampling is not (categorical_loss)."""
    LEGACY: ClassVar[dict] = {"priority": "kl"}
    """What a field missing from an earlier version's config meant (common.config.config_from_checkpoint):
    versions before this field prioritized by the KL."""
    optimizer: str = "adam"
    """Optimizer by name from optim's registry (adam, rmsproptf, rmsprop, lamb, ...)."""
    learning_rate: Annotated[PresetFloat, POSITIVE] = None
    """Learning rate. Preset atari 6.25e-5; atari100k 1e-4; classic 1e-3."""
    adam_eps: Annotated[Optional[float], NON_NEGATIVE,
                        tyro.conf.arg(metavar="FLOAT",
                                      help_behavior_hint="(default: 1.5e-4 with Adam-family optimizers)")] = None
    """Epsilon of optimizers whose eps is Adam's (optim.ADAMS; refused with others, AdaBelief among them,
    whose eps sits inside its second moment): 1.5e-4, the paper's."""
    rmsprop_alpha: Annotated[Optional[float], BELOW_ONE,
                             tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: 0.95 with RMSprop)")] = None
    """Squared-gradient decay, for rmsproptf and rmsprop only (refused with others): 0.95, DeepMind's."""
    rmsprop_eps: Annotated[Optional[float], POSITIVE,
                           tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: 1e-5 with RMSprop)")] = None
    """Epsilon, for rmsproptf and rmsprop only (refused with others): 1e-5. The loss here is a mean over
    the batch (as Dopamine's and the paper's agents), so DeepMind's 0.01 for a summed loss becomes
    0.01 / 32^2 ~ 1e-5, Dopamine's value for its mean-loss DQN."""
    max_grad_norm: Annotated[float, NON_NEGATIVE] = 10.0
    """Clip the gradient's global norm to this (0: off). 10, as the dueling network's authors (Wang et
    al. 2016) and data-efficient Rainbow; the Rainbow paper does not list one."""
    sticky_actions: Annotated[float, UNIT] = 0.25
    """Atari: probability of repeating the previous action (Machado et al. 2018); 0 for paper-comparable runs."""
    torso: PresetStr = None
    """Atari network before the dueling streams: nature (Mnih et al. 2015's convolutions) or
    data-efficient (van Hasselt et al. 2019's two 5x5 stride-5 convolutions). Preset atari nature;
    atari100k data-efficient."""
    hidden_sizes: Annotated[PresetInts, LAYER_WIDTH] = None
    """MLP layers before the dueling streams, for vector observations. Preset classic 128."""
    noisy_hidden: Annotated[PresetInt, POSITIVE, limit(1 << 16, "it is one layer's width")] = None
    """Units of each dueling stream's noisy hidden layer. Preset atari 512; atari100k 256; classic 128."""
    checkpoint_interval: Annotated[PresetInt, NON_NEGATIVE] = None
    """Environment steps between checkpoints (checkpoint.pt in the run folder); 0: only at the end.
    Preset atari 250,000; atari100k 25,000; classic 10,000."""
    log_interval: Annotated[int, POSITIVE] = 1_000
    """Environment steps between logged losses (each log costs one host-device sync)."""
    eval_interval: Annotated[PresetInt, NON_NEGATIVE] = None
    """Environment steps between evaluations during training (--eval-episodes on a separate env, noise
    off, logged as eval/episodic_return; best.pt keeps the best); 0: none. Preset atari 250,000;
    atari100k 25,000; classic 10,000."""
    eval_episodes: Annotated[int, POSITIVE, limit(100_000, "evaluation plays them all")] = 10
    """Episodes (full games) per evaluation, during training and with --eval, played at once, one env
    each (up to 64). During training an evaluation plays at most --total-timesteps agent steps: each
    episode is cut at total_timesteps / eval_episodes steps and scored as it stands (said when it
    happens), so that it never outlasts the training it checks; --eval plays full games."""
    eval_epsilon: Annotated[PresetFloat, UNIT] = None
    """Epsilon of random actions while evaluating (noise is off). Preset atari 0.001 (Dopamine's
    Rainbow); atari100k 0.001; classic 0."""
    capture_video: bool = False
    """Save an mp4 of one evaluation episode (after training, or with --eval) in the run folder's videos/."""


ATARI = dict(total_timesteps=10_000_000, buffer_size=1_000_000, learning_starts=20_000, train_frequency=4,
             batch_size=32, n_step=3, target_network_frequency=8_000, v_min=-10.0, v_max=10.0, noisy_sigma=0.5,
             learning_rate=6.25e-5, torso="nature", hidden_sizes=(), noisy_hidden=512, checkpoint_interval=250_000,
             eval_interval=250_000, eval_epsilon=0.001)
# van Hasselt et al. (2019), their hyper-parameter table (data-efficient Rainbow): an update every step, 20-step
# returns, a target update every 2,000 updates, learning from 1,600 steps, lr 1e-4, sigma0 0.1, a smaller CNN.
ATARI100K = dict(total_timesteps=100_000, buffer_size=100_000, learning_starts=1_600, train_frequency=1,
                 batch_size=32, n_step=20, target_network_frequency=2_000, v_min=-10.0, v_max=10.0,
                 noisy_sigma=0.1, learning_rate=1e-4, torso="data-efficient", hidden_sizes=(), noisy_hidden=256,
                 checkpoint_interval=25_000, eval_interval=25_000, eval_epsilon=0.001)
CLASSIC = dict(total_timesteps=30_000, buffer_size=100_000, learning_starts=1_000, train_frequency=1,
               batch_size=64, n_step=3, target_network_frequency=500, v_min=-100.0, v_max=100.0, noisy_sigma=0.5,
               learning_rate=1e-3, torso="nature", hidden_sizes=(128,), noisy_hidden=128,
               checkpoint_interval=10_000, eval_interval=10_000, eval_epsilon=0.0)
PRESETS = {"atari": ATARI, "atari100k": ATARI100K, "classic": CLASSIC}
TORSOS = ("nature", "data-efficient")

# What the checkpoint's networks and optimizer state were made for.
FIXED_ON_RESUME = ("env", "env_kwargs", "env_wrappers", "preset", "lr_mult", "optimizer_switch", "hidden_sizes",
                   "noisy_hidden", "noisy_sigma", "torso", "num_atoms", "v_min", "v_max", "optimizer")


def preset_name(cfg: Config) -> str:
    if cfg.preset is not None:
        return cfg.preset
    return "atari" if env_setup.family(cfg.env) == "atari" else "classic"


def prepare(cfg: Config) -> Config:
    """Fill the preset's fields and check them (each field's declared rules, then what relates fields
    to each other), flag named, before anything is built."""
    atari = env_setup.family(cfg.env) == "atari"
    if cfg.preset is not None and (cfg.preset != "classic") != atari:
        fail(f"--preset {cfg.preset} is for {'Atari games' if cfg.preset != 'classic' else 'vector observations'}; "
             f"{cfg.env} is {'an Atari game' if atari else 'not an Atari game'}")
    cfg = fill_preset(cfg, PRESETS[preset_name(cfg)])
    cfg.hidden_sizes = tuple(cfg.hidden_sizes)
    try:
        optim.check_drivable(cfg.optimizer)
    except ValueError as e:
        fail(f"--optimizer: {e}")
    # optim's policy: the paper's Adam eps only where eps means Adam's (not AdaBelief's), RMSprop's
    # defaults only where alpha is the squared-gradient decay
    adam, rmsprop = optim.takes_adam_eps(cfg.optimizer), optim.takes_rmsprop_alpha(cfg.optimizer)
    family_default(cfg, "adam_eps", 1.5e-4, cfg.optimizer, adam, "Adam epsilon",
                   "optimizers whose eps is Adam's (optim.ADAMS)")
    family_default(cfg, "rmsprop_alpha", 0.95, cfg.optimizer, rmsprop, "RMSprop alpha", "rmsproptf and rmsprop")
    family_default(cfg, "rmsprop_eps", 1e-5, cfg.optimizer, rmsprop, "RMSprop eps", "rmsproptf and rmsprop")
    check_fields(cfg)
    if cfg.torso not in TORSOS:
        fail(f"--torso must be one of {', '.join(TORSOS)} (got {cfg.torso!r})")
    if cfg.batch_size * cfg.num_atoms ** 2 > 1 << 28:  # the projection's (batch, atoms, atoms) shares
        fail(f"--batch-size {cfg.batch_size} with --num-atoms {cfg.num_atoms}: the C51 projection would take "
             f"{cfg.batch_size * cfg.num_atoms ** 2 * 4 / 2**30:.1f} GiB (at most 1 GiB: batch x atoms^2 <= 2^28)")
    if not cfg.v_min < cfg.v_max:
        fail(f"--v-min {cfg.v_min} must be below --v-max {cfg.v_max}")
    check_lr_schedule(cfg, updates(cfg), ("learning_rate",))
    check_grad_accum(cfg, "batch_size")
    check_amp(cfg)
    if cfg.buffer_size < cfg.batch_size:
        fail(f"--buffer-size {cfg.buffer_size} is smaller than --batch-size {cfg.batch_size}")
    least = cfg.num_envs * (4 + cfg.n_step + 1)  # each env's ring: a 4-frame stack and an n-step window
    if cfg.buffer_size < least:
        fail(f"--buffer-size {cfg.buffer_size} is too small for --num-envs {cfg.num_envs} and --n-step "
             f"{cfg.n_step} (at least {least})")
    return cfg


def updates(cfg: Config) -> int:
    """The optimizer updates of the run: what --lr-schedule counts."""
    return off_policy_updates(cfg, cfg.train_frequency, cfg.gradient_steps)


def announce(cfg: Config) -> str:
    name = preset_name(cfg)
    return describe_preset(name, PRESETS[name], cfg)


class RainbowNetwork(nn.Module):
    """A torso, then dueling value and advantage streams (Wang et al. 2016) of noisy layers, each
    giving `num_atoms` logits per output. Returns log-probabilities over the atoms, (B, actions, atoms):
    log softmax(V(s) + A(s, a) - mean_a A(s, a)), the paper's combination of dueling and C51."""

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, cfg: Config):
        super().__init__()
        if len(obs_shape) == 3:
            self.torso = NatureCNN(obs_shape[0], None) if cfg.torso == "nature" else DataEfficientCNN(obs_shape[0])
        else:
            self.torso = MLP(obs_shape[0], cfg.hidden_sizes)
        features, hidden, sigma = self.torso.out_features, cfg.noisy_hidden, cfg.noisy_sigma
        self.num_actions, self.num_atoms = num_actions, cfg.num_atoms
        self.value = nn.Sequential(NoisyLinear(features, hidden, sigma), nn.ReLU(),
                                   NoisyLinear(hidden, cfg.num_atoms, sigma))
        self.advantage = nn.Sequential(NoisyLinear(features, hidden, sigma), nn.ReLU(),
                                       NoisyLinear(hidden, num_actions * cfg.num_atoms, sigma))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = self.torso(obs)
        value = self.value(h).view(-1, 1, self.num_atoms)
        advantage = self.advantage(h).view(-1, self.num_actions, self.num_atoms)
        return F.log_softmax(value + advantage - advantage.mean(dim=1, keepdim=True), dim=-1)

    def reset_noise(self) -> None:
        for m in self.modules():
            if isinstance(m, NoisyLinear):
                m.reset_noise()


def q_values(log_probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """The mean of each action's return distribution."""
    return (log_probs.exp() * support).sum(dim=-1)


def project(probs: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor, support: torch.Tensor):
    """C51's projection (Bellemare et al. 2017, Algorithm 1): the distribution that puts `probs[:, i]`
    on r + discount * z_i, clipped to [v_min, v_max], moved onto the fixed support by sharing each
    atom's mass between its two neighbouring support atoms in proportion to closeness. Written as
    a (B, atoms, atoms) matrix of shares max(0, 1 - |b_i - j|), b_i the position in atom units, which
    also covers b_i landing exactly on an atom (the algorithm as printed drops that mass)."""
    v_min, v_max, num_atoms = support[0], support[-1], len(support)
    delta = (v_max - v_min) / (num_atoms - 1)
    atoms = (returns[:, None] + discounts[:, None] * support[None]).clamp(v_min, v_max)
    position = (atoms - v_min) / delta  # (B, atoms), in [0, num_atoms - 1]
    shares = (1 - (position[:, :, None] - torch.arange(num_atoms, device=probs.device)).abs()).clamp(min=0)
    return torch.einsum("bi,bij->bj", probs, shares)


def categorical_loss(net: RainbowNetwork, target_net: RainbowNetwork, batch: dict[str, torch.Tensor],
                     support: torch.Tensor, kl: bool = False):
    """Per-sample cross-entropy from the projected n-step target distribution to the network's
    distribution of Q(s, a), and their mean weighted by the importance weights, which is the loss.
    The online network picks the next action, the target network gives its distribution (double Q).
    The cross-entropy is each transition's new priority, as in the reference code (Dopamine's and
    Kaixhin's Rainbows, the latter the data-efficient Rainbow's); the paper's words say the KL, which is
    the cross-entropy less the target's entropy and has the same gradient (`kl`: the KL instead, as the
    loss and the priorities). We follow the code by default: with the KL a well-fitted transition's
    priority falls towards the floor while new ones enter at the largest, so sampling is far more
    skewed; on KungFuMaster (atari100k, 3 seeds each) its final evaluations averaged half the
    cross-entropy's, though the seeds overlap (README, results). Returns the loss, the per-sample
    priorities (detached) and the mean Q(s, a) for logging."""
    rows = torch.arange(len(batch["actions"]), device=support.device)
    with torch.no_grad():
        next_action = q_values(net(batch["next_obs"]), support).argmax(dim=1)
        next_probs = target_net(batch["next_obs"])[rows, next_action].exp()
        discounts = batch["discounts"] * (~batch["terminated"]).float()
        target = project(next_probs, batch["rewards"], discounts, support)
    log_p = net(batch["obs"])[rows, batch["actions"].long()]
    if kl:
        per_sample = (target * (target.clamp(min=1e-12).log() - log_p)).sum(dim=1)
    else:
        per_sample = -(target * log_p).sum(dim=1)
    loss = (batch["weights"] * per_sample).mean()
    return loss, per_sample.detach(), q_values(log_p.detach(), support).mean()


def beta_at(step: int, cfg: Config, origin: int) -> float:
    """The importance-sampling exponent: priority_beta from `origin` (the first run's learning_starts)
    linearly to 1 at total_timesteps (Schaul et al. 2016)."""
    fraction = min(max(step - origin, 0) / max(cfg.total_timesteps - origin, 1), 1.0)
    return cfg.priority_beta + fraction * (1.0 - cfg.priority_beta)


def act(net: RainbowNetwork, obs: np.ndarray, support: torch.Tensor, device: torch.device,
        epsilon: float = 0.0, rng: np.random.Generator | None = None, forward=None) -> np.ndarray:
    """Greedy actions of the network as it is (training: new noise drawn first, which is how it
    explores; eval mode: its mean), with a share `epsilon` of random actions (evaluation only).
    `forward`: the network's forward compiled (--compile), else the network's own."""
    if net.training:
        net.reset_noise()
    with torch.no_grad():
        log_probs = (net if forward is None else forward)(torch.as_tensor(obs, device=device))
        actions = q_values(log_probs, support).argmax(dim=1).cpu().numpy()
    if epsilon > 0:
        explore = rng.random(len(obs)) < epsilon
        actions = np.where(explore, rng.integers(0, net.num_actions, size=len(obs)), actions)
    return actions


def make_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    hparams = {"lr": cfg.learning_rate}
    if cfg.adam_eps is not None:
        hparams["eps"] = cfg.adam_eps
    if cfg.rmsprop_alpha is not None:
        hparams.update(alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)
    # torch's fused kernels (Adam, AdamW, SGD, Adagrad) run on the CPU too: Adam's step over the Atari
    # network's 6.8M parameters takes 5.6 ms fused, 26 ms foreach and 34 ms per tensor (2 cores).
    if optim.accepts(cfg.optimizer, "fused") and cfg.optimizer.lower() != "sharedadam":
        hparams["fused"] = True
    elif optim.accepts(cfg.optimizer, "foreach"):
        hparams["foreach"] = True
    try:
        return optim.build(cfg.optimizer, params, cfg.optimizer_switch, **hparams)
    except ValueError as e:
        fail(f"--optimizer: {e}")


def make_env(cfg: Config, num_envs: int, render: bool = False):
    return env_setup.make_env("Rainbow", cfg.env, num_envs, env_kwargs=cfg.env_kwargs, env_wrappers=cfg.env_wrappers,
                              actions=(gym.spaces.Discrete,), render=render,
                              vector_mode=cfg.vector_mode, sticky_actions=cfg.sticky_actions)


def make_network(cfg: Config, env, device: torch.device) -> RainbowNetwork:
    def build():
        return RainbowNetwork(env.single_observation_space.shape, int(env.single_action_space.n), cfg)

    # network, target network, gradients and up to 2 optimizer states
    fits_in_memory(build, copies=5, what=f"the network (--noisy-hidden {cfg.noisy_hidden}, "
                                                   f"--num-atoms {cfg.num_atoms})")
    try:
        return build().to(device)
    except (RuntimeError, MemoryError) as e:
        fail(f"cannot build the network: {str(e).splitlines()[0][:160]}")


def make_support(cfg: Config, device: torch.device) -> torch.Tensor:
    return torch.linspace(cfg.v_min, cfg.v_max, cfg.num_atoms, device=device)


def learn(net: RainbowNetwork, target_net: RainbowNetwork, optimizer, amp: Precision, batch: dict[str, torch.Tensor],
          support: torch.Tensor, cfg: Config, measure_norm: bool = False, loss_fn=categorical_loss):
    """One update of the network on `batch`, under new noise in both networks (drawn independently):
    the importance-weighted mean of the priorities, cross-entropies or KLs (`loss_fn`: categorical_loss,
    compiled with --compile; each of `cfg.grad_accum` slices adding its share, under the same noise), the
    gradient clipped to `cfg.max_grad_norm` when set, one optimizer step. Returns the loss, the new
    priorities of the whole batch, the mean Q(s, a) and the gradient norm (None unless clipped or
    `measure_norm`), as tensors: nothing is read back to the host here."""
    net.reset_noise()
    target_net.reset_noise()
    optimizer.zero_grad(set_to_none=True)
    loss, q_mean, priorities = 0, 0, []
    for part in micro_batches(batch, cfg.grad_accum):  # the whole batch when 1
        with amp.autocast():
            part_loss, part_priorities, part_q = loss_fn(net, target_net, part, support)
        amp.backward(part_loss / cfg.grad_accum)
        loss, q_mean = loss + part_loss.detach() / cfg.grad_accum, q_mean + part_q / cfg.grad_accum
        priorities.append(part_priorities)
    amp.unscale_(optimizer)
    grad_norm = optim.clip.clip_or_measure_(net.parameters(), cfg.max_grad_norm, measure_norm)
    amp.step(optimizer)
    return loss, torch.cat(priorities) if len(priorities) > 1 else priorities[0], q_mean, grad_norm


def fit(cfg: Config, saved: dict | None = None) -> Path:
    """Train, log to TensorBoard, evaluate and checkpoint; returns the final checkpoint's path.

    `saved`: the checkpoint at `cfg.resume`, already loaded, to continue from."""
    device = devices.pick(cfg.device)
    rng = seed_everything(cfg.seed)
    env = make_env(cfg, cfg.num_envs)
    net = make_network(cfg, env, device)
    target_net = copy.deepcopy(net)  # in train mode: its noise is drawn independently per update
    optimizer = make_optimizer(cfg, param_groups(cfg, {"net": net}, {"net": cfg.learning_rate})["net"])
    amp = Precision.of(cfg.amp, device)
    support = make_support(cfg, device)
    rb = replay.for_env(env, cfg.buffer_size, cfg.num_envs, device, n_step=cfg.n_step, gamma=cfg.gamma,
                        prioritized=True, alpha=cfg.priority_alpha)
    # beta_origin: where beta's anneal began, kept when --learning-starts only sizes a refill
    loss_fn = compiled(functools.partial(categorical_loss, kl=cfg.priority == "kl"), cfg.compile)
    forward = compiled(net, cfg.compile)
    c = Counters(global_step=0, update_debt=0, beta_origin=cfg.learning_starts)
    state = RunState(net=net, target_net=target_net, optimizer=optimizer).add("grad_scaler", amp, optional=True)
    state.add("rng", RNG(rng)).add("counters", c)
    replay_restored = off_policy.add_replay(state, rb, cfg, saved)
    session = Session(cfg, "rainbow", envs.resolve(cfg.env).id, state, saved, announce=announce(cfg),
                      evaluate=lambda episodes, video, stop: evaluate(cfg, net, support, device, episodes, video, stop),
                      weights=net.parameters, resume_note=off_policy.refill_note(cfg, saved, replay_restored))
    schedule = session.lr_schedule([optimizer], updates(cfg), ("learning_rate",))
    learning_starts = off_policy.learning_starts(cfg, c.global_step, saved is not None, replay_restored,
                                                 c.beta_origin)
    obs, _ = env.reset(seed=derived_seed(cfg.seed, c.global_step))
    loss = q_mean = grad_norm = None
    beta = beta_at(c.global_step, cfg, c.beta_origin)
    stepper = off_policy.EnvStep(env)
    with session.open(c.global_step):
        while c.global_step < cfg.total_timesteps and not session.stop:
            actions = act(net, obs, support, device, forward=forward)  # fresh noise each step: the exploration
            rb.add_observation(obs, actions)  # from here the memory samples as after the step's whole add
            stepper.send(actions)  # Atari: the games play this step on ale-py's threads while its updates run
            step = c.global_step + cfg.num_envs
            if step > learning_starts and rb.can_sample:
                session.updates_began(step)
                beta = beta_at(step, cfg, c.beta_origin)
                # unclipped runs measure the norm only in the round of updates before a log
                log_soon = step + cfg.train_frequency > session.milestones.next_due("log")
                for _ in range(off_policy.rounds_due(c, cfg)):
                    for i in range(cfg.gradient_steps):
                        batch = rb.sample(cfg.batch_size, rng, beta)
                        loss, priorities, q_mean, grad_norm = learn(
                            net, target_net, optimizer, amp, batch, support, cfg,
                            measure_norm=log_soon and i == cfg.gradient_steps - 1, loss_fn=loss_fn)
                        schedule.step()
                        rb.update_priorities(batch["index"], priorities)
            next_obs, rewards, terminated, truncated, info = stepper.recv()
            rb.add_outcome(rewards, terminated, info["episode_end"])
            obs = next_obs
            c.global_step = step
            session.episodes(info, c.global_step)
            if off_policy.crossed(c.global_step, cfg.num_envs, cfg.target_network_frequency):
                target_net.load_state_dict(net.state_dict())

            session.tick(c.global_step, lambda: {
                "charts/beta": beta, "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "losses/loss": loss, "losses/q_values": q_mean, "losses/grad_norm": grad_norm})
        env.close()
        return session.finish(c.global_step)


def evaluate(cfg: Config, net: RainbowNetwork, support: torch.Tensor, device: torch.device, episodes: int,
             video: Path | None = None, stop=None, training: bool = True) -> list[float]:
    """Full-game raw scores of `episodes` episodes with the noise off (the layers' means) and
    cfg.eval_epsilon, played at once on envs of their own (the same seeds every time, with or without
    `video`)."""
    rng = np.random.default_rng(derived_seed(cfg.seed, EVAL_SEED_OFFSET))
    return env_setup.evaluate(lambda n, render: make_env(cfg, n, render),
                              lambda obs: act(net, obs, support, device, cfg.eval_epsilon, rng),
                              cfg, episodes, video, stop, training, modules=(net,))


def restore(cfg: Config, saved: dict, device: torch.device) -> RainbowNetwork:
    """The network in `saved` (the checkpoint at `cfg.eval`), on `device`."""
    return env_setup.restore_policy(cfg, saved, lambda env: RainbowNetwork(env.single_observation_space.shape,
                                                                           int(env.single_action_space.n), cfg),
                                    "net", lambda n: make_env(cfg, n), device)


def policy(cfg: Config, saved: dict, device: torch.device):
    """agents.load's parts: greedy actions (the noisy layers at their means) for a batch of observations,
    and the env they come from."""
    net, support = restore(cfg, saved, device).eval(), make_support(cfg, device)
    return (lambda obs: act(net, obs, support, device)), lambda n: make_env(cfg, n)


def run_eval(cfg: Config, saved: dict) -> list[float]:
    """Play `cfg.eval_episodes` games with the policy in `saved` (the checkpoint at `cfg.eval`)."""
    device = devices.pick(cfg.device)
    net = restore(cfg, saved, device)
    video = env_setup.eval_video(cfg.eval, cfg.capture_video)
    return env_setup.report(cfg.env, evaluate(cfg, net, make_support(cfg, device), device, cfg.eval_episodes, video,
                                              training=False), video)


TRAINER = lifecycle.Trainer(
    config_cls=Config, kind="rainbow", prog="python -m agents.rainbow", description=__doc__.split("\n")[0],
    prepare=prepare, train=fit, run_eval=run_eval, fixed_on_resume=FIXED_ON_RESUME, canonical=env_setup.canonical,
)


def train(cfg: Config) -> lifecycle.Result:
    """Train from Python: `train(Config(...))` checks `cfg` as the command line does (fields left unset take
    the preset), trains in this process and returns the run folder, final.pt and the evaluations."""
    return lifecycle.train(TRAINER, cfg)


def main(args: list[str] | None = None):
    return lifecycle.main(TRAINER, args)


if __name__ == "__main__":
    main()
