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
of the env's family (or `--preset`), printed at start.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gymnasium as gym
import tyro

import envs
import optim
from agents import env_setup, replay
from agents.batches import micro_batches
from agents.networks import MLP, DataEfficientCNN, NatureCNN, NoisyLinear
from common import checkpoint, device as devices, lifecycle
from common.errors import fail
from common.lifecycle import OptimizerAidsConfig, PresetFloat, PresetInt, PresetInts, PresetStr, RunConfig
from common.precision import AmpConfig, Precision, check_amp
from common.run import Progress
from common.seeding import rng_state, seed_everything, set_rng_state


@dataclass
class Config(OptimizerAidsConfig, AmpConfig, RunConfig):
    """Rainbow. Fields that say "preset" take the value of the preset unless typed: atari = Hessel et al.
    (2018), Table 1, with frames counted as agent steps (4 frames each); atari100k = data-efficient
    Rainbow (van Hasselt et al. 2019, "When to use parametric models in reinforcement learning?",
    their table of hyper-parameters); classic = tuned here on CartPole-v1."""

    env: str = "Breakout"
    """Atari game (`Breakout`, `Pong`, ...) or a gymnasium id with discrete actions (`CartPole-v1`)."""
    preset: Optional[Literal["atari", "atari100k", "classic"]] = None
    """Preset for the unset fields; default: atari for Atari games, classic for everything else."""
    total_timesteps: PresetInt = None
    """Environment steps (agent steps; 4 frames each on Atari). Preset atari 10,000,000 (the paper
    trained 50M), atari100k 100,000, classic 30,000."""
    num_envs: int = 1
    """Parallel environments (Atari: ale-py's C++ vector env)."""
    vector_mode: Literal["sync", "async"] = "sync"
    """Gymnasium envs (not Atari): step the envs in this process (sync) or one subprocess each (async)."""
    buffer_size: PresetInt = None
    """Replay memory capacity in transitions. Preset atari 1,000,000; atari100k 100,000; classic 100,000."""
    learning_starts: PresetInt = None
    """Steps played before the first update (after --resume: steps of the restored policy that refill
    the replay memory). Preset atari 20,000 (80k frames); atari100k 1,600; classic 1,000."""
    train_frequency: PresetInt = None
    """Environment steps between rounds of updates. Preset atari 4; atari100k 1; classic 1."""
    gradient_steps: int = 1
    """Gradient updates per round."""
    batch_size: PresetInt = None
    """Transitions per update. Preset atari 32; atari100k 32; classic 64."""
    grad_accum: int = 1
    """Micro-batches per update: each of K equal slices adds its share (1/K) of the batch's mean loss
    to the gradient before the step, under the same noise (the same update, one K-th of the
    activations in memory at a time); priorities are updated for the whole batch."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: PresetInt = None
    """Rewards summed before bootstrapping (multi-step returns). Preset atari 3; atari100k 20; classic 3."""
    target_network_frequency: PresetInt = None
    """Environment steps between copies of the online network into the target network. Preset atari
    8,000 (32k frames); atari100k 2,000 (= 2,000 updates, one per step); classic 500."""
    num_atoms: int = 51
    """Atoms of the return distribution (C51)."""
    v_min: PresetFloat = None
    """Lowest atom. Preset atari -10 (clipped rewards); atari100k -10; classic -100 (|r| <= 1 and
    gamma 0.99 keep returns within +/-100)."""
    v_max: PresetFloat = None
    """Highest atom. Preset atari 10; atari100k 10; classic 100."""
    noisy_sigma: PresetFloat = None
    """sigma0 of the noisy layers' factorised noise (initial sigma = sigma0 / sqrt(inputs)). Preset atari
    0.5 (Fortunato et al. 2018, Hessel et al. 2018); atari100k 0.1; classic 0.5."""
    priority_alpha: float = 0.5
    """Prioritization exponent in [0, 1]: transitions drawn with probability p^alpha / sum p^alpha. After
    --resume the refilled memory's priorities start afresh (at 1, then the largest loss seen)."""
    priority_beta: float = 0.4
    """Importance-sampling exponent at learning_starts, annealed linearly to 1 at total_timesteps."""
    optimizer: str = "adam"
    """Optimizer by name from optim's registry (adam, rmsproptf, rmsprop, lamb, ...)."""
    learning_rate: PresetFloat = None
    """Learning rate. Preset atari 6.25e-5; atari100k 1e-4; classic 1e-3."""
    adam_eps: Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT",
                                                       help_behavior_hint="(default: 1.5e-4 with Adam-family optimizers)")] = None
    """Epsilon of Adam-family optimizers (optim.ADAMS; refused with others): 1.5e-4, the paper's."""
    rmsprop_alpha: Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: 0.95 with RMSprop)")] = None
    """Squared-gradient decay, for rmsproptf and rmsprop only (refused with others): 0.95, DeepMind's."""
    rmsprop_eps: Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: 1e-5 with RMSprop)")] = None
    """Epsilon, for rmsproptf and rmsprop only (refused with others): 1e-5. The loss here is a mean over
    the batch (as Dopamine's and the paper's agents), so DeepMind's 0.01 for a summed loss becomes
    0.01 / 32^2 ~ 1e-5, Dopamine's value for its mean-loss DQN."""
    max_grad_norm: float = 10.0
    """Clip the gradient's global norm to this (0: off). 10, as the dueling network's authors (Wang et
    al. 2016) and data-efficient Rainbow; the Rainbow paper does not list one."""
    sticky_actions: float = 0.25
    """Atari: probability of repeating the previous action (Machado et al. 2018); 0 for paper-comparable runs."""
    torso: PresetStr = None
    """Atari network before the dueling streams: nature (Mnih et al. 2015's convolutions) or
    data-efficient (van Hasselt et al. 2019's two 5x5 stride-5 convolutions). Preset atari nature;
    atari100k data-efficient."""
    hidden_sizes: PresetInts = None
    """MLP layers before the dueling streams, for vector observations. Preset classic 128."""
    noisy_hidden: PresetInt = None
    """Units of each dueling stream's noisy hidden layer. Preset atari 512; atari100k 256; classic 128."""
    checkpoint_interval: PresetInt = None
    """Environment steps between checkpoints (checkpoint.pt in the run folder); 0: only at the end.
    Preset atari 250,000; atari100k 25,000; classic 10,000."""
    log_interval: int = 1_000
    """Environment steps between logged losses (each log costs one host-device sync)."""
    eval_interval: PresetInt = None
    """Environment steps between evaluations during training (--eval-episodes on a separate env, noise
    off, logged as eval/episodic_return; best.pt keeps the best); 0: none. Preset atari 250,000;
    atari100k 25,000; classic 10,000."""
    eval_episodes: int = 10
    """Episodes (full games) per evaluation, during training and with --eval."""
    eval_epsilon: PresetFloat = None
    """Epsilon of random actions while evaluating (noise is off). Preset atari 0.001 (Dopamine's
    Rainbow); atari100k 0.001; classic 0."""
    capture_video: bool = False
    """Save an mp4 of one evaluation episode (after training, or with --eval) in the run folder's videos/."""


ATARI = dict(total_timesteps=10_000_000, buffer_size=1_000_000, learning_starts=20_000, train_frequency=4,
             batch_size=32, n_step=3, target_network_frequency=8_000, v_min=-10.0, v_max=10.0, noisy_sigma=0.5,
             learning_rate=6.25e-5, torso="nature", hidden_sizes=(), noisy_hidden=512, checkpoint_interval=250_000,
             eval_interval=250_000, eval_epsilon=0.001)
# van Hasselt et al. (2019), their hyper-parameter table (data-efficient Rainbow): an update every step, 20-step returns, a
# target update every 2,000 updates, learning from 1,600 steps, lr 1e-4, sigma0 0.1, a smaller CNN.
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
FIXED_ON_RESUME = ("env", "preset", "lr_mult", "optimizer_switch", "hidden_sizes", "noisy_hidden", "noisy_sigma", "torso", "num_atoms", "v_min",
                   "v_max", "optimizer")


def preset_name(cfg: Config) -> str:
    if cfg.preset is not None:
        return cfg.preset
    return "atari" if env_setup.family(cfg.env) == "atari" else "classic"


def prepare(cfg: Config) -> Config:
    """Fill the preset's fields and reject settings that cannot work, flag named, before anything is built."""
    atari = env_setup.family(cfg.env) == "atari"
    if cfg.preset is not None and (cfg.preset != "classic") != atari:
        fail(f"--preset {cfg.preset} is for {'Atari games' if cfg.preset != 'classic' else 'vector observations'}; "
             f"{cfg.env} is {'an Atari game' if atari else 'not an Atari game'}")
    cfg = lifecycle.fill_preset(cfg, PRESETS[preset_name(cfg)])
    cfg.hidden_sizes = tuple(cfg.hidden_sizes)
    lifecycle.positive(cfg, "total_timesteps", "num_envs", "buffer_size", "train_frequency", "gradient_steps",
                       "batch_size", "n_step", "target_network_frequency", "noisy_hidden", "log_interval",
                       "eval_episodes", "learning_rate")
    lifecycle.non_negative(cfg, "learning_starts", "checkpoint_interval", "eval_interval", "max_grad_norm",
                           "noisy_sigma")
    lifecycle.in_unit_interval(cfg, "gamma", "priority_alpha", "priority_beta", "eval_epsilon", "sticky_actions")
    if cfg.torso not in TORSOS:
        fail(f"--torso must be one of {', '.join(TORSOS)} (got {cfg.torso!r})")
    if not 2 <= cfg.num_atoms <= 1024:
        fail(f"--num-atoms must be between 2 and 1,024 (got {cfg.num_atoms})")
    if cfg.batch_size * cfg.num_atoms ** 2 > 1 << 28:  # the projection's (batch, atoms, atoms) shares
        fail(f"--batch-size {cfg.batch_size} with --num-atoms {cfg.num_atoms}: the C51 projection would take "
             f"{cfg.batch_size * cfg.num_atoms ** 2 * 4 / 2**30:.1f} GiB (at most 1 GiB: batch x atoms^2 <= 2^28)")
    if not cfg.v_min < cfg.v_max:
        fail(f"--v-min {cfg.v_min} must be below --v-max {cfg.v_max}")
    try:
        optim.check_drivable(cfg.optimizer)
    except ValueError as e:
        fail(f"--optimizer: {e}")
    lifecycle.check_lr_schedule(cfg)
    lifecycle.check_grad_accum(cfg, "batch_size")
    check_amp(cfg)
    adam, rmsprop = cfg.optimizer.lower() in optim.ADAMS, cfg.optimizer.lower() in optim.RMSPROPS
    lifecycle.family_default(cfg, "adam_eps", 1.5e-4, cfg.optimizer, adam, "Adam epsilon",
                             "Adam-family optimizers (optim.ADAMS)")
    lifecycle.family_default(cfg, "rmsprop_alpha", 0.95, cfg.optimizer, rmsprop, "RMSprop alpha", "rmsproptf and rmsprop")
    lifecycle.family_default(cfg, "rmsprop_eps", 1e-5, cfg.optimizer, rmsprop, "RMSprop eps", "rmsproptf and rmsprop")
    if adam:
        lifecycle.non_negative(cfg, "adam_eps")
    if rmsprop:
        lifecycle.positive(cfg, "rmsprop_eps")  # centred: v - m^2 can be 0
        if not 0.0 <= cfg.rmsprop_alpha < 1.0:
            fail(f"--rmsprop-alpha must be in [0, 1) (got {cfg.rmsprop_alpha})")
    lifecycle.at_most(cfg, "num_envs", 1024, "one process steps them all")
    lifecycle.at_most(cfg, "batch_size", 1 << 20, "a batch lives in memory at once")
    lifecycle.at_most(cfg, "eval_episodes", 100_000, "evaluation plays them all")
    lifecycle.at_most(cfg, "noisy_hidden", 1 << 16, "it is one layer's width")
    if any(h <= 0 or h > 1 << 16 for h in cfg.hidden_sizes):
        fail(f"--hidden-sizes must be between 1 and 65,536 units per layer (got {cfg.hidden_sizes})")
    if cfg.buffer_size < cfg.batch_size:
        fail(f"--buffer-size {cfg.buffer_size} is smaller than --batch-size {cfg.batch_size}")
    least = cfg.num_envs * (4 + cfg.n_step + 1)  # each env's ring: a 4-frame stack and an n-step window
    if cfg.buffer_size < least:
        fail(f"--buffer-size {cfg.buffer_size} is too small for --num-envs {cfg.num_envs} and --n-step {cfg.n_step} "
             f"(at least {least})")
    return cfg


def announce(cfg: Config) -> str:
    name = preset_name(cfg)
    return lifecycle.describe_preset(name, PRESETS[name], cfg)


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
                     support: torch.Tensor):
    """Per-sample KL divergence from the projected n-step target distribution to the network's
    distribution of Q(s, a), and their mean weighted by the importance weights, which is the loss.
    The online network picks the next action, the target network gives its distribution (double Q).
    The KL is the paper's priority; Dopamine's and Kaixhin's Rainbows prioritize by the cross-entropy,
    which adds the target's entropy to each priority (the gradient is the same). Returns the loss, the
    per-sample KLs (detached) and the mean Q(s, a) for logging."""
    rows = torch.arange(len(batch["actions"]), device=support.device)
    with torch.no_grad():
        next_action = q_values(net(batch["next_obs"]), support).argmax(dim=1)
        next_probs = target_net(batch["next_obs"])[rows, next_action].exp()
        discounts = batch["discounts"] * (~batch["terminated"]).float()
        target = project(next_probs, batch["rewards"], discounts, support)
    log_p = net(batch["obs"])[rows, batch["actions"].long()]
    kl = (target * (target.clamp(min=1e-12).log() - log_p)).sum(dim=1)
    loss = (batch["weights"] * kl).mean()
    return loss, kl.detach(), q_values(log_p.detach(), support).mean()


def beta_at(step: int, cfg: Config, origin: int) -> float:
    """The importance-sampling exponent: priority_beta from `origin` (the first run's learning_starts)
    linearly to 1 at total_timesteps (Schaul et al. 2016)."""
    fraction = min(max(step - origin, 0) / max(cfg.total_timesteps - origin, 1), 1.0)
    return cfg.priority_beta + fraction * (1.0 - cfg.priority_beta)


def act(net: RainbowNetwork, obs: np.ndarray, support: torch.Tensor, device: torch.device,
        epsilon: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Greedy actions of the network as it is (training: new noise drawn first, which is how it
    explores; eval mode: its mean), with a share `epsilon` of random actions (evaluation only)."""
    if net.training:
        net.reset_noise()
    with torch.no_grad():
        actions = q_values(net(torch.as_tensor(obs, device=device)), support).argmax(dim=1).cpu().numpy()
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
    return env_setup.make_env("Rainbow", cfg.env, num_envs, actions=(gym.spaces.Discrete,), render=render,
                              vector_mode=cfg.vector_mode, sticky_actions=cfg.sticky_actions)


def make_network(cfg: Config, env, device: torch.device) -> RainbowNetwork:
    def build():
        return RainbowNetwork(env.single_observation_space.shape, int(env.single_action_space.n), cfg)

    # network, target network, gradients and up to 2 optimizer states
    lifecycle.fits_in_memory(build, copies=5, what=f"the network (--noisy-hidden {cfg.noisy_hidden}, "
                                                   f"--num-atoms {cfg.num_atoms})")
    try:
        return build().to(device)
    except (RuntimeError, MemoryError) as e:
        fail(f"cannot build the network: {str(e).splitlines()[0][:160]}")


def make_support(cfg: Config, device: torch.device) -> torch.Tensor:
    return torch.linspace(cfg.v_min, cfg.v_max, cfg.num_atoms, device=device)


def train(cfg: Config, saved: dict | None = None) -> Path:
    """Train, log to TensorBoard, evaluate and checkpoint; returns the final checkpoint's path.

    `saved`: the checkpoint at `cfg.resume`, already loaded, to continue from."""
    device = devices.pick(cfg.device)
    rng = seed_everything(cfg.seed)
    env = make_env(cfg, cfg.num_envs)
    net = make_network(cfg, env, device)
    target_net = copy.deepcopy(net)  # in train mode: its noise is drawn independently per update
    optimizer = make_optimizer(cfg, lifecycle.param_groups(cfg, {"net": net}, {"net": cfg.learning_rate})["net"])
    amp = Precision.of(cfg.amp, device)
    support = make_support(cfg, device)
    rb = replay.for_env(env, cfg.buffer_size, cfg.num_envs, device, n_step=cfg.n_step, gamma=cfg.gamma,
                        prioritized=True, alpha=cfg.priority_alpha)
    if not saved:
        print(announce(cfg), file=sys.stderr)

    global_step, update_debt, learning_starts, best = 0, 0, cfg.learning_starts, -math.inf
    beta_origin = cfg.learning_starts  # kept when --learning-starts only sizes a refill
    if saved:
        try:
            net.load_state_dict(saved["net"])
            target_net.load_state_dict(saved["target_net"])
            optimizer.load_state_dict(saved["optimizer"])
            amp.load_state_dict(saved.get("grad_scaler", {}))
            global_step, update_debt = saved["global_step"], saved["update_debt"]
            best = saved.get("best_eval", -math.inf)
            beta_origin = saved["beta_origin"]
            set_rng_state(saved["rng"], rng)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            fail(f"cannot resume from {cfg.resume}: it does not match this run ({str(e).splitlines()[0][:200]})")
        learning_starts = global_step + cfg.learning_starts  # refill the replay memory first
        print(f"resuming {Path(cfg.resume).parent} at step {global_step}; refilling the replay memory for "
              f"{cfg.learning_starts} steps", file=sys.stderr)
    schedule = lifecycle.lr_schedule(cfg, [optimizer], lifecycle.off_policy_updates(cfg, cfg.train_frequency,
                                                                                  cfg.gradient_steps), saved,
                                     lr_fields=("learning_rate",))
    folder, run = lifecycle.open_run(cfg, envs.resolve(cfg.env).id, "rainbow", global_step if saved else None)
    evaluations = lifecycle.BestCheckpoint(run, best, schedule)

    def save(name: str) -> Path:
        return checkpoint.save(folder / name, {
            "config": dataclasses.asdict(cfg),
            "lr_schedule": schedule.state_dict(),
            "net": net.state_dict(),
            "target_net": target_net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "grad_scaler": amp.state_dict(),
            "global_step": global_step,
            "update_debt": update_debt,
            "best_eval": evaluations.best,
            "beta_origin": beta_origin,
            "rng": rng_state(rng),
        }, kind="rainbow")

    obs, _ = env.reset(seed=lifecycle.derived_seed(cfg.seed, global_step))
    progress = Progress(cfg.total_timesteps, initial=global_step)
    milestones = lifecycle.Milestones(global_step, cfg.log_interval, cfg.eval_interval, cfg.checkpoint_interval)
    loss = q_mean = grad_norm = None
    beta = beta_at(global_step, cfg, beta_origin)
    with checkpoint.StopSignal() as stop:
        while global_step < cfg.total_timesteps and not stop:
            actions = act(net, obs, support, device)  # fresh noise each step: the exploration
            next_obs, rewards, terminated, truncated, info = env.step(actions)
            rb.add(obs, actions, rewards, terminated, info["episode_end"])
            obs = next_obs
            global_step += cfg.num_envs
            for ret, length in envs.finished_episodes(info):
                run.scalars({"charts/episodic_return": ret, "charts/episodic_length": length}, global_step)
                progress.episode(ret)

            if global_step > learning_starts and rb.can_sample:
                milestones.updates_began(global_step)
                update_debt += cfg.num_envs
                while update_debt >= cfg.train_frequency:
                    update_debt -= cfg.train_frequency
                    beta = beta_at(global_step, cfg, beta_origin)
                    for i in range(cfg.gradient_steps):
                        batch = rb.sample(cfg.batch_size, rng, beta)
                        net.reset_noise()  # new noise for each update, independent in the two networks
                        target_net.reset_noise()
                        optimizer.zero_grad(set_to_none=True)
                        loss, q_mean, kls = 0, 0, []
                        for part in micro_batches(batch, cfg.grad_accum):  # the whole batch when 1
                            with amp.autocast():
                                part_loss, part_kl, part_q = categorical_loss(net, target_net, part, support)
                            amp.backward(part_loss / cfg.grad_accum)
                            loss, q_mean = loss + part_loss.detach() / cfg.grad_accum, q_mean + part_q / cfg.grad_accum
                            kls.append(part_kl)
                        priorities = torch.cat(kls) if len(kls) > 1 else kls[0]
                        amp.unscale_(optimizer)
                        # The norm stays a tensor (no host sync) until logged.
                        if cfg.max_grad_norm > 0:
                            grad_norm = optim.clip.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                        amp.step(optimizer)
                        schedule.step()
                        rb.update_priorities(batch["index"], priorities)
            # Copy whenever global_step crosses a multiple of the target period.
            if global_step // cfg.target_network_frequency != (global_step - cfg.num_envs) // cfg.target_network_frequency:
                target_net.load_state_dict(net.state_dict())

            if milestones.due("log", global_step):
                sps = milestones.steps_per_second(global_step)
                run.scalars({"charts/SPS": sps, "charts/beta": beta,
                             "charts/learning_rate": optimizer.param_groups[0]["lr"]}, global_step)
                if loss is not None:
                    values = {"losses/loss": loss.item(), "losses/q_values": q_mean.item()}
                    if grad_norm is not None:
                        values["losses/grad_norm"] = grad_norm.item()
                    if not all(math.isfinite(v) for v in values.values()):
                        lifecycle.diverged(f"loss={values['losses/loss']}", global_step, folder, progress, run)
                    run.scalars(values, global_step)
                progress.update(global_step, sps)
            if milestones.due("eval", global_step):
                with milestones.paused():
                    scores = evaluate(cfg, net, support, device, cfg.eval_episodes, stop=stop)
                if not stop:  # a signal cut it short: no score to record
                    evaluations.record(scores, global_step, save)
            if milestones.due("checkpoint", global_step):
                if not lifecycle.finite(net.parameters()):
                    lifecycle.diverged("non-finite weights", global_step, folder, progress, run)
                save("checkpoint.pt")

        env.close()
        play = lambda episodes, path, stop: evaluate(cfg, net, support, device, episodes, path, stop)  # noqa: E731
        return lifecycle.finish(global_step, stop, save, net.parameters(), folder, progress, run, milestones,
                                cfg, evaluations, play)


def evaluate(cfg: Config, net: RainbowNetwork, support: torch.Tensor, device: torch.device, episodes: int,
             video: Path | None = None, stop=None) -> list[float]:
    """Full-game raw scores of `episodes` episodes with the noise off (the layers' means) and
    cfg.eval_epsilon, on envs of their own (the same seeds every time, with or without `video`)."""
    env = make_env(cfg, min(episodes, 8), render=video is not None)
    rng = np.random.default_rng(lifecycle.derived_seed(cfg.seed, 1_000_003))
    net.eval()
    try:
        return env_setup.play_episodes(env, lambda obs: act(net, obs, support, device, cfg.eval_epsilon, rng),
                                       episodes, cfg.seed, envs.resolve(cfg.env).is_atari, video, stop)
    finally:
        env.close()
        net.train()


def run_eval(cfg: Config, saved: dict) -> list[float]:
    """Play `cfg.eval_episodes` games with the policy in `saved` (the checkpoint at `cfg.eval`)."""
    device = devices.pick(cfg.device)
    env = make_env(cfg, 1)
    net = RainbowNetwork(env.single_observation_space.shape, int(env.single_action_space.n), cfg)
    env.close()
    try:
        net.load_state_dict(saved["net"])
    except (RuntimeError, KeyError) as e:
        fail(f"{cfg.eval}: the checkpoint's network does not fit {cfg.env} ({str(e).splitlines()[0]})")
    net.to(device)
    video = env_setup.eval_video(cfg.eval, cfg.capture_video)
    return env_setup.report(cfg.env, evaluate(cfg, net, make_support(cfg, device), device, cfg.eval_episodes, video),
                            video)


TRAINER = lifecycle.Trainer(
    config_cls=Config, kind="rainbow", prog="python -m agents.rainbow", description=__doc__.split("\n")[0],
    prepare=prepare, train=train, evaluate=run_eval, fixed_on_resume=FIXED_ON_RESUME, canonical=env_setup.canonical,
)


def main(args: list[str] | None = None):
    return lifecycle.main(TRAINER, args)


if __name__ == "__main__":
    main()
