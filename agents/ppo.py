"""Proximal Policy Optimization (Schulman et al. 2017), with one Adam over the whole actor-critic.

    python -m agents.ppo --env Breakout                  # preset atari: Nature CNN shared by both heads
    python -m agents.ppo --env HalfCheetah               # preset mujoco: separate tanh MLPs, normalization
    python -m agents.ppo --env CartPole-v1               # preset classic
    torchrun --standalone --nproc_per_node=2 -m agents.ppo --env Breakout --num-envs 16
    python -m agents.ppo --eval runs/ALE_Breakout-v5__ppo__1__1700000000/final.pt

With the implementation details Huang et al. (2022, "The 37 implementation details of PPO") catalogue
from OpenAI Baselines: orthogonal initialisation, Adam eps 1e-5 with a linearly annealed learning
rate, GAE, minibatch advantage normalisation, clipped surrogate and clipped value loss, entropy
bonus, global gradient clipping at 0.5. Fields left unset take the preset of the env's family,
printed at start: `atari` (Baselines' Atari PPO, as CleanRL's ppo_atari.py), `mujoco` (Baselines'
MuJoCo PPO, as CleanRL's ppo_continuous_action.py), `classic` (RL Zoo's tuned CartPole-v1 PPO).

Across processes (torchrun), the envs are split over the ranks, each rank seeds its own, every loss
is divided by the number of valid samples of the *global* minibatch and the gradients are summed over
ranks, so each update is the one a single process would make over all ranks' samples together.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch import nn
from torch.distributions import Categorical, Normal

import envs
import optim
from agents import env_setup
from agents.batches import micro_batches
from agents.networks import MLP, NatureCNN, orthogonal_init
from agents.rollout import RolloutStorage, gae
from common import device as devices, distributed, lifecycle
from common.checks import (LAYER_WIDTH, NON_NEGATIVE, POSITIVE, UNIT, check_fields, check_grad_accum, family_default,
                           fits_in_memory, limit)
from common.compiled import compiled
from common.config import (OptimizerAidsConfig, PresetFloat, PresetInt, PresetInts, RunConfig, describe_preset,
                           fill_preset)
from common.errors import fail
from common.optimizers import check_lr_schedule, param_groups
from common.precision import AmpConfig, Precision, check_amp
from common.seeding import RANK_SEED_OFFSET, RANK_SHUFFLE_SEED_OFFSET, derived_seed, rng_state, seed_everything
from common.session import Session
from common.state import RNG, Adapter, Counters, RunState


@dataclass
class Config(OptimizerAidsConfig, AmpConfig, RunConfig):
    """PPO. Fields that say "preset" take the value of the env's preset unless typed: atari = Baselines'
    Atari PPO (Schulman et al. 2017; CleanRL ppo_atari.py); mujoco = Baselines' MuJoCo PPO (CleanRL
    ppo_continuous_action.py); classic = RL Zoo's tuned CartPole-v1 PPO (hyperparams/ppo.yml)."""

    env: str = "Breakout"
    """Atari game, MuJoCo env (`HalfCheetah`, `Hopper`, ...) or any gymnasium id with discrete or Box actions."""
    env_kwargs: tuple[str, ...] = ()
    """KEY=VALUE ... passed to the env's constructor (gymnasium envs; each value read as a Python literal:
    3, 0.5, True, 'text'); a user's env is named `module:EnvId`, whose module registers it."""
    env_wrappers: tuple[str, ...] = ()
    """module:callable ... wrapped around each env, innermost first (gymnasium.Wrapper classes, or any env ->
    env), before this toolkit's own wrappers; saved with the run, so that --eval and agents.load rebuild it."""
    total_timesteps: Annotated[PresetInt, POSITIVE] = None
    """Environment steps over all envs and ranks. Preset atari 10,000,000; mujoco 1,000,000; classic 100,000."""
    num_envs: Annotated[PresetInt, POSITIVE, limit(4096, "one process steps its share of them")] = None
    """Parallel environments over all ranks (split evenly between torchrun's processes). Preset atari 8;
    mujoco 1; classic 8."""
    num_steps: Annotated[PresetInt, POSITIVE, limit(1 << 20, "a rollout lives in memory")] = None
    """Steps per env in each rollout. Preset atari 128; mujoco 2,048; classic 32."""
    optimizer: str = "adam"
    """One optimizer over actor and critic, by name from optim's registry (adam, adamw, lamb, ...)."""
    learning_rate: Annotated[PresetFloat, POSITIVE] = None
    """Learning rate (at the start of --lr-schedule). Preset atari 2.5e-4; mujoco 3e-4; classic 1e-3."""
    adam_eps: Annotated[Optional[float], NON_NEGATIVE,
                        tyro.conf.arg(metavar="FLOAT",
                                      help_behavior_hint="(default: 1e-5 with Adam-family optimizers)")] = None
    """Epsilon of optimizers whose eps is Adam's (optim.ADAMS; refused with others): 1e-5, Baselines', rather
    than torch's 1e-8."""
    lr_schedule: str = "linear"
    """Learning-rate schedule over the run's iterations (one rollout and its update epochs each):
    NAME[:key=value,...], stages joined by ' then ' (python -m optim --schedules lists them). linear
    is Baselines' and CleanRL's anneal to 0 (their --anneal-lr); constant is --no-anneal-lr."""
    gamma: Annotated[PresetFloat, UNIT] = None
    """Discount factor. Preset atari 0.99; mujoco 0.99; classic 0.98."""
    gae_lambda: Annotated[PresetFloat, UNIT] = None
    """GAE's lambda. Preset atari 0.95; mujoco 0.95; classic 0.8."""
    num_minibatches: Annotated[PresetInt, POSITIVE] = None
    """Minibatches per epoch of the global batch (num_envs x num_steps). Preset atari 4; mujoco 32; classic 1."""
    grad_accum: int = 1
    """Micro-batches per minibatch: each of K equal slices of a process's minibatch adds its gradient
    before the step, its loss divided by the whole minibatch's count and its advantages normalized by
    the whole minibatch's statistics (the same update, one K-th of the activations in memory)."""
    update_epochs: Annotated[PresetInt, POSITIVE, limit(10_000, "each is a pass over the rollout")] = None
    """Epochs over each rollout. Preset atari 4; mujoco 10; classic 20."""
    clip_coef: Annotated[PresetFloat, POSITIVE] = None
    """Surrogate clipping epsilon. Preset atari 0.1; mujoco 0.2; classic 0.2."""
    anneal_clip: bool | None = None
    """Anneal clip_coef linearly to 0 as the learning rate (RL Zoo's lin_0.2). Preset classic only."""
    clip_vloss: bool | None = None
    """Clip the value loss around the rollout's values, as Baselines. Preset atari and mujoco on;
    classic off (SB3's default)."""
    ent_coef: Annotated[PresetFloat, NON_NEGATIVE] = None
    """Entropy bonus coefficient. Preset atari 0.01; mujoco 0; classic 0."""
    vf_coef: Annotated[PresetFloat, NON_NEGATIVE] = None
    """Value loss coefficient; the value loss is half the mean squared error, as Baselines' and
    CleanRL's. Preset atari 0.5; mujoco 0.5; classic 1.0 (RL Zoo's 0.5 times SB3's value loss, the
    whole mean squared error)."""
    max_grad_norm: Annotated[float, NON_NEGATIVE] = 0.5
    """Global gradient-norm clipping (optim.clip)."""
    target_kl: Annotated[float, NON_NEGATIVE] = 0.0
    """Stop an update's epochs early once the approximate KL exceeds this; 0: never."""
    hidden_sizes: Annotated[PresetInts, LAYER_WIDTH] = None
    """Hidden layers of the policy and value MLPs for vector observations (tanh). Preset mujoco and
    classic 64 64 (Atari uses the Nature CNN)."""
    normalize_obs: bool | None = None
    """Normalize observations by running statistics (saved in checkpoints, frozen at evaluation).
    Preset mujoco on."""
    normalize_reward: bool | None = None
    """Scale rewards by the running std of the discounted return. Preset mujoco on."""
    sticky_actions: Annotated[float, UNIT] = 0.25
    """Atari: probability of repeating the previous action (Machado et al. 2018)."""
    vector_mode: Literal["sync", "async"] = "sync"
    """Gymnasium envs (not Atari): step the envs in this process (sync) or one subprocess each (async)."""
    checkpoint_interval: Annotated[PresetInt, NON_NEGATIVE] = None
    """Environment steps between checkpoints; 0: only at the end. Preset atari 500,000; mujoco 100,000;
    classic 10,000."""
    eval_interval: Annotated[PresetInt, NON_NEGATIVE] = None
    """Environment steps between evaluations during training (deterministic policy, separate envs);
    0: none. Preset atari 500,000; mujoco 100,000; classic 25,000."""
    eval_episodes: Annotated[int, POSITIVE, limit(100_000, "evaluation plays them all")] = 10
    """Episodes (full games) per evaluation, during training and with --eval, played at once, one env
    each (up to 64). During training an evaluation plays at most --total-timesteps agent steps: each
    episode is cut at total_timesteps / eval_episodes steps and scored as it stands (said when it
    happens), so that it never outlasts the training it checks; --eval plays full games."""
    capture_video: bool = False
    """Save an mp4 of one evaluation episode (after training, or with --eval) in the run folder's videos/."""


ATARI = dict(total_timesteps=10_000_000, num_envs=8, num_steps=128, learning_rate=2.5e-4, gamma=0.99,
             gae_lambda=0.95, num_minibatches=4, update_epochs=4, clip_coef=0.1, anneal_clip=False,
             clip_vloss=True, ent_coef=0.01, vf_coef=0.5, hidden_sizes=(), normalize_obs=False,
             normalize_reward=False, checkpoint_interval=500_000, eval_interval=500_000)
MUJOCO = dict(total_timesteps=1_000_000, num_envs=1, num_steps=2048, learning_rate=3e-4, gamma=0.99,
              gae_lambda=0.95, num_minibatches=32, update_epochs=10, clip_coef=0.2, anneal_clip=False,
              clip_vloss=True, ent_coef=0.0, vf_coef=0.5, hidden_sizes=(64, 64), normalize_obs=True,
              normalize_reward=True, checkpoint_interval=100_000, eval_interval=100_000)
# rl-baselines3-zoo hyperparams/ppo.yml, CartPole-v1: 8 envs x 32 steps, batch 256, 20 epochs, gae 0.8,
# gamma 0.98, lr and clip linear from 1e-3 and 0.2, no entropy bonus, SB3's unclipped value loss at SB3's
# weight: its vf_coef 0.5 multiplies F.mse_loss, twice our (Baselines') half squared error, hence 1.0.
# (Seeds 1-20 on one CPU: at 0.5, 19 ended at 500 and seed 1 fell from 500 at 50k to 130 at 100k; at
# 1.0, all 20 ended at 500; SB3 itself, seeds 1-12: all 12.)
CLASSIC = dict(total_timesteps=100_000, num_envs=8, num_steps=32, learning_rate=1e-3, gamma=0.98,
               gae_lambda=0.8, num_minibatches=1, update_epochs=20, clip_coef=0.2, anneal_clip=True,
               clip_vloss=False, ent_coef=0.0, vf_coef=1.0, hidden_sizes=(64, 64), normalize_obs=False,
               normalize_reward=False, checkpoint_interval=10_000, eval_interval=25_000)
PRESETS = {"atari": ATARI, "mujoco": MUJOCO, "classic": CLASSIC}

# What the checkpoint's networks and optimizer state were made for.
FIXED_ON_RESUME = ("env", "env_kwargs", "env_wrappers", "hidden_sizes", "optimizer", "normalize_obs",
                   "normalize_reward", "lr_mult", "optimizer_switch")


def preset_name(cfg: Config) -> str:
    return env_setup.family(cfg.env)


def prepare(cfg: Config) -> Config:
    """Fill the preset's fields and check them (each field's declared rules, then what relates fields
    to each other), flag named, before anything is built."""
    cfg = fill_preset(cfg, PRESETS[preset_name(cfg)])
    cfg.hidden_sizes = tuple(cfg.hidden_sizes)
    try:
        optim.check_drivable(cfg.optimizer)
    except ValueError as e:
        fail(f"--optimizer: {e}")
    family_default(cfg, "adam_eps", 1e-5, cfg.optimizer, optim.takes_adam_eps(cfg.optimizer), "Adam epsilon",
                   "optimizers whose eps is Adam's (optim.ADAMS)")
    check_fields(cfg)
    world = distributed.from_env()
    if cfg.num_envs % world.size:
        fail(f"--num-envs {cfg.num_envs} does not split evenly over {world.size} torchrun processes")
    local_batch = cfg.num_envs // world.size * cfg.num_steps
    if local_batch % cfg.num_minibatches:
        fail(f"--num-minibatches {cfg.num_minibatches} does not divide each process's batch of {local_batch} "
             f"(num_envs / processes x num_steps)")
    check_lr_schedule(cfg, iterations(cfg), ("learning_rate",))
    if world.size > 1 and optim.schedules.parse(cfg.lr_schedule)[0][0] == "plateau":
        fail("--lr-schedule plateau follows rank 0's evaluations, which the other torchrun processes do not see; "
             "choose a step schedule")
    check_grad_accum(cfg, local_batch // cfg.num_minibatches)
    check_amp(cfg)
    return cfg


def iterations(cfg: Config) -> int:
    """Rollouts (each with its update epochs) in the run: what --lr-schedule counts."""
    return max(cfg.total_timesteps // (cfg.num_envs * cfg.num_steps), 1)


# ------------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------------


class Agent(nn.Module):
    """Actor and critic. Atari: one Nature CNN trunk, a policy head (gain 0.01) and a value head
    (gain 1). Vector observations: separate tanh MLPs for policy and value (Baselines' MuJoCo
    policy). Box actions: a Gaussian with a state-independent log-std, sampled unclipped (the env
    clips to [-1, 1] and rescales)."""

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, hidden: tuple[int, ...]):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        out = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        if len(obs_shape) == 3:
            self.trunk = orthogonal_init(NatureCNN(obs_shape[0]))
            self.actor = orthogonal_init(nn.Linear(512, out), gain=0.01)
            self.critic = orthogonal_init(nn.Linear(512, 1), gain=1.0)
        else:
            self.trunk = nn.Identity()
            width = hidden[-1] if hidden else obs_shape[0]
            self.actor = nn.Sequential(orthogonal_init(MLP(obs_shape[0], hidden, nn.Tanh)),
                                       orthogonal_init(nn.Linear(width, out), gain=0.01))
            self.critic = nn.Sequential(orthogonal_init(MLP(obs_shape[0], hidden, nn.Tanh)),
                                        orthogonal_init(nn.Linear(width, 1), gain=1.0))
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(out))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.trunk(obs)).squeeze(-1)

    def dist(self, features: torch.Tensor):
        # validate_args=False: torch.distributions checks its parameters (and every log_prob's value) by
        # default, a few small ops each and on CUDA a host sync; what the network gives is valid by
        # construction
        logits = self.actor(features)
        if self.continuous:
            return Normal(logits, self.log_std.exp().expand_as(logits), validate_args=False)
        return Categorical(logits=logits, validate_args=False)

    def act_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """(action, its log-probability, the policy's entropy, V(obs)); samples when `action` is None."""
        features = self.trunk(obs)
        dist = self.dist(features)
        if action is None:
            action = dist.sample()
        logprob, entropy = dist.log_prob(action), dist.entropy()
        if self.continuous:
            logprob, entropy = logprob.sum(-1), entropy.sum(-1)
        return action, logprob, entropy, self.critic(features).squeeze(-1)

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """The evaluation policy: the Gaussian's mean, or the most probable action."""
        dist = self.dist(self.trunk(obs))
        return dist.mean if self.continuous else dist.probs.argmax(-1)


# ------------------------------------------------------------------------------------------------
# The update
# ------------------------------------------------------------------------------------------------


def minibatch_statistics(mb: dict[str, torch.Tensor], world: distributed.World):
    """The valid count of the global minibatch (all ranks) and its advantages' mean and std, which
    every micro-batch of it is normalized and divided by."""
    mask = mb["valid"].float()
    n = world.sum_(mask.sum().detach().clone()).clamp(min=1.0)
    adv = mb["advantages"]
    # Advantages normalized over the global minibatch (per-rank statistics would change the update)
    stats = world.sum_(torch.stack([(adv * mask).double().sum(), (adv * adv * mask).double().sum()]).detach())
    mean = stats[0] / n
    std = (stats[1] / n - mean * mean).clamp(min=0).mul(n / (n - 1).clamp(min=1)).sqrt()  # float64 sums
    return n, mean, std


def ppo_loss(agent: Agent, mb: dict[str, torch.Tensor], clip_coef: float, cfg: Config, n: torch.Tensor,
             mean: torch.Tensor, std: torch.Tensor):
    """The clipped surrogate, value and entropy terms over a (micro-)minibatch's valid samples, each a
    sum divided by the valid count `n` of the global minibatch (all ranks), so that summing the ranks'
    (and micro-batches') gradients gives the gradient of the global minibatch's mean. Returns the loss
    and its parts."""
    mask = mb["valid"].float()
    adv = ((mb["advantages"] - mean) / (std + 1e-8)).float()

    _, newlogprob, entropy, newvalue = agent.act_and_value(mb["obs"], mb["actions"])
    logratio = newlogprob - mb["logprobs"]
    ratio = logratio.exp()
    pg_loss = (torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)) * mask).sum() / n
    if cfg.clip_vloss:
        clipped = mb["values"] + (newvalue - mb["values"]).clamp(-clip_coef, clip_coef)
        v_loss = 0.5 * (torch.max((newvalue - mb["returns"]) ** 2, (clipped - mb["returns"]) ** 2) * mask).sum() / n
    else:
        v_loss = 0.5 * (((newvalue - mb["returns"]) ** 2) * mask).sum() / n
    entropy_loss = (entropy * mask).sum() / n
    loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
    with torch.no_grad():
        approx_kl = (((ratio - 1) - logratio) * mask).sum() / n
        clipfrac = (((ratio - 1.0).abs() > clip_coef).float() * mask).sum() / n
    return loss, {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(), "entropy": entropy_loss.detach(),
                  "approx_kl": approx_kl, "clipfrac": clipfrac}


def update(agent: Agent, optimizer, amp: Precision, batch: dict[str, torch.Tensor], clip_coef: float, cfg: Config,
           world: distributed.World, generator: torch.Generator, loss_fn=ppo_loss) -> dict[str, torch.Tensor]:
    """`update_epochs` passes over this rank's batch in `num_minibatches` shuffled minibatches; the
    gradients (of `loss_fn`: ppo_loss, compiled with --compile) are summed over micro-batches and
    ranks, clipped, then stepped. Stats stay tensors: the
    one host read is --target-kl's, which every rank takes together after an epoch, and only when set."""
    size = batch["valid"].shape[0]
    mb_size = size // cfg.num_minibatches
    stats = {}
    for _ in range(cfg.update_epochs):
        order = torch.randperm(size, generator=generator).to(batch["valid"].device)
        for start in range(0, size, mb_size):
            mb = {k: v[order[start:start + mb_size]] for k, v in batch.items()}
            n, mean, std = minibatch_statistics(mb, world)
            optimizer.zero_grad(set_to_none=True)
            stats = {}
            for part in micro_batches(mb, cfg.grad_accum):  # the whole minibatch when 1
                with amp.autocast():
                    loss, part_stats = loss_fn(agent, part, clip_coef, cfg, n, mean, std)
                amp.backward(loss)
                stats = {k: stats.get(k, 0) + v for k, v in part_stats.items()}
            world.sum_grads_(agent.parameters())
            amp.unscale_(optimizer)
            stats["grad_norm"] = optim.clip.clip_or_measure_(agent.parameters(), cfg.max_grad_norm)
            amp.step(optimizer)
        if cfg.target_kl and float(world.sum_(stats["approx_kl"].clone())) > cfg.target_kl:  # global mean
            break
    # each rank's parts are its share of the global mean: their sum is what one process would log
    names = list(stats)
    summed = world.sum_(torch.stack([stats[k] for k in names if k != "grad_norm"]))
    return {**dict(zip([k for k in names if k != "grad_norm"], summed)), "grad_norm": stats["grad_norm"]}


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def collect(agent: Agent, env, storage: RolloutStorage, next_obs: torch.Tensor, next_valid: torch.Tensor,
            on_episode=None, act=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill `storage` with one rollout from `next_obs`; returns the observation and validity the next
    rollout starts from. `on_episode(t, return, length)` hears of every episode that ends. `act`:
    agent.act_and_value, compiled with --compile."""
    act = agent.act_and_value if act is None else act
    for t in range(storage.obs.shape[0]):
        storage.obs[t], storage.valid[t] = next_obs, next_valid
        with torch.no_grad():
            action, logprob, _, value = act(next_obs)
        storage.actions[t], storage.logprobs[t], storage.values[t] = action, logprob, value
        obs, reward, terminated, _, info = env.step(action.cpu().numpy())
        storage.rewards[t] = storage.to_device(reward.astype(np.float32))
        storage.terminated[t] = storage.to_device(terminated)
        episode_end = storage.to_device(info["episode_end"])
        storage.episode_end[t] = episode_end
        next_obs, next_valid = storage.to_device(obs), ~episode_end
        if on_episode is not None:
            for ret, length in envs.finished_episodes(info):
                on_episode(t, ret, length)
    return next_obs, next_valid


def training_batch(agent: Agent, storage: RolloutStorage, next_obs: torch.Tensor,
                   cfg: Config) -> dict[str, torch.Tensor]:
    """The rollout with its advantages and returns, flattened over steps and envs."""
    with torch.no_grad():
        next_value = agent.value(next_obs)
    advantages, returns = gae(storage.rewards, storage.values, next_value, storage.terminated,
                              storage.episode_end, storage.valid, cfg.gamma, cfg.gae_lambda)
    batch = {"obs": storage.obs, "actions": storage.actions, "logprobs": storage.logprobs,
             "values": storage.values, "advantages": advantages, "returns": returns, "valid": storage.valid}
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}


def explained_variance(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """1 - Var(returns - values) / Var(returns) over the valid samples, how much the critic explains;
    nan where the returns do not vary. A tensor: computed with masks on the device, no host sync."""
    mask = batch["valid"].float()
    n = mask.sum()

    def var(x):
        mean = (x * mask).sum() / n.clamp(min=1)
        return (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1)

    var_y = var(batch["returns"])
    return torch.where(var_y > 0, 1 - var(batch["returns"] - batch["values"]) / var_y, torch.full_like(var_y, math.nan))


def log_values(stats: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """An update's `losses/` figures, read back from the device in one transfer."""
    names = [*stats, "explained_variance"]
    numbers = torch.stack([*(v.float() for v in stats.values()), explained_variance(batch)]).tolist()
    return {f"losses/{k}": x for k, x in zip(names, numbers)}


def make_env(cfg: Config, num_envs: int, render: bool = False, training: bool = True):
    """Training envs normalize rewards (with the mujoco preset); evaluation envs report raw returns only."""
    return env_setup.make_env("PPO", cfg.env, num_envs, env_kwargs=cfg.env_kwargs, env_wrappers=cfg.env_wrappers,
                              actions=(gym.spaces.Discrete, gym.spaces.Box), render=render,
                              vector_mode=cfg.vector_mode, sticky_actions=cfg.sticky_actions,
                              normalize_obs=cfg.normalize_obs, normalize_reward=cfg.normalize_reward and training,
                              gamma=cfg.gamma)


def make_agent(cfg: Config, env, device: torch.device) -> Agent:
    def build():
        return Agent(env.single_observation_space.shape, env.single_action_space, cfg.hidden_sizes)

    fits_in_memory(build, copies=4, what=f"the actor-critic (--hidden-sizes {cfg.hidden_sizes})")
    return build().to(device)


def make_optimizer(cfg: Config, params):
    hparams = {"lr": cfg.learning_rate}
    if cfg.adam_eps is not None:
        hparams["eps"] = cfg.adam_eps
    try:
        return optim.build(cfg.optimizer, params, cfg.optimizer_switch, **hparams)
    except ValueError as e:
        fail(f"--optimizer: {e}")


def start(cfg: Config) -> tuple[distributed.World, torch.device]:
    """This process's rank (the process group started under torchrun) and its device."""
    world = distributed.from_env()
    device = devices.pick(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    return distributed.init(device.type), device


def run_state(cfg: Config, world: distributed.World, agent: Agent, optimizer, amp: Precision, c: Counters, env,
              rng: np.random.Generator, shuffle: torch.Generator) -> RunState:
    """Every stateful part of the run by checkpoint key, the same on every rank, so that all restore the
    same weights, optimizer and normalization. Rank 0's draws are the ones saved; the others draw anew
    from where the run stands (counters restore first), not their first run's draws again."""
    state = RunState(agent=agent, optimizer=optimizer).add("grad_scaler", amp, optional=True).add("counters", c)
    state.add("normalization", Adapter(lambda: envs.normalization_state(env),
                                       lambda saved: envs.load_normalization_state(env, saved, freeze=False)))
    if world.is_main:
        return state.add("rng", RNG(rng)).add("shuffle", Adapter(shuffle.get_state, shuffle.set_state))
    state.add("rng", Adapter(lambda: rng_state(rng),
                             lambda _: seed_everything(rank_seeds(cfg, world, c.global_step)[0])))
    return state.add("shuffle", Adapter(shuffle.get_state,
                                        lambda _: shuffle.manual_seed(rank_seeds(cfg, world, c.global_step)[1])))


def rank_seeds(cfg: Config, world: distributed.World, step: int = 0) -> tuple[int, int]:
    """The seeds of this rank's own draws (python, numpy, torch: the actions it samples) and of its
    minibatch shuffling, from the run's seed, the rank and the step the run starts from."""
    return (derived_seed(cfg.seed, RANK_SEED_OFFSET * world.rank + step),
            derived_seed(cfg.seed, RANK_SHUFFLE_SEED_OFFSET * world.rank + step))


def make_session(cfg: Config, world: distributed.World, state: RunState, saved: dict | None, agent: Agent, env,
                 device: torch.device) -> Session:
    """Rank 0's session logs every update, evaluates and checkpoints; the other ranks' restores the same
    state and catches signals, and is never opened."""
    if saved and "lr_schedule" not in saved["config"] and cfg.lr_schedule == "linear":  # --no-anneal-lr, before
        cfg.lr_schedule = "linear" if saved["config"].get("anneal_lr", True) else "constant"

    def play(episodes: int, video: Path | None, stop) -> list[float]:
        return evaluate(cfg, agent, lambda: envs.normalization_state(env), device, episodes, video, stop)

    return Session(cfg, "ppo", envs.resolve(cfg.env).id, state, saved, evaluate=play if world.is_main else None,
                   weights=agent.parameters,
                   intervals={"log": None, "eval": cfg.eval_interval, "checkpoint": cfg.checkpoint_interval},
                   announce=describe_preset(preset_name(cfg), PRESETS[preset_name(cfg)], cfg),
                   may_be_nan=("losses/explained_variance",))


def opened(session: Session, world: distributed.World, step: int) -> Session:
    """Rank 0's session opens the run folder and counts steps/s from here (PPO updates from its first
    rollout); the other ranks' only catch signals."""
    if world.is_main:
        session.open(step).updates_began(step)
    return session


def leave(session: Session, world: distributed.World, env, step: int, failed: Exception | None) -> Path:
    """The end of the run, inside `with session:`. The ranks leave the process group together (a rank
    gone while another still used it could make gloo abort); then rank 0 alone evaluates the final
    weights and saves them (session.finish), or raises what ended its run."""
    env.close()  # its normalization statistics stay readable for the final evaluation
    world.close()
    if failed is not None:
        raise failed
    if not world.is_main:
        if session.stop:
            sys.exit(128 + session.stop.received)
        return Path()
    if world.distributed and not session.stop:
        print(f"trained over {world.size} ranks, parameters identical after every update", file=sys.stderr)
    return session.finish(step)


def fit(cfg: Config, saved: dict | None = None) -> Path:
    """Train, log (rank 0), evaluate and checkpoint; returns the final checkpoint's path (Path() on the
    other ranks). Every rank acts on its share of the envs and sums its gradients with the others'."""
    world, device = start(cfg)
    seed_everything(cfg.seed)  # identical initial weights on every rank, then the rank's own draws
    local_envs = cfg.num_envs // world.size
    env = make_env(cfg, local_envs)
    agent = make_agent(cfg, env, device)
    optimizer = make_optimizer(cfg, param_groups(cfg, {"agent": agent}, {"agent": cfg.learning_rate})["agent"])
    amp = Precision.of(cfg.amp, device)
    draws, shuffling = rank_seeds(cfg, world)
    rng, shuffle = seed_everything(draws), torch.Generator().manual_seed(shuffling)
    obs_space, act_space = env.single_observation_space, env.single_action_space
    storage = RolloutStorage(cfg.num_steps, local_envs, obs_space.shape, obs_space.dtype, act_space.shape,
                             torch.float32 if agent.continuous else torch.int64, device)
    num_updates = iterations(cfg)  # a batch is over all ranks
    loss_fn, act = compiled(ppo_loss, cfg.compile), compiled(agent.act_and_value, cfg.compile)
    c = Counters(update=0, global_step=0)
    session = make_session(cfg, world, run_state(cfg, world, agent, optimizer, amp, c, env, rng, shuffle),
                           saved, agent, env, device)
    schedule = session.lr_schedule([optimizer], num_updates, ("learning_rate",), done=c.update)
    next_obs, _ = env.reset(seed=derived_seed(cfg.seed, c.global_step + local_envs * world.rank))
    next_obs, next_valid = storage.to_device(next_obs), torch.ones(local_envs, dtype=torch.bool, device=device)

    def on_episode(t: int, ret: float, length: int) -> None:  # rank 0's episodes, at the step they ended
        session.episode(ret, length, c.global_step + (t + 1) * cfg.num_envs)

    failed = None  # what ended rank 0's run (a divergence): the other ranks stop with it
    with opened(session, world, c.global_step):
        while c.update < num_updates:
            # Every rank stops at the same update (a signal may reach one rank first, and rank 0 alone
            # checks for divergence): a rank that left early would leave the others in an all-reduce.
            if world.any_(bool(session.stop) or failed is not None, device):
                break
            lr, clip_coef = schedule.lr, cfg.clip_coef * (1.0 - c.update / num_updates if cfg.anneal_clip else 1.0)
            next_obs, next_valid = collect(agent, env, storage, next_obs, next_valid,
                                           on_episode if world.is_main else None, act)
            c.global_step += cfg.num_steps * cfg.num_envs
            batch = training_batch(agent, storage, next_obs, cfg)
            stats = update(agent, optimizer, amp, batch, clip_coef, cfg, world, shuffle, loss_fn)
            schedule.step()
            c.update += 1
            if world.distributed and not world.same_everywhere(agent.parameters()):
                fail(f"ranks' parameters differ after update {c.update}: the all-reduce is broken", code=3)
            if world.is_main:
                try:
                    session.tick(c.global_step, lambda: {**log_values(stats, batch), "charts/learning_rate": lr,
                                                         "charts/clip_coef": clip_coef})
                except Exception as e:  # noqa: BLE001 (raised once the other ranks have left with it)
                    failed = e
        return leave(session, world, env, c.global_step, failed)


def evaluate(cfg: Config, agent: Agent, normalization: Callable[[], dict], device: torch.device, episodes: int,
             video: Path | None = None, stop=None, training: bool = True) -> list[float]:
    """Raw full-episode returns of the deterministic policy, played at once on envs of their own (the
    same seeds each time), with the observation statistics `normalization()` (the training env's), frozen."""
    def make(num_envs: int, render: bool):
        env = make_env(cfg, num_envs, render=render, training=False)
        if cfg.normalize_obs:
            envs.load_normalization_state(env, normalization(), freeze=True)
        return env

    return env_setup.evaluate(make, lambda obs: greedy_actions(agent, obs, device), cfg, episodes, video, stop,
                              training, modules=(agent,))


def greedy_actions(agent: Agent, obs: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        return agent.greedy(torch.as_tensor(obs, device=device)).cpu().numpy()


def restore(cfg: Config, saved: dict, device: torch.device) -> Agent:
    """The agent in `saved` (the checkpoint at `cfg.eval`), on `device`, checked against the env and its
    saved observation statistics."""
    probe = make_env(cfg, 1, training=False)
    try:
        agent = Agent(probe.single_observation_space.shape, probe.single_action_space, cfg.hidden_sizes)
        agent.load_state_dict(saved["agent"])
        envs.load_normalization_state(probe, saved["normalization"], freeze=True)  # it fits the env
    except (RuntimeError, KeyError, ValueError) as e:
        fail(f"{cfg.eval}: the checkpoint's policy does not fit {cfg.env} ({str(e).splitlines()[0]})")
    finally:
        probe.close()
    return agent.to(device)


def policy(cfg: Config, saved: dict, device: torch.device):
    """agents.load's parts: the greedy actions (the Gaussian's mean, the most probable action) for a batch of
    observations, and the env they come from, its observation statistics the checkpoint's, frozen."""
    agent = restore(cfg, saved, device).eval()

    def make(num_envs: int):
        env = make_env(cfg, num_envs, training=False)
        if cfg.normalize_obs:
            envs.load_normalization_state(env, saved["normalization"], freeze=True)
        return env

    return (lambda obs: greedy_actions(agent, obs, device)), make


def run_eval(cfg: Config, saved: dict) -> list[float]:
    """--eval: play `cfg.eval_episodes` episodes with the checkpoint's policy and print the score line."""
    device = devices.pick(cfg.device)
    agent = restore(cfg, saved, device)
    video = env_setup.eval_video(cfg.eval, cfg.capture_video)
    scores = evaluate(cfg, agent, lambda: saved["normalization"], device, cfg.eval_episodes, video,
                      training=False)
    return env_setup.report(cfg.env, scores, video)


TRAINER = lifecycle.Trainer(
    config_cls=Config, kind="ppo", prog="python -m agents.ppo", description=__doc__.split("\n")[0],
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
