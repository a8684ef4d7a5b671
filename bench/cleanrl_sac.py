"""CleanRL's SAC (sac_continuous_action.py, vwxyzjn/cleanrl) as its script runs, for the speed benchmarks.

    python bench/cleanrl_sac.py [--env-id HalfCheetah-v5] [--total-timesteps 3000] [--learning-starts 1000]

What a CleanRL user runs, step for step, written out here so that bench/sac_speed.py can time it beside
our trainer in the same run (CleanRL's scripts run from a clone of its repository and pin gymnasium
0.29; they cannot be imported here). It follows the script's
order and parts, not ours:
- envs: a SyncVectorEnv of one `gym.make(env_id)` wrapped in RecordEpisodeStatistics;
- networks: two separate Q networks (fc1-fc2-fc3 over the concatenated observation and action) and their
  two target copies, an actor with fc_mean and fc_logstd heads and action_scale/action_bias buffers,
  and the log-probability with CleanRL's `log(scale (1 - tanh^2) + 1e-6)` correction;
- replay: SB3's ReplayBuffer itself (cleanrl_utils.buffers is a copy of it; the `bench` extra installs
  stable-baselines3), with the script's `handle_timeout_termination=False`;
- optimizers: torch.optim.Adam (its default implementation for the device) over both Q networks (lr
  1e-3) and over the actor (3e-4), Adam for log alpha;
- update order: critics each step; every `policy_frequency` (2) steps, that many actor updates, each
  followed by a no-grad resample for alpha's loss and `alpha = log_alpha.exp().item()`; then the Polyak
  update as a Python loop over each network's parameters; scalars written to TensorBoard every 100 steps.
The only change is gymnasium 1.x's: episode results are read from `infos["episode"]` where
`infos["_episode"]` (1.x has no `final_info`), and next_obs is stored as it comes (1.x gives a truncated
episode's last observation in next_obs and resets on the following step, which the script stores as a
transition, as a naive port does).

Prints `SPS after learning starts: X` (training steps per second from the first update to the end) and
`whole: Y s` (from argument parsing to the end; bench/sac_speed.py times the whole process).
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
    raise SystemExit("bench/cleanrl_sac.py needs stable-baselines3 (CleanRL's replay buffer): "
                     "pip install -e '.[bench]'") from None

LOG_STD_MAX, LOG_STD_MIN = 2, -5


class SoftQNetwork(nn.Module):
    def __init__(self, envs):
        super().__init__()
        n_in = int(np.prod(envs.single_observation_space.shape) + np.prod(envs.single_action_space.shape))
        self.fc1 = nn.Linear(n_in, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 1)

    def forward(self, x, a):
        x = torch.cat([x, a], 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Actor(nn.Module):
    def __init__(self, envs):
        super().__init__()
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        act_dim = int(np.prod(envs.single_action_space.shape))
        self.fc1 = nn.Linear(obs_dim, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc_mean = nn.Linear(256, act_dim)
        self.fc_logstd = nn.Linear(256, act_dim)
        high, low = envs.single_action_space.high, envs.single_action_space.low
        self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, x):
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        log_std = torch.tanh(self.fc_logstd(x))
        return self.fc_mean(x), LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)

    def get_action(self, x):
        mean, log_std = self(x)
        normal = torch.distributions.Normal(mean, log_std.exp())
        x_t = normal.rsample()
        y_t = torch.tanh(x_t)
        action = y_t * self.action_scale + self.action_bias
        log_prob = normal.log_prob(x_t) - torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
        return action, log_prob.sum(1, keepdim=True), torch.tanh(mean) * self.action_scale + self.action_bias


def run(env_id: str, total_timesteps: int, learning_starts: int, device: str, logdir: str, seed: int = 1,
        q_lr: float = 1e-3, policy_lr: float = 3e-4, gamma: float = 0.99, tau: float = 0.005,
        batch_size: int = 256, policy_frequency: int = 2) -> float:
    """The script's main block; returns the training steps/s after learning starts."""
    writer = SummaryWriter(logdir)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    device = torch.device(device)

    def thunk():
        env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))
        env.action_space.seed(seed)
        return env

    envs = gym.vector.SyncVectorEnv([thunk])
    actor = Actor(envs).to(device)
    qf1, qf2 = SoftQNetwork(envs).to(device), SoftQNetwork(envs).to(device)
    qf1_target, qf2_target = SoftQNetwork(envs).to(device), SoftQNetwork(envs).to(device)
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=q_lr)
    actor_optimizer = torch.optim.Adam(list(actor.parameters()), lr=policy_lr)
    target_entropy = -torch.prod(torch.Tensor(envs.single_action_space.shape).to(device)).item()
    log_alpha = torch.zeros(1, requires_grad=True, device=device)
    alpha = log_alpha.exp().item()
    a_optimizer = torch.optim.Adam([log_alpha], lr=q_lr)
    envs.single_observation_space.dtype = np.float32
    rb = ReplayBuffer(1_000_000, envs.single_observation_space, envs.single_action_space, device,
                      n_envs=envs.num_envs, handle_timeout_termination=False)

    obs, _ = envs.reset(seed=seed)
    t0 = None
    for global_step in range(total_timesteps):
        if global_step < learning_starts:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            actions, _, _ = actor.get_action(torch.Tensor(obs).to(device))
            actions = actions.detach().cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)
                break
        real_next_obs = next_obs.copy()
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        obs = next_obs

        if global_step > learning_starts:
            if t0 is None:
                t0 = time.perf_counter()
            data = rb.sample(batch_size)
            observations, b_actions, next_observations = data.observations, data.actions, data.next_observations
            dones, b_rewards = data.dones, data.rewards
            with torch.no_grad():
                next_state_actions, next_state_log_pi, _ = actor.get_action(next_observations)
                qf1_next_target = qf1_target(next_observations, next_state_actions)
                qf2_next_target = qf2_target(next_observations, next_state_actions)
                min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
                next_q_value = b_rewards.flatten() + (1 - dones.flatten()) * gamma * min_qf_next_target.view(-1)
            qf1_a_values = qf1(observations, b_actions).view(-1)
            qf2_a_values = qf2(observations, b_actions).view(-1)
            qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
            qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
            qf_loss = qf1_loss + qf2_loss
            q_optimizer.zero_grad()
            qf_loss.backward()
            q_optimizer.step()

            if global_step % policy_frequency == 0:
                for _ in range(policy_frequency):
                    pi, log_pi, _ = actor.get_action(observations)
                    min_qf_pi = torch.min(qf1(observations, pi), qf2(observations, pi))
                    actor_loss = ((alpha * log_pi) - min_qf_pi).mean()
                    actor_optimizer.zero_grad()
                    actor_loss.backward()
                    actor_optimizer.step()
                    with torch.no_grad():
                        _, log_pi, _ = actor.get_action(observations)
                    alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()
                    a_optimizer.zero_grad()
                    alpha_loss.backward()
                    a_optimizer.step()
                    alpha = log_alpha.exp().item()

            for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
                target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
            for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
                target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)

            if global_step % 100 == 0:
                writer.add_scalar("losses/qf1_values", qf1_a_values.mean().item(), global_step)
                writer.add_scalar("losses/qf2_values", qf2_a_values.mean().item(), global_step)
                writer.add_scalar("losses/qf1_loss", qf1_loss.item(), global_step)
                writer.add_scalar("losses/qf2_loss", qf2_loss.item(), global_step)
                writer.add_scalar("losses/qf_loss", qf_loss.item() / 2.0, global_step)
                writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                writer.add_scalar("losses/alpha", alpha, global_step)
                writer.add_scalar("losses/alpha_loss", alpha_loss.item(), global_step)
    envs.close()
    writer.close()
    if t0 is None:
        raise SystemExit("no update ran: --total-timesteps must exceed --learning-starts + 1")
    return (total_timesteps - learning_starts - 1) / (time.perf_counter() - t0)


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", default="HalfCheetah-v5")
    parser.add_argument("--total-timesteps", type=int, default=3000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logdir:
        sps = run(args.env_id, args.total_timesteps, args.learning_starts, args.device, logdir)
    print(f"SPS after learning starts: {sps:.1f}")
    print(f"whole: {time.perf_counter() - start:.1f} s (from main)")


if __name__ == "__main__":
    main()
