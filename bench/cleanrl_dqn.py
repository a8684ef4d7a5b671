"""CleanRL's DQN on Atari (dqn_atari.py, vwxyzjn/cleanrl) as its script runs, for the speed benchmarks.

    python bench/cleanrl_dqn.py [--env-id BreakoutNoFrameskip-v4] [--total-timesteps 6000] [--learning-starts 2000]

What a CleanRL user runs, step for step, written out here so that bench/dqn_speed.py can time it beside
our trainer in the same run (CleanRL's scripts run from a clone of its repository and pin gymnasium
0.29; they cannot be imported here). It follows the script's order and parts, not ours:
- env: a SyncVectorEnv of one env wrapped as the script wraps it (bench/cleanrl_atari.py: SB3's Atari
  wrappers, life loss as episode end, clipped rewards, 84x84 grayscale, 4 frames);
- network: the Nature CNN in PyTorch's default layout, `x / 255.0` inside forward;
- replay: SB3's ReplayBuffer itself (the `bench` extra) with the script's `optimize_memory_usage=True`
  and `handle_timeout_termination=False`;
- update order: epsilon from CleanRL's linear schedule each step, `random.random() < epsilon` for a random
  action, else a forward on `torch.Tensor(obs)`; after learning starts, every `train_frequency` (4) steps
  one Adam update (lr 1e-4) of batch 32 on the MSE TD loss, loss and Q values written every 100 steps;
  the target copied every `target_network_frequency` steps by the script's loop over parameters.
The only changes are gymnasium 1.x's: the wrappers' new names, episode results read from
`infos["episode"]` where `infos["_episode"]`, and next_obs stored as it comes (no `final_observation`
in 1.x). The flags are the script's, with a bench's budget as defaults (the script's: 10M steps,
learning from 80k).

Prints `SPS after learning starts: X` (env steps per second from the first update to the end).
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.tensorboard import SummaryWriter

try:
    from stable_baselines3.common.buffers import ReplayBuffer
except ImportError:
    raise SystemExit("bench/cleanrl_dqn.py needs stable-baselines3 (CleanRL's replay buffer): "
                     "pip install -e '.[bench]'") from None

from cleanrl_atari import make_env  # noqa: E402


class QNetwork(nn.Module):
    def __init__(self, env):
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
            nn.Linear(512, env.single_action_space.n))

    def forward(self, x):
        return self.network(x / 255.0)


def linear_schedule(start_e: float, end_e: float, duration: int, t: int):
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


def run(args, logdir: str) -> float:
    """The script's main block; returns env steps/s after learning starts."""
    writer = SummaryWriter(logdir)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = True
    device = torch.device(args.device)
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id, args.seed)])
    q_network = QNetwork(envs).to(device)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
    target_network = QNetwork(envs).to(device)
    target_network.load_state_dict(q_network.state_dict())
    rb = ReplayBuffer(args.buffer_size, envs.single_observation_space, envs.single_action_space, device,
                      optimize_memory_usage=True, handle_timeout_termination=False)

    obs, _ = envs.reset(seed=args.seed)
    t0 = None
    for global_step in range(args.total_timesteps):
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps,
                                  global_step)
        if random.random() < epsilon:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            q_values = q_network(torch.Tensor(obs).to(device))
            actions = torch.argmax(q_values, dim=1).cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)
        real_next_obs = next_obs.copy()
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        obs = next_obs

        if global_step > args.learning_starts:
            if t0 is None:
                t0 = time.perf_counter()
            if global_step % args.train_frequency == 0:
                data = rb.sample(args.batch_size)
                with torch.no_grad():
                    target_max, _ = target_network(data.next_observations).max(dim=1)
                    td_target = data.rewards.flatten() + args.gamma * target_max * (1 - data.dones.flatten())
                old_val = q_network(data.observations).gather(1, data.actions).squeeze()
                loss = F.mse_loss(td_target, old_val)
                if global_step % 100 == 0:
                    writer.add_scalar("losses/td_loss", loss, global_step)
                    writer.add_scalar("losses/q_values", old_val.mean().item(), global_step)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if global_step % args.target_network_frequency == 0:
                for target_param, param in zip(target_network.parameters(), q_network.parameters()):
                    target_param.data.copy_(args.tau * param.data + (1.0 - args.tau) * target_param.data)
    envs.close()
    writer.close()
    if t0 is None:
        raise SystemExit("no update ran: --total-timesteps must exceed --learning-starts + 1")
    return (args.total_timesteps - args.learning_starts - 1) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=6000)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--buffer-size", type=int, default=1_000_000)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--target-network-frequency", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--start-e", type=float, default=1.0)
    parser.add_argument("--end-e", type=float, default=0.01)
    parser.add_argument("--exploration-fraction", type=float, default=0.10)
    parser.add_argument("--learning-starts", type=int, default=2000)
    parser.add_argument("--train-frequency", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logdir:
        sps = run(args, logdir)
    print(f"SPS after learning starts: {sps:.1f}")


if __name__ == "__main__":
    main()
