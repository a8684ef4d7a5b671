"""DQN training steps per second on Breakout once learning has started, ours beside a CleanRL-style loop.

    python bench/dqn_speed.py [--steps 4000] [--device auto]

Both loops run the same Nature Q-network and the same schedule (an update of batch 32 every 4 env
steps, epsilon 0.1): they differ in what this toolkit changes.
- ours: ale-py's C++ vector env (envs.make), the one-frame-per-step replay memory, RMSpropTF.
- baseline: gymnasium's AtariPreprocessing + FrameStackObservation wrappers, a replay buffer of
  (obs, next_obs) 4-frame stacks, the same network in PyTorch's default (NCHW) layout,
  torch.optim.RMSprop.
Each first fills its replay with --fill random steps (not timed). Last line:
`train_sps ours=X baseline=Y ratio=R`.
"""
from __future__ import annotations

import argparse
import copy
import time

import ale_py
import gymnasium as gym
import numpy as np
import torch

import envs
import optim
from agents.dqn import QNetwork, td_loss
from agents.replay import ReplayMemory
from common import device as devices

gym.register_envs(ale_py)


class StackedBuffer:
    """The common design: obs and next_obs stored as full stacks (56 KB per Atari transition)."""

    def __init__(self, capacity, obs_shape, device):
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.uint8)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=np.uint8)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.pos, self.full, self.capacity, self.device = 0, False, capacity, device

    def add(self, obs, next_obs, action, reward, terminated):
        i = self.pos
        self.obs[i], self.next_obs[i], self.actions[i] = obs, next_obs, action
        self.rewards[i], self.terminated[i] = reward, terminated
        self.pos = (i + 1) % self.capacity
        self.full |= self.pos == 0

    def sample(self, n, rng):
        idx = rng.integers(0, self.capacity if self.full else self.pos, size=n)
        return {k: torch.as_tensor(v[idx], device=self.device) for k, v in
                (("obs", self.obs), ("next_obs", self.next_obs), ("actions", self.actions),
                 ("rewards", self.rewards), ("terminated", self.terminated))}


class PlainQNetwork(torch.nn.Module):
    """The Nature Q-network as CleanRL writes it: NCHW layout throughout."""

    def __init__(self, num_actions: int = 4):
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
            nn.Linear(512, num_actions))

    def forward(self, x):
        return self.net(x.float() / 255.0)


def greedy(q_net, obs, rng, epsilon, device):
    if rng.random() < epsilon:
        return rng.integers(0, 4, size=1)
    with torch.no_grad():
        return q_net(torch.as_tensor(obs, device=device)).argmax(1).cpu().numpy()


def run_ours(args, device):
    env = envs.make("Breakout", 1, sticky_actions=0.25)
    q = QNetwork((4, 84, 84), 4, ()).to(device)
    target = copy.deepcopy(q)
    opt = optim.build("rmsproptf", q.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01)
    memory = ReplayMemory(args.capacity, 1, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8,
                          device=device)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)

    def step(epsilon, learn):
        nonlocal obs
        action = greedy(q, obs, rng, epsilon, device)
        next_obs, reward, terminated, truncated, info = env.step(action)
        memory.add(obs, action, reward, terminated, info["episode_end"])
        obs = next_obs
        if learn:
            loss, _ = td_loss(q, target, memory.sample(32, rng), 0.99)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return timed(step, args, device)


def run_baseline(args, device):
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.25)
    env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, noop_max=30, terminal_on_life_loss=False)
    env = gym.wrappers.FrameStackObservation(env, 4)
    q = PlainQNetwork(4).to(device)
    target = copy.deepcopy(q)
    opt = torch.optim.RMSprop(q.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)
    buffer = StackedBuffer(args.capacity, (4, 84, 84), device)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)

    def step(epsilon, learn):
        nonlocal obs
        action = int(greedy(q, obs[None], rng, epsilon, device)[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, next_obs, action, np.sign(reward), terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs
        if learn:
            loss, _ = td_loss(q, target, buffer.sample(32, rng), 0.99)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return timed(step, args, device)


def timed(step, args, device) -> float:
    for _ in range(args.fill):
        step(1.0, False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(0.1, i % 4 == 0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4000, help="timed env steps per loop")
    parser.add_argument("--fill", type=int, default=2000, help="untimed random steps that fill the replay first")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = devices.pick(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.steps} timed steps each")
    ours = run_ours(args, device)
    print(f"ours      {ours:8.1f} steps/s")
    baseline = run_baseline(args, device)
    print(f"baseline  {baseline:8.1f} steps/s")
    print(f"train_sps ours={ours:.1f} baseline={baseline:.1f} ratio={ours / baseline:.2f}")


if __name__ == "__main__":
    main()
