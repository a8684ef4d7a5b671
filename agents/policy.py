"""A trained agent as a policy in Python, whichever agent wrote its checkpoint:

    import agents
    policy = agents.load("runs/CartPole-v1__dqn__1__1700000000/final.pt")
    env = policy.make_env()                  # the env it trained on, preprocessing included (a vector env)
    obs, _ = env.reset(seed=0)
    actions = policy.act(obs)                # a batch of observations -> a batch of actions
    action = policy.act(obs[0])              # one observation -> one action

Exploration is off: DQN acts greedily, Rainbow with its noisy layers at their means, PPO takes the most
probable action (the Gaussian's mean), SAC tanh of its mean. PPO's env normalizes observations with the
statistics saved in the checkpoint, frozen, as its evaluations do.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common import checkpoint, device as devices
from common.config import config_from_checkpoint
from common.errors import fail

AGENTS = ("dqn", "rainbow", "ppo", "sac")


@dataclass
class Policy:
    """A checkpoint's policy: `act(obs)` and the env it acts in (`make_env`)."""

    kind: str
    """The agent that trained it: dqn, rainbow, ppo or sac."""
    config: Any
    """The run's config (the agent's Config)."""
    checkpoint: Path
    observation_shape: tuple[int, ...]
    """One observation's shape; `act` takes it, or a batch of it."""
    _act: Callable[[np.ndarray], np.ndarray]
    _make_env: Callable[[int], Any]

    def make_env(self, num_envs: int = 1):
        """The env the agent trained on, as it saw it (Atari's frame stack, PPO's observation statistics),
        a gymnasium vector env of `num_envs` envs."""
        return self._make_env(num_envs)

    def act(self, obs) -> np.ndarray:
        """Actions for `obs`, one observation (one action back) or a batch of them (a batch back)."""
        obs = np.asarray(obs)
        single = obs.shape == self.observation_shape
        if not single and obs.shape[1:] != self.observation_shape:
            raise ValueError(f"act() takes observations of shape {self.observation_shape} or a batch of them; "
                             f"got {obs.shape}")
        actions = self._act(obs[None] if single else obs)
        return actions[0] if single else actions


def load(path: str | Path, device: str = "auto") -> Policy:
    """The policy in an agent's checkpoint (final.pt, best.pt or checkpoint.pt of any agent's run, or the run
    folder: its final.pt, else best.pt, else checkpoint.pt), on `device` (auto, cpu, cuda). Anything else is a
    UserError naming the file."""
    from common.lifecycle import checkpoint_in

    path = Path(checkpoint_in(str(path), ("final.pt", "best.pt", "checkpoint.pt"), "agents.load"))
    saved = checkpoint.load(path, kind=None)
    if saved["kind"] not in AGENTS:
        fail(f"{path} is a {saved['kind']!r} checkpoint, not an agent's ({', '.join(AGENTS)}); a generator "
             f"loads with gans.load")
    module = importlib.import_module(f"agents.{saved['kind']}")
    cfg = config_from_checkpoint(module.Config, saved, str(path))
    cfg.eval, cfg.resume, cfg.device = str(path), None, device
    cfg = module.prepare(cfg)
    target = devices.pick(device)
    act, make_env = module.policy(cfg, saved, target)
    probe = make_env(1)
    try:
        shape = tuple(probe.single_observation_space.shape)
    finally:
        probe.close()
    return Policy(saved["kind"], cfg, Path(path), shape, act, make_env)
