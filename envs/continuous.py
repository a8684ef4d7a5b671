"""Continuous control (MuJoCo, classic control's Pendulum): what PPO and SAC need from a vector env.

Two wrappers, both applied by `envs.make` to every non-Atari env they fit:

- `Float32Observation`: MuJoCo returns float64 observations; networks and replay memories want float32
  (half the bytes, no silent up-casting of a model's weights). Cast once here, and say so in the
  observation space, so that a buffer allocated from `single_observation_space` is float32 too.
- `UnitBoxAction`: the agent always acts in [-1, 1] and the wrapper maps that linearly onto the env's
  [low, high], clipping first. SAC's tanh-squashed policy then needs no per-env action scale
  (CleanRL's `sac_continuous_action.py` carries `action_scale` / `action_bias` in the actor instead),
  and PPO's Gaussian samples outside [-1, 1] are clipped as CleanRL's `ppo_continuous_action.py` does
  with gymnasium's `ClipAction`, while the agent keeps the unclipped sample for its log-probability.
  Only for bounded Box action spaces; `single_action_space` then reads Box(-1, 1).

Running normalization of observations and rewards (SB3's `VecNormalize` conventions) is in
envs/normalize.py.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class Float32Observation(gym.vector.VectorWrapper):
    """Box observations of a wider float dtype (float64) as float32, observation spaces included."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        space = env.single_observation_space
        with np.errstate(over="ignore"):  # bounds beyond float32's range become +-inf
            low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.single_observation_space = gym.spaces.Box(low, high, space.shape, np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs.astype(np.float32), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return obs.astype(np.float32), reward, terminated, truncated, info


class UnitBoxAction(gym.vector.VectorWrapper):
    """Actions in [-1, 1] (clipped to it), mapped linearly onto the env's bounded Box [low, high]:
    `low + (a + 1) / 2 * (high - low)`. The caller's action array is not modified."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        space = env.single_action_space
        if not is_bounded_box(space):
            raise ValueError(f"action rescaling needs a bounded Box action space, not {space}")
        self.low = space.low.astype(np.float64)
        self.high = space.high.astype(np.float64)
        self._dtype = space.dtype
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def actions(self, actions: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return (self.low + (a + 1.0) * 0.5 * (self.high - self.low)).astype(self._dtype)

    def step(self, actions):
        return self.env.step(self.actions(actions))


def is_bounded_box(space: gym.Space) -> bool:
    return (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)
            and bool(np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))))


def needs_float32(space: gym.Space) -> bool:
    return (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)
            and space.dtype != np.float32)
