"""Running observation and reward normalization for vector envs, with statistics that checkpoint.

The conventions are those of SB3's `VecNormalize` (stable_baselines3/common/vec_env/vec_normalize.py)
and of CleanRL's `ppo_continuous_action.py`, which stacks gymnasium's `NormalizeObservation` and
`NormalizeReward` and clips both to [-10, 10]:

- observations: `clip((obs - mean) / sqrt(var + 1e-8), -10, 10)`, mean and var running over every
  observation seen (reset observations included);
- rewards: `clip(reward / sqrt(var(G) + 1e-8), -10, 10)` where `G = gamma * G + reward` is each env's
  running discounted return, restarted when an episode ends (SB3 resets it on terminated *or*
  truncated; gymnasium 1.x's wrapper only on terminated, carrying a return across a time limit).
  The mean is not subtracted: that would change the sign of rewards.
- statistics use Chan et al.'s parallel update in float64 with a prior of `count = 1e-4` (mean 0,
  var 1), as both do.

Why our own wrappers rather than gymnasium's: their statistics are numpy arrays inside the wrapper
(no way to save them in a `torch.load(weights_only=True)` checkpoint), and they learn from the
next-step autoreset step, which is not a transition. Here `state_dict()` is plain python (lists and
floats), `freeze()` stops the statistics for evaluation, and the autoreset step after an episode end
updates nothing. The learner sees normalized values; `info["episode"]` (recorded further in) keeps
the raw game returns.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class RunningMeanStd:
    """Mean and variance of a stream of batches `(n, *shape)`, in float64."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.shape = tuple(shape)
        self.mean = np.zeros(self.shape, dtype=np.float64)
        self.var = np.ones(self.shape, dtype=np.float64)
        self.count = float(epsilon)

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, dtype=np.float64).reshape((-1, *self.shape))
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and floats: loads with `torch.load(weights_only=True)`."""
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        var = np.asarray(state["var"], dtype=np.float64)
        if mean.shape != self.shape or var.shape != self.shape:
            raise ValueError(f"normalization statistics of shape {mean.shape} do not fit this env's {self.shape}")
        self.mean, self.var, self.count = mean, var, float(state["count"])


class NormalizeObservation(gym.vector.VectorWrapper):
    """Observations `clip((obs - mean) / sqrt(var + epsilon), -clip, clip)` as float32, with running
    mean and var of the raw observations (updated at reset and at every step unless `frozen`)."""

    def __init__(self, env: gym.vector.VectorEnv, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__(env)
        space = env.single_observation_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"observation normalization needs Box observations, not {space}")
        self.rms = RunningMeanStd(space.shape)
        self.clip, self.epsilon, self.frozen = float(clip), float(epsilon), False
        self.single_observation_space = gym.spaces.Box(-self.clip, self.clip, space.shape, np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def freeze(self, frozen: bool = True) -> None:
        self.frozen = frozen

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if not self.frozen:
            self.rms.update(obs)
        z = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.epsilon)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self.normalize(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return self.normalize(obs), reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return self.rms.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.load_state_dict(state)


class NormalizeReward(gym.vector.VectorWrapper):
    """Rewards `clip(reward / sqrt(var(G) + epsilon), -clip, clip)`, `G` each env's discounted return
    (`G = gamma * G + reward`, zeroed at every episode end). The next-step autoreset step (after an
    episode end) neither accumulates nor updates the statistics; neither does anything when `frozen`."""

    def __init__(self, env: gym.vector.VectorEnv, gamma: float = 0.99, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__(env)
        self.rms = RunningMeanStd(())
        self.gamma, self.clip, self.epsilon, self.frozen = float(gamma), float(clip), float(epsilon), False
        self.returns = np.zeros(self.num_envs, dtype=np.float64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    def freeze(self, frozen: bool = True) -> None:
        self.frozen = frozen

    def reset(self, *, seed=None, options=None):
        self.returns[:] = 0
        self._autoreset[:] = False
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        active = ~self._autoreset
        self.returns[active] = self.returns[active] * self.gamma + np.asarray(reward, dtype=np.float64)[active]
        if not self.frozen:
            self.rms.update(self.returns[active])
        self._autoreset = np.asarray(terminated) | np.asarray(truncated)
        self.returns[self._autoreset] = 0
        reward = np.asarray(reward)
        scaled = np.clip(reward / np.sqrt(self.rms.var + self.epsilon), -self.clip, self.clip)
        dtype = reward.dtype if np.issubdtype(reward.dtype, np.floating) else np.float64
        return obs, scaled.astype(dtype), terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return self.rms.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.load_state_dict(state)


def _wrappers(env: gym.vector.VectorEnv):
    while True:
        yield env
        if not isinstance(env, gym.vector.VectorWrapper):
            return
        env = env.env


def _find(env: gym.vector.VectorEnv, cls: type) -> Any:
    return next((w for w in _wrappers(env) if isinstance(w, cls)), None)


def normalization_state(env: gym.vector.VectorEnv) -> dict[str, Any]:
    """The statistics of `env`'s normalizers, for a checkpoint: `{"obs": ..., "reward": ...}` with
    the keys of the normalizers it has (`{}` for none). Plain python: loads with weights_only=True."""
    state = {}
    for key, cls in (("obs", NormalizeObservation), ("reward", NormalizeReward)):
        wrapper = _find(env, cls)
        if wrapper is not None:
            state[key] = wrapper.state_dict()
    return state


def load_normalization_state(env: gym.vector.VectorEnv, state: dict[str, Any], *, freeze: bool = True) -> None:
    """Load statistics saved by `normalization_state` into `env` (an evaluation env: frozen by default).

    Observation statistics must match: a ValueError if one side normalizes observations and the other
    does not, since the agent would see inputs it was not trained on. Reward statistics load where
    both have them and are otherwise ignored (an evaluation env need not scale rewards).
    """
    obs_norm, reward_norm = _find(env, NormalizeObservation), _find(env, NormalizeReward)
    if (obs_norm is None) != ("obs" not in state):
        raise ValueError("the checkpoint's observation normalization does not match the env's: "
                         "make the env with the same normalize_obs as in training")
    if obs_norm is not None:
        obs_norm.load_state_dict(state["obs"])
        obs_norm.freeze(freeze)
    if reward_norm is not None and "reward" in state:
        reward_norm.load_state_dict(state["reward"])
        reward_norm.freeze(freeze)


def freeze_normalization(env: gym.vector.VectorEnv, frozen: bool = True) -> None:
    """Stop (or, with `frozen=False`, restart) every normalizer's statistics in `env`."""
    for wrapper in _wrappers(env):
        if isinstance(wrapper, (NormalizeObservation, NormalizeReward)):
            wrapper.freeze(frozen)
