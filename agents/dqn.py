"""Deep Q-Network (Mnih et al. 2015, "Human-level control through deep reinforcement learning").

    python -m agents.dqn --env Breakout
    python -m agents.dqn --env CartPole-v1 --total-timesteps 50000 --learning-starts 1000 ...
    python -m agents.dqn --eval runs/ALE_Breakout-v5__dqn__1__1700000000/final.pt

The Nature agent: a Q-network over 4 stacked 84x84 frames, a target network, a Huber loss (the
paper's clipped TD error), epsilon-greedy exploration and uniform replay, trained with RMSprop as
DeepMind ran it (centered, epsilon inside the square root: optim.RMSpropTF).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import envs
import optim
from agents.networks import torso_for
from agents.replay import ReplayMemory
from envs.video import VideoRecorder
from common import checkpoint, cli, device as devices
from common.errors import exits_cleanly, fail
from common.run import Progress, Run, run_name
from common.seeding import rng_state, seed_everything, set_rng_state


@dataclass
class Config:
    """Nature DQN. Defaults are Mnih et al. (2015) unless a field says otherwise."""

    env: str = "Breakout"
    """Atari game (`Breakout`, `Pong`, ...) or a gymnasium id with discrete actions (`CartPole-v1`)."""
    seed: int = 1
    """Seed of torch, numpy, python and the envs."""
    total_timesteps: int = 10_000_000
    """Environment steps (agent steps; 4 frames each on Atari). Nature trained 50M (200M frames)."""
    num_envs: int = 1
    """Parallel environments (Atari: ale-py's C++ vector env)."""
    buffer_size: int = 1_000_000
    """Replay memory capacity in transitions."""
    learning_starts: int = 50_000
    """Steps of experience collected before the first update (and again after --resume)."""
    train_frequency: int = 4
    """Environment steps per gradient update."""
    batch_size: int = 32
    """Transitions per update."""
    gamma: float = 0.99
    """Discount factor."""
    target_network_frequency: int = 10_000
    """Environment steps between copies of the Q-network into the target network."""
    start_e: float = 1.0
    """Initial exploration epsilon."""
    end_e: float = 0.1
    """Final exploration epsilon."""
    exploration_steps: int = 1_000_000
    """Steps over which epsilon anneals linearly from start_e to end_e."""
    optimizer: str = "rmsproptf"
    """Optimizer by name from optim's registry (rmsproptf, adam, rmsprop, lamb, ...)."""
    learning_rate: float = 2.5e-4
    """Learning rate."""
    rmsprop_alpha: float = 0.95
    """Squared-gradient decay (rmsproptf and rmsprop only)."""
    rmsprop_eps: float = 0.01
    """Epsilon (rmsproptf: inside the square root; rmsprop: outside)."""
    max_grad_norm: float = 0.0
    """Clip the gradient's global norm to this; 0 turns clipping off (the Huber loss bounds it already)."""
    sticky_actions: float = 0.25
    """Atari: probability of repeating the previous action (Machado et al. 2018); 0 for Nature-comparable runs."""
    hidden_sizes: tuple[int, ...] = (120, 84)
    """Hidden layers of the Q-network for vector observations (Atari uses the Nature CNN)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    logdir: str = "runs"
    """Folder that holds run folders ({env}__dqn__{seed}__{unix_time})."""
    checkpoint_interval: int = 250_000
    """Environment steps between checkpoints (checkpoint.pt in the run folder); 0: only the final one."""
    log_interval: int = 1_000
    """Environment steps between logged losses (each log costs one host-device sync)."""
    resume: str | None = None
    """Checkpoint to continue from, with its config; flags given beside it override that config (e.g. a
    larger --total-timesteps). The replay memory is not saved: it is refilled with --learning-starts
    steps of the restored policy."""
    eval: str | None = None
    """Play --eval-episodes full games with this checkpoint's policy and print mean and std of the score."""
    eval_episodes: int = 10
    """Games played by --eval."""
    eval_epsilon: float = 0.05
    """Epsilon while evaluating."""
    capture_video: bool = False
    """Save an mp4 of one evaluation episode (after training, or with --eval) in the run folder's videos/."""


# What the checkpoint's networks and optimizer state were made for.
FIXED_ON_RESUME = ("env", "hidden_sizes", "optimizer")


def check(cfg: Config) -> None:
    """Reject settings that cannot work, with the flag named, before anything is built."""
    positive = ["total_timesteps", "num_envs", "buffer_size", "train_frequency", "batch_size",
                "target_network_frequency", "exploration_steps", "log_interval", "eval_episodes"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive (got {getattr(cfg, name)})")
    if not cfg.learning_rate > 0:
        fail(f"--learning-rate must be positive (got {cfg.learning_rate})")
    if cfg.learning_starts < 0 or cfg.checkpoint_interval < 0:
        fail("--learning-starts and --checkpoint-interval must not be negative")
    if cfg.buffer_size < cfg.batch_size:
        fail(f"--buffer-size {cfg.buffer_size} is smaller than --batch-size {cfg.batch_size}")
    if cfg.buffer_size < 5 * cfg.num_envs:  # each env's ring needs a 4-frame stack and a next slot
        fail(f"--buffer-size {cfg.buffer_size} is too small for --num-envs {cfg.num_envs} (at least {5 * cfg.num_envs})")
    if not 0.0 <= cfg.gamma <= 1.0:
        fail(f"--gamma must be in [0, 1] (got {cfg.gamma})")
    for name in ("start_e", "end_e", "eval_epsilon", "sticky_actions"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            fail(f"--{name.replace('_', '-')} must be in [0, 1] (got {getattr(cfg, name)})")
    if cfg.optimizer.lower() not in optim.REGISTRY:
        fail(f"unknown optimizer {cfg.optimizer!r}; choose one of: {', '.join(optim.names())}")


class QNetwork(nn.Module):
    """A torso (Nature CNN or MLP) and a linear head with one Q-value per action."""

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, hidden: tuple[int, ...]):
        super().__init__()
        self.torso = torso_for(obs_shape, hidden)
        self.head = nn.Linear(self.torso.out_features, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs))


def td_loss(q_net: QNetwork, target_net: QNetwork, batch: dict[str, torch.Tensor], gamma: float):
    """Huber loss between Q(s, a) and r + gamma * max_a' Q_target(s', a'); no bootstrap past termination."""
    with torch.no_grad():
        next_q = target_net(batch["next_obs"]).max(dim=1).values
        target = batch["rewards"] + gamma * next_q * (~batch["terminated"]).float()
    q = q_net(batch["obs"]).gather(1, batch["actions"].long().unsqueeze(1)).squeeze(1)
    return F.smooth_l1_loss(q, target), q.detach().mean()


def epsilon_at(step: int, cfg: Config) -> float:
    fraction = min(step / cfg.exploration_steps, 1.0)
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
    if cfg.optimizer.lower() in ("rmsproptf", "rmsprop"):
        hparams.update(alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)
    try:
        return optim.build(cfg.optimizer, params, **hparams)
    except ValueError as e:
        fail(str(e))


def make_env(cfg: Config, num_envs: int, render: bool = False):
    try:
        env = envs.make(cfg.env, num_envs, sticky_actions=cfg.sticky_actions,
                        render_mode="rgb_array" if render and not envs.resolve(cfg.env).is_atari else None)
    except envs.UnknownEnvError as e:
        fail(str(e))
    if not hasattr(env.single_action_space, "n"):
        fail(f"DQN needs discrete actions; {cfg.env} has {env.single_action_space}")
    shape = env.single_observation_space.shape
    if not (envs.resolve(cfg.env).is_atari or (shape is not None and len(shape) == 1)):
        fail(f"DQN takes Atari frames or flat vector observations; {cfg.env} gives {env.single_observation_space}")
    return env


def stored_config(saved: dict, path: str) -> Config:
    """The config a checkpoint was trained with."""
    try:
        cfg = Config(**saved["config"])
    except (KeyError, TypeError) as e:
        fail(f"{path} holds a config this version cannot read ({e})")
    cfg.hidden_sizes = tuple(cfg.hidden_sizes)
    return cfg


def train(cfg: Config, saved: dict | None = None) -> Path:
    """Train, log to TensorBoard and checkpoint; returns the final checkpoint's path.

    `saved`: the checkpoint at `cfg.resume`, already loaded, to continue from."""
    check(cfg)
    device = devices.pick(cfg.device)
    rng = seed_everything(cfg.seed)
    env = make_env(cfg, cfg.num_envs)
    obs_shape = env.single_observation_space.shape
    num_actions = int(env.single_action_space.n)

    q_net = QNetwork(obs_shape, num_actions, cfg.hidden_sizes).to(device)
    target_net = copy.deepcopy(q_net)
    optimizer = make_optimizer(cfg, q_net.parameters())
    stacked = len(obs_shape) == 3
    rb = ReplayMemory(
        cfg.buffer_size, cfg.num_envs, obs_shape, env.single_observation_space.dtype,
        frame_stack=obs_shape[0] if stacked else 1,
        action_dtype=np.uint8 if num_actions < 256 else np.int64, device=device,
    )

    global_step, update_debt, learning_starts = 0, 0, cfg.learning_starts
    if saved:
        try:
            q_net.load_state_dict(saved["q_net"])
            target_net.load_state_dict(saved["target_net"])
            optimizer.load_state_dict(saved["optimizer"])
            global_step, update_debt = saved["global_step"], saved["update_debt"]
            set_rng_state(saved["rng"], rng)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            fail(f"cannot resume from {cfg.resume}: it does not match this run ({str(e).splitlines()[0][:200]})")
        if global_step >= cfg.total_timesteps:
            fail(f"{cfg.resume} is already at step {global_step}; pass a larger --total-timesteps to go on")
        folder = Path(cfg.resume).parent
        learning_starts = global_step + cfg.learning_starts  # refill the replay memory first
        print(f"resuming {folder} at step {global_step}; refilling the replay memory for "
              f"{cfg.learning_starts} steps", file=sys.stderr)
    else:
        folder = Path(cfg.logdir) / run_name(envs.resolve(cfg.env).id, "dqn", cfg.seed)
    # Scalars of the checkpoint's own step were logged before it was saved: keep them, purge later ones.
    run = Run(folder, cfg, resume_step=global_step + 1 if saved else None)

    def save(name: str) -> Path:
        return checkpoint.save(folder / name, {
            "config": dataclasses.asdict(cfg),
            "q_net": q_net.state_dict(),
            "target_net": target_net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "global_step": global_step,
            "update_debt": update_debt,
            "rng": rng_state(rng),
        }, kind="dqn")

    def finite() -> bool:
        return all(torch.isfinite(p).all() for p in q_net.parameters())

    def diverged(what: str):
        progress.close()
        run.close()
        kept = (f"the last good checkpoint {folder / 'checkpoint.pt'} is kept" if (folder / "checkpoint.pt").exists()
                else "no checkpoint had been written yet")
        fail(f"training diverged at step {global_step} ({what}); {kept}", code=3)

    obs, _ = env.reset(seed=cfg.seed + global_step)
    progress = Progress(cfg.total_timesteps, initial=global_step)
    loss = q_mean = grad_norm = None
    log_t, log_step, train_t0, train_step0 = time.time(), global_step, None, None
    next_log = global_step + cfg.log_interval
    next_ckpt = global_step + cfg.checkpoint_interval if cfg.checkpoint_interval else math.inf
    with checkpoint.StopSignal() as stop:
        while global_step < cfg.total_timesteps and not stop:
            epsilon = epsilon_at(global_step, cfg)
            actions = act(q_net, obs, epsilon, rng, num_actions, device)
            next_obs, rewards, terminated, truncated, info = env.step(actions)
            rb.add(obs, actions, rewards, terminated, info["episode_end"])
            obs = next_obs
            global_step += cfg.num_envs
            for ret, length in envs.finished_episodes(info):
                run.scalars({"charts/episodic_return": ret, "charts/episodic_length": length}, global_step)
                progress.episode(ret)

            if global_step > learning_starts and rb.can_sample:
                if train_t0 is None:
                    train_t0, train_step0 = time.time(), global_step
                update_debt += cfg.num_envs
                while update_debt >= cfg.train_frequency:
                    update_debt -= cfg.train_frequency
                    batch = rb.sample(cfg.batch_size, rng)
                    loss, q_mean = td_loss(q_net, target_net, batch, cfg.gamma)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    # The norm stays a tensor (no host sync) until logged; unclipped runs compute it
                    # only for the update that precedes a log.
                    if cfg.max_grad_norm > 0:
                        grad_norm = optim.clip.clip_grad_norm_(q_net.parameters(), cfg.max_grad_norm)
                    elif global_step + cfg.train_frequency > next_log:  # the last update before a log
                        grad_norm = optim.clip.grad_norm(q_net.parameters())
                    optimizer.step()
            # Copy whenever global_step crosses a multiple of the target period.
            if global_step // cfg.target_network_frequency != (global_step - cfg.num_envs) // cfg.target_network_frequency:
                target_net.load_state_dict(q_net.state_dict())

            if global_step >= next_log:
                next_log += cfg.log_interval
                sps = (global_step - log_step) / max(time.time() - log_t, 1e-9)
                log_t, log_step = time.time(), global_step
                run.scalars({"charts/SPS": sps, "charts/epsilon": epsilon,
                             "charts/learning_rate": optimizer.param_groups[0]["lr"]}, global_step)
                if loss is not None:
                    values = {"losses/td_loss": loss.item(), "losses/q_values": q_mean.item()}
                    if grad_norm is not None:
                        values["losses/grad_norm"] = grad_norm.item()
                    if not all(math.isfinite(v) for v in values.values()):
                        diverged(f"td_loss={values['losses/td_loss']}")
                    run.scalars(values, global_step)
                progress.update(global_step, sps)
            if global_step >= next_ckpt:
                next_ckpt += cfg.checkpoint_interval
                if not finite():
                    diverged("non-finite weights")
                save("checkpoint.pt")

        if not finite():
            diverged("non-finite weights")
        progress.close()
        path = save("checkpoint.pt")
        if stop:
            print(f"stopped by signal at step {global_step}; resume with --resume {path}", file=sys.stderr)
        else:
            path = save("final.pt")
    env.close()
    if train_t0 is not None:
        train_sps = (global_step - train_step0) / max(time.time() - train_t0, 1e-9)
        print(f"steps/s after learning starts: {train_sps:.1f}", file=sys.stderr)
    if cfg.capture_video and not stop:
        scores = evaluate(cfg, q_net, device, episodes=1, video=folder / "videos" / f"step{global_step}.mp4")
        run.scalar("eval/episodic_return", scores[0], global_step)
    run.close()
    print(f"run folder: {folder}", file=sys.stderr)
    if stop:  # exit as killed by that signal would, so job schedulers know the run did not finish
        sys.exit(128 + stop.received)
    return path


def evaluate(cfg: Config, q_net: QNetwork, device: torch.device, episodes: int,
             video: Path | None = None) -> list[float]:
    """Full-game raw scores of `episodes` episodes at cfg.eval_epsilon; records the first one to `video`."""
    num_envs = 1 if video is not None else min(episodes, 8)
    env = make_env(cfg, num_envs, render=video is not None)
    rng = np.random.default_rng(cfg.seed + 1_000_003)
    # Each env plays a fixed quota, so short episodes are not over-represented in the mean.
    quota = np.full(num_envs, episodes // num_envs) + (np.arange(num_envs) < episodes % num_envs)
    scores: list[list[float]] = [[] for _ in range(num_envs)]
    recorder = VideoRecorder(video) if video is not None else None
    obs, _ = env.reset(seed=cfg.seed + 1_000_003)
    atari = envs.resolve(cfg.env).is_atari
    q_net.eval()
    while any(len(s) < q for s, q in zip(scores, quota)):
        if recorder is not None:
            recorder.add(obs[0, -1] if atari else env.render()[0])
        actions = act(q_net, obs, cfg.eval_epsilon, rng, int(env.single_action_space.n), device)
        obs, _, _, _, info = env.step(actions)
        if "_episode" in info:
            for i in np.flatnonzero(info["_episode"]):
                if len(scores[i]) < quota[i]:
                    scores[i].append(float(info["episode"]["r"][i]))
                    if recorder is not None and i == 0:
                        try:
                            recorder.close()
                        except RuntimeError as e:
                            fail(f"--capture-video: {e}")
                        recorder = None
    env.close()
    q_net.train()
    return [s for per_env in scores for s in per_env]


def run_eval(stored: Config, saved: dict) -> list[float]:
    """Play `stored.eval_episodes` games with the policy in `saved` (the checkpoint at `stored.eval`)."""
    check(stored)
    device = devices.pick(stored.device)
    env = make_env(stored, 1)
    q_net = QNetwork(env.single_observation_space.shape, int(env.single_action_space.n), stored.hidden_sizes)
    env.close()
    try:
        q_net.load_state_dict(saved["q_net"])
    except (RuntimeError, KeyError) as e:
        fail(f"{stored.eval}: the checkpoint's network does not fit {stored.env} ({str(e).splitlines()[0]})")
    q_net.to(device)
    video = Path(stored.eval).parent / "videos" / f"eval_{Path(stored.eval).stem}.mp4" if stored.capture_video else None
    scores = evaluate(stored, q_net, device, stored.eval_episodes, video)
    print(f"{stored.env}: {len(scores)} episodes, score {np.mean(scores):.2f} +/- {np.std(scores):.2f} "
          f"(min {np.min(scores):.1f}, max {np.max(scores):.1f})")
    if video is not None:
        print(f"video: {video}")
    return scores


@exits_cleanly
def main(args: list[str] | None = None) -> None:
    def parse(default=None):
        return cli.parse(Config, args, prog="python -m agents.dqn", description=__doc__.split("\n")[0],
                         default=default)

    cfg = parse()
    path = cfg.eval or cfg.resume
    if not path:
        train(cfg)
        return
    # Flags typed beside --resume/--eval override the checkpoint's config: parse again over it.
    saved = checkpoint.load(path, kind="dqn")
    stored = stored_config(saved, path)
    # Where and how it runs is this invocation's business, not the checkpoint's.
    stored.resume, stored.eval, stored.capture_video, stored.device = None, None, False, "auto"
    cfg = parse(default=stored)
    for name in FIXED_ON_RESUME:
        if getattr(cfg, name) != getattr(stored, name):
            fail(f"--{name.replace('_', '-')} cannot change from the checkpoint's {getattr(stored, name)!r}")
    if cfg.eval:
        run_eval(cfg, saved)
    else:
        train(cfg, saved)


if __name__ == "__main__":
    main()
