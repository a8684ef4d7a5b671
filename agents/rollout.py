"""On-policy rollout storage and generalized advantage estimation (Schulman et al. 2016) for gymnasium
1.x vector envs with next-step autoreset.

Slot t of env e holds the observation o_t an action was taken from and what that step gave. After a
step that ends an episode (`episode_end`: game over or truncation), the env's next step ignores its
action and returns the reset observation with reward 0: that slot is no transition (`valid` False)
and is left out of every loss, but its observation is the episode's *final* one, so its value is
what a truncated episode bootstraps from. Only `terminated` stops the bootstrap; `terminated` or
`episode_end` stops the advantage's sum (a lost life on Atari terminates without an episode end).
"""
from __future__ import annotations

import numpy as np
import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor, terminated: torch.Tensor,
        episode_end: torch.Tensor, valid: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, (T, N) each, from a rollout of T steps of N envs. `next_value` is the
    value of the observation after the last step; invalid (autoreset) slots get advantage 0."""
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        next_values = next_value if t == T - 1 else values[t + 1]
        bootstrap = 1.0 - terminated[t].float()
        delta = rewards[t] + gamma * next_values * bootstrap - values[t]
        carry = 1.0 - (terminated[t] | episode_end[t]).float()
        last = (delta + gamma * lam * carry * last) * valid[t].float()
        advantages[t] = last
    return advantages, advantages + values


class RolloutStorage:
    """T x N steps of observations, actions, log-probabilities, rewards, flags and values, kept on
    `device` (the env boundary is the only host-device copy)."""

    def __init__(self, num_steps: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype,
                 action_shape: tuple[int, ...], action_dtype: torch.dtype, device: torch.device):
        def zeros(*shape, dtype=torch.float32):
            return torch.zeros((num_steps, num_envs, *shape), dtype=dtype, device=device)

        self.device = device
        self.obs = zeros(*obs_shape, dtype=torch.from_numpy(np.zeros(0, dtype=obs_dtype)).dtype)
        self.actions = zeros(*action_shape, dtype=action_dtype)
        self.logprobs = zeros()
        self.rewards = zeros()
        self.values = zeros()
        self.terminated = zeros(dtype=torch.bool)
        self.episode_end = zeros(dtype=torch.bool)
        self.valid = zeros(dtype=torch.bool)

    def to_device(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array)).to(self.device, non_blocking=True)
