"""Deep Q-Network (Mnih et al. 2015, "Human-level control through deep reinforcement learning").

    python -m agents.dqn --env Breakout                  # the Nature agent (preset atari)
    python -m agents.dqn --env CartPole-v1               # preset classic: learns it in 50k steps
    python -m agents.dqn --eval runs/ALE_Breakout-v5__dqn__1__1700000000/final.pt

The Nature agent: a Q-network over 4 stacked 84x84 frames, a target network, the TD error clipped to
[-1, 1] (a Huber loss), epsilon-greedy exploration and uniform replay, trained with RMSprop as
DeepMind ran it (centered, epsilon inside the square root: optim.RMSpropTF). Fields left unset take
the preset of the env's family, printed at start: `atari` (Mnih et al. 2015, as DeepMind's code ran
it) for ALE games, `classic` (RL Zoo's tuned CartPole-v1 DQN) for vector observations.

On Atari the updates an env step pays for run while ale-py plays that step on its own threads, on a
replay memory that already holds the step's observation and action and draws as after the whole
step (agents.off_policy.EnvStep): in effect the order of DeepMind's code (step, store, update).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gymnasium as gym

import envs
import optim
from agents import env_setup, off_policy, replay
from agents.batches import micro_batches
from agents.networks import torso_for
from common import device as devices, lifecycle
from common.compiled import compiled
from common.checks import (BELOW_ONE, LAYER_WIDTH, NON_NEGATIVE, POSITIVE, UNIT, check_fields, check_grad_accum,
                           family_default, fits_in_memory, limit)
from common.config import (OptimizerAidsConfig, PresetFloat, PresetInt, PresetInts, PresetStr, ReplayConfig, RunConfig,
                           describe_preset, fill_preset)
from common.errors import fail
from common.optimizers import check_lr_schedule, off_policy_updates, param_groups
from common.precision import AmpConfig, Precision, check_amp
from common.seeding import EVAL_SEED_OFFSET, derived_seed, seed_everything
from common.session import Session
from common.state import RNG, Adapter, Counters, RunState


@dataclass
class Config(OptimizerAidsConfig, AmpConfig, ReplayConfig, RunConfig):
    """Nature DQN. Fields that say "preset" take the value of the env's preset unless typed:
    atari = Mnih et al. (2015) as DeepMind's Lua code ran it; classic = RL Zoo's tuned CartPole-v1 DQN
    (Raffin et al., rl-baselines3-zoo hyperparams/dqn.yml)."""

    env: str = "Breakout"
    """Atari game (`Breakout`, `Pong`, ...) or a gymnasium id with discrete actions (`CartPole-v1`)."""
    env_kwargs: tuple[str, ...] = ()
    """KEY=VALUE ... passed to the env's constructor (gymnasium envs; each value read as a Python literal:
    3, 0.5, True, 'text'); a user's env is named `module:EnvId`, whose module registers it."""
    env_wrappers: tuple[str, ...] = ()
    """module:callable ... wrapped around each env, innermost first (gymnasium.Wrapper classes, or any env ->
    env), before this toolkit's own wrappers; saved with the run, so that --eval and agents.load rebuild it."""
    total_timesteps: Annotated[PresetInt, POSITIVE] = None
    """Environment steps (agent steps; 4 frames each on Atari). Preset atari 10,000,000 (Nature trained
    50M), classic 50,000."""
    num_envs: Annotated[int, POSITIVE, limit(1024, "one process steps them all")] = 1
    """Parallel environments (Atari: ale-py's C++ vector env)."""
    vector_mode: Literal["sync", "async"] = "sync"
    """Gymnasium envs (not Atari): step the envs in this process (sync) or one subprocess each (async)."""
    buffer_size: Annotated[PresetInt, POSITIVE] = None
    """Replay memory capacity in transitions. Preset atari 1,000,000; classic 100,000."""
    learning_starts: Annotated[PresetInt, NON_NEGATIVE] = None
    """Steps played at start_e (random play) before the first update (after --resume without a saved
    replay: steps of the restored policy that refill it). Preset atari 50,000; classic 1,000."""
    train_frequency: Annotated[PresetInt, POSITIVE] = None
    """Environment steps between rounds of updates. Preset atari 4; classic 256."""
    gradient_steps: Annotated[PresetInt, POSITIVE] = None
    """Gradient updates per round. Preset atari 1; classic 128."""
    batch_size: Annotated[PresetInt, POSITIVE, limit(1 << 20, "a batch lives in memory at once")] = None
    """Transitions per update. Preset atari 32; classic 64."""
    grad_accum: int = 1
    """Micro-batches per update: the batch's loss is summed over K equal slices, each's gradient added
    before the step (the same update, one K-th of the activations in memory at a time)."""
    gamma: Annotated[float, UNIT] = 0.99
    """Discount factor."""
    target_network_frequency: Annotated[PresetInt, POSITIVE] = None
    """Environment steps between copies of the Q-network into the target network. Preset atari 10,000;
    classic 10."""
    start_e: Annotated[float, UNIT] = 1.0
    """Exploration epsilon until learning_starts, from where it anneals."""
    end_e: Annotated[PresetFloat, UNIT] = None
    """Final exploration epsilon. Preset atari 0.1; classic 0.04."""
    exploration_steps: Annotated[PresetInt, POSITIVE] = None
    """Steps over which epsilon anneals linearly from start_e to end_e, counted from learning_starts as
    DeepMind's code and Dopamine count them. Preset atari 1,000,000; classic 8,000."""
    optimizer: PresetStr = None
    """Optimizer by name from optim's registry (rmsproptf, adam, rmsprop, lamb, ...). Preset atari
    rmsproptf (DeepMind's RMSprop); classic adam."""
    learning_rate: Annotated[PresetFloat, POSITIVE] = None
    """Learning rate. Preset atari 2.5e-4; classic 2.3e-3."""
    rmsprop_alpha: Annotated[PresetFloat, BELOW_ONE] = None
    """Squared-gradient decay, for rmsproptf and rmsprop only (refused with other optimizers). 0.95
    with either, as DeepMind's."""
    rmsprop_eps: Annotated[PresetFloat, POSITIVE] = None
    """Epsilon, for rmsproptf (inside the square root) and rmsprop (outside) only. 0.01 with either,
    as DeepMind's, for its loss *summed* over the batch, which is the loss here. Dopamine keeps the
    mean and uses 1e-5 instead: with a mean the gradient is batch_size times smaller, its square
    batch_size^2 times, and 0.01 would swamp it."""
    max_grad_norm: Annotated[float, NON_NEGATIVE] = 0.0
    """Clip the gradient's global norm to this; 0 turns clipping off (the clipped TD error bounds it).
    RL Zoo's CartPole DQN clips at 10 on a mean loss; the classic preset leaves it off (on the summed loss
    here a norm of 10 would clip far more often than theirs), and 5 of 5 seeds evaluate at 500 after
    50k steps without it."""
    sticky_actions: Annotated[float, UNIT] = 0.25
    """Atari: probability of repeating the previous action (Machado et al. 2018); 0 for Nature-comparable runs."""
    hidden_sizes: Annotated[PresetInts, LAYER_WIDTH] = None
    """Hidden layers of the Q-network for vector observations (Atari uses the Nature CNN). Preset
    classic 256 256."""
    checkpoint_interval: Annotated[PresetInt, NON_NEGATIVE] = None
    """Environment steps between checkpoints (checkpoint.pt in the run folder); 0: only at the end.
    Preset atari 250,000; classic 10,000."""
    log_interval: Annotated[int, POSITIVE] = 1_000
    """Environment steps between logged losses (each log costs one host-device sync)."""
    eval_interval: Annotated[PresetInt, NON_NEGATIVE] = None
    """Environment steps between evaluations during training (--eval-episodes on a separate env,
    logged as eval/episodic_return; best.pt keeps the best); 0: none. Preset atari 250,000;
    classic 10,000."""
    eval_episodes: Annotated[int, POSITIVE, limit(100_000, "evaluation plays them all")] = 10
    """Episodes (full games) per evaluation, during training and with --eval, played at once, one env
    each (up to 64). During training an evaluation plays at most --total-timesteps agent steps: each
    episode is cut at total_timesteps / eval_episodes steps and scored as it stands (said when it
    happens), so that it never outlasts the training it checks; --eval plays full games."""
    eval_epsilon: Annotated[PresetFloat, UNIT] = None
    """Epsilon while evaluating. Preset atari 0.05 (Mnih et al.); classic 0 (greedy)."""
    capture_video: bool = False
    """Save an mp4 of one evaluation episode (after training, or with --eval) in the run folder's videos/."""


# Mnih et al. (2015), Extended Data Table 1, as DeepMind's code ran it: the replay start and the
# epsilon schedule count agent steps (4 frames each), and epsilon anneals after the replay start.
ATARI = dict(total_timesteps=10_000_000, buffer_size=1_000_000, learning_starts=50_000, train_frequency=4,
             gradient_steps=1, batch_size=32, target_network_frequency=10_000, end_e=0.1,
             exploration_steps=1_000_000, optimizer="rmsproptf", learning_rate=2.5e-4, hidden_sizes=(),
             checkpoint_interval=250_000, eval_interval=250_000, eval_epsilon=0.05)
# rl-baselines3-zoo's CartPole-v1 DQN (hyperparams/dqn.yml): train_freq 256 with 128 gradient steps,
# target every 10 env steps, exploration fraction 0.16 of 50k steps. It uses a mean loss and clips the
# gradient norm at 10; with our summed loss Adam's unclipped step is the same (Adam is invariant to the
# loss's scale) and the clip is left off.
CLASSIC = dict(total_timesteps=50_000, buffer_size=100_000, learning_starts=1_000, train_frequency=256,
               gradient_steps=128, batch_size=64, target_network_frequency=10, end_e=0.04,
               exploration_steps=8_000, optimizer="adam", learning_rate=2.3e-3, hidden_sizes=(256, 256),
               checkpoint_interval=10_000, eval_interval=10_000, eval_epsilon=0.0)
PRESETS = {"atari": ATARI, "classic": CLASSIC}

# What the checkpoint's networks and optimizer state were made for.
FIXED_ON_RESUME = ("env", "env_kwargs", "env_wrappers", "hidden_sizes", "optimizer", "lr_mult", "optimizer_switch")
# What a checkpoint's loss was: before 2026-12 DQN averaged its Huber loss over the batch, which an
# optimizer state made with the sum cannot continue.
LOSS = "huber-sum"


def preset_name(cfg: Config) -> str:
    """Atari games take the Nature preset; every other env (vector observations) the classic one."""
    return "atari" if env_setup.family(cfg.env) == "atari" else "classic"


def prepare(cfg: Config) -> Config:
    """Fill the preset's fields and check them (each field's declared rules, then what relates fields
    to each other), flag named, before anything is built."""
    cfg = fill_preset(cfg, PRESETS[preset_name(cfg)])
    cfg.hidden_sizes = tuple(cfg.hidden_sizes)
    try:
        optim.check_drivable(cfg.optimizer)
    except ValueError as e:
        fail(f"--optimizer: {e}")
    # optim's policy: a hyper-parameter typed for an optimizer that does not take it is an error; the
    # defaults go only to the optimizers they belong to (RMSprop's alpha as its squared-gradient decay).
    rmsprop = optim.takes_rmsprop_alpha(cfg.optimizer)
    for name, default in (("rmsprop_alpha", 0.95), ("rmsprop_eps", 0.01)):
        family_default(cfg, name, default, cfg.optimizer, rmsprop, "RMSprop " + name.split("_")[1],
                       "rmsproptf and rmsprop")
    check_fields(cfg)
    check_lr_schedule(cfg, updates(cfg), ("learning_rate",))
    check_grad_accum(cfg, "batch_size")
    check_amp(cfg)
    if cfg.buffer_size < cfg.batch_size:
        fail(f"--buffer-size {cfg.buffer_size} is smaller than --batch-size {cfg.batch_size}")
    if cfg.buffer_size < 5 * cfg.num_envs:  # each env's ring needs a 4-frame stack and a next slot
        fail(f"--buffer-size {cfg.buffer_size} is too small for --num-envs {cfg.num_envs} "
             f"(at least {5 * cfg.num_envs})")
    return cfg


def updates(cfg: Config) -> int:
    """The optimizer updates of the run: what --lr-schedule counts."""
    return off_policy_updates(cfg, cfg.train_frequency, cfg.gradient_steps)


def announce(cfg: Config) -> str:
    name = preset_name(cfg)
    return describe_preset(name, PRESETS[name], cfg)


class QNetwork(nn.Module):
    """A torso (Nature CNN or MLP) and a linear head with one Q-value per action."""

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, hidden: tuple[int, ...]):
        super().__init__()
        self.torso = torso_for(obs_shape, hidden)
        self.head = nn.Linear(self.torso.out_features, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs))


def td_loss(q_net: QNetwork, target_net: QNetwork, batch: dict[str, torch.Tensor], gamma: float):
    """Huber loss between Q(s, a) and r + gamma * max_a' Q_target(s', a'), no bootstrap past
    termination, *summed* over the batch: its gradient is DeepMind's, the TD error clipped to [-1, 1]
    per sample and summed (NeuralQLearner's backward of the clipped deltas), the scale RMSpropTF's
    epsilon 0.01 belongs to. Returns the sum and, for logging, the mean Q(s, a)."""
    with torch.no_grad():
        next_q = target_net(batch["next_obs"]).max(dim=1).values
        target = batch["rewards"] + gamma * next_q * (~batch["terminated"]).float()
    q = q_net(batch["obs"]).gather(1, batch["actions"].long().unsqueeze(1)).squeeze(1)
    return F.smooth_l1_loss(q, target, reduction="sum"), q.detach().mean()


def epsilon_at(step: int, cfg: Config, origin: int | None = None) -> float:
    """start_e until `origin` (the first run's learning_starts), then linear to end_e over
    exploration_steps (DeepMind, Dopamine)."""
    origin = cfg.learning_starts if origin is None else origin
    fraction = min(max(step - origin, 0) / cfg.exploration_steps, 1.0)
    return cfg.start_e + fraction * (cfg.end_e - cfg.start_e)


def act(q_net: QNetwork, obs: np.ndarray, epsilon: float, rng: np.random.Generator, num_actions: int,
        device: torch.device) -> np.ndarray:
    """Epsilon-greedy actions for a batch of observations; the network runs only if some env exploits."""
    explore = rng.random(len(obs)) < epsilon
    actions = rng.integers(0, num_actions, size=len(obs))
    if not explore.all():
        with torch.no_grad():
            greedy = q_net(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
        actions = np.where(explore, actions, greedy)
    return actions


def make_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    hparams = {"lr": cfg.learning_rate}
    if optim.takes_rmsprop_alpha(cfg.optimizer):
        hparams.update(alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)
    try:
        return optim.build(cfg.optimizer, params, cfg.optimizer_switch, **hparams)
    except ValueError as e:
        fail(f"--optimizer: {e}")


def make_env(cfg: Config, num_envs: int, render: bool = False):
    return env_setup.make_env("DQN", cfg.env, num_envs, env_kwargs=cfg.env_kwargs, env_wrappers=cfg.env_wrappers,
                              actions=(gym.spaces.Discrete,), render=render,
                              vector_mode=cfg.vector_mode, sticky_actions=cfg.sticky_actions)


def make_q_network(cfg: Config, env, device: torch.device) -> QNetwork:
    def build():
        return QNetwork(env.single_observation_space.shape, int(env.single_action_space.n), cfg.hidden_sizes)

    # network, target network, gradients and up to 2 optimizer states
    fits_in_memory(build, copies=5, what=f"the Q-network (--hidden-sizes {cfg.hidden_sizes})")
    try:
        return build().to(device)
    except (RuntimeError, MemoryError) as e:
        fail(f"cannot build the Q-network {cfg.hidden_sizes}: {str(e).splitlines()[0][:160]}")


def learn(q_net: QNetwork, target_net: QNetwork, optimizer, amp: Precision, batch: dict[str, torch.Tensor],
          cfg: Config, measure_norm: bool = False, loss_fn=td_loss):
    """One update of the Q-network on `batch`: the summed Huber loss (over `cfg.grad_accum` slices;
    `loss_fn` is td_loss, compiled with --compile), the gradient clipped to `cfg.max_grad_norm` when
    set, one optimizer step. Returns the loss per sample, the mean Q(s, a) and the gradient norm (None
    unless clipped or `measure_norm`), as tensors: nothing is read back to the host here."""
    optimizer.zero_grad(set_to_none=True)
    loss = q_mean = 0
    for part in micro_batches(batch, cfg.grad_accum):  # the whole batch when 1
        with amp.autocast():
            part_loss, part_q = loss_fn(q_net, target_net, part, cfg.gamma)
        amp.backward(part_loss)
        loss, q_mean = loss + part_loss.detach(), q_mean + part_q / cfg.grad_accum
    amp.unscale_(optimizer)
    grad_norm = optim.clip.clip_or_measure_(q_net.parameters(), cfg.max_grad_norm, measure_norm)
    amp.step(optimizer)
    return loss / len(batch["actions"]), q_mean, grad_norm


def fit(cfg: Config, saved: dict | None = None) -> Path:
    """Train, log to TensorBoard, evaluate and checkpoint; returns the final checkpoint's path.

    `saved`: the checkpoint at `cfg.resume`, already loaded, to continue from."""
    device = devices.pick(cfg.device)
    rng = seed_everything(cfg.seed)
    env = make_env(cfg, cfg.num_envs)
    num_actions = int(env.single_action_space.n)
    q_net = make_q_network(cfg, env, device)
    target_net = copy.deepcopy(q_net)
    optimizer = make_optimizer(cfg, param_groups(cfg, {"q": q_net}, {"q": cfg.learning_rate})["q"])
    amp = Precision.of(cfg.amp, device)
    rb = replay.for_env(env, cfg.buffer_size, cfg.num_envs, device)
    loss_fn, acting_net = compiled(td_loss, cfg.compile), compiled(q_net, cfg.compile)
    if saved and saved.get("loss") != LOSS:
        fail(f"cannot resume from {cfg.resume}: it was trained with a mean loss by an earlier version, whose "
             f"optimizer state this one cannot continue (--eval still plays it)")
    # exploration_origin: where epsilon's anneal began, kept when --learning-starts only sizes a refill
    c = Counters(global_step=0, update_debt=0, exploration_origin=cfg.learning_starts)
    state = RunState(q_net=q_net, target_net=target_net, optimizer=optimizer).add("grad_scaler", amp, optional=True)
    state.add("rng", RNG(rng)).add("counters", c).add("loss", Adapter(lambda: LOSS, lambda _: None))
    replay_restored = off_policy.add_replay(state, rb, cfg, saved)
    session = Session(cfg, "dqn", envs.resolve(cfg.env).id, state, saved, announce=announce(cfg),
                      evaluate=lambda episodes, video, stop: evaluate(cfg, q_net, device, episodes, video, stop),
                      weights=q_net.parameters, resume_note=off_policy.refill_note(cfg, saved, replay_restored))
    schedule = session.lr_schedule([optimizer], updates(cfg), ("learning_rate",))
    learning_starts = off_policy.learning_starts(cfg, c.global_step, saved is not None, replay_restored,
                                                 c.exploration_origin)
    obs, _ = env.reset(seed=derived_seed(cfg.seed, c.global_step))
    stepper = off_policy.EnvStep(env)
    loss = q_mean = grad_norm = None
    with session.open(c.global_step):
        while c.global_step < cfg.total_timesteps and not session.stop:
            epsilon = epsilon_at(c.global_step, cfg, c.exploration_origin)
            actions = act(acting_net, obs, epsilon, rng, num_actions, device)
            rb.add_observation(obs, actions)  # from here the memory samples as after the step's whole add
            stepper.send(actions)  # Atari: the games play this step on ale-py's threads while its updates run
            step = c.global_step + cfg.num_envs
            if step > learning_starts and rb.can_sample:
                session.updates_began(step)
                # unclipped runs measure the norm only in the round of updates before a log
                log_soon = step + cfg.train_frequency > session.milestones.next_due("log")
                for _ in range(off_policy.rounds_due(c, cfg)):
                    for i in range(cfg.gradient_steps):
                        batch = rb.sample(cfg.batch_size, rng)
                        loss, q_mean, grad_norm = learn(q_net, target_net, optimizer, amp, batch, cfg,
                                                        measure_norm=log_soon and i == cfg.gradient_steps - 1,
                                                        loss_fn=loss_fn)
                        schedule.step()
            next_obs, rewards, terminated, truncated, info = stepper.recv()
            rb.add_outcome(rewards, terminated, info["episode_end"])
            obs = next_obs
            c.global_step = step
            session.episodes(info, c.global_step)
            if off_policy.crossed(c.global_step, cfg.num_envs, cfg.target_network_frequency):
                target_net.load_state_dict(q_net.state_dict())

            session.tick(c.global_step, lambda: {
                "charts/epsilon": epsilon, "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "losses/td_loss": loss, "losses/q_values": q_mean, "losses/grad_norm": grad_norm})
        env.close()
        return session.finish(c.global_step)


def evaluate(cfg: Config, q_net: QNetwork, device: torch.device, episodes: int, video: Path | None = None,
             stop=None, training: bool = True) -> list[float]:
    """Full-game raw scores of `episodes` episodes at cfg.eval_epsilon, played at once on envs of their
    own (the same seeds every time, with or without `video`)."""
    rng = np.random.default_rng(derived_seed(cfg.seed, EVAL_SEED_OFFSET))
    num_actions = q_net.head.out_features
    return env_setup.evaluate(lambda n, render: make_env(cfg, n, render),
                              lambda obs: act(q_net, obs, cfg.eval_epsilon, rng, num_actions, device),
                              cfg, episodes, video, stop, training, modules=(q_net,))


def restore(cfg: Config, saved: dict, device: torch.device) -> QNetwork:
    """The Q-network in `saved` (the checkpoint at `cfg.eval`), on `device`."""
    return env_setup.restore_policy(cfg, saved, lambda env: QNetwork(env.single_observation_space.shape,
                                                                     int(env.single_action_space.n), cfg.hidden_sizes),
                                    "q_net", lambda n: make_env(cfg, n), device)


def policy(cfg: Config, saved: dict, device: torch.device):
    """agents.load's parts: greedy actions for a batch of observations, and the env they come from."""
    q_net = restore(cfg, saved, device).eval()

    def greedy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return q_net(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()

    return greedy, lambda n: make_env(cfg, n)


def run_eval(cfg: Config, saved: dict) -> list[float]:
    """Play `cfg.eval_episodes` games with the policy in `saved` (the checkpoint at `cfg.eval`)."""
    device = devices.pick(cfg.device)
    q_net = restore(cfg, saved, device)
    video = env_setup.eval_video(cfg.eval, cfg.capture_video)
    return env_setup.report(cfg.env, evaluate(cfg, q_net, device, cfg.eval_episodes, video, training=False), video)


TRAINER = lifecycle.Trainer(
    config_cls=Config, kind="dqn", prog="python -m agents.dqn", description=__doc__.split("\n")[0],
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
