"""Atari as DeepMind and Machado et al. (2018) preprocess it, on ale-py's C++ vector env.

What the learner sees and what is reported differ on purpose:
- the learner gets rewards clipped to {-1, 0, 1} and `terminated` at every loss of a life
  (Mnih et al. 2015), so that value estimates do not bootstrap across a lost life;
- episodes and their returns are reported over the full game (all lives) in raw game score,
  which is what published Atari figures mean (`info["episode"]`, valid where `info["_episode"]`).

ale-py's own `episodic_life=True` restarts the whole game at a life loss, so the agent would only
ever see its first life; its `life_loss_info=True` is the DeepMind behaviour (terminated at a life
loss, the game goes on) and is what we use. The frame stack is not cleared at a life loss, only
at the reset that follows game over or the frame cap.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from ale_py.vector_env import AtariVectorEnv


class AtariEnv(gym.vector.VectorWrapper):
    """`num_envs` Atari games: uint8 observations (N, 4, 84, 84), frameskip 4 with max-pooling,
    up to `noop_max` no-ops and FIRE at reset, sticky actions, `max_frames` as truncation.

    Besides the gymnasium 1.x step API, `info["episode_end"]` is True where the game is over
    (or truncated): the next step is the autoreset step, not a transition.
    """

    def __init__(
        self,
        game: str,
        num_envs: int = 1,
        *,
        repeat_action_probability: float = 0.25,
        max_frames: int = 108_000,
        noop_max: int = 30,
        frame_stack: int = 4,
        num_threads: int = 0,
    ):
        super().__init__(
            AtariVectorEnv(
                game,
                num_envs,
                num_threads=num_threads,
                max_num_frames_per_episode=max_frames,
                repeat_action_probability=repeat_action_probability,
                stack_num=frame_stack,
                noop_max=noop_max,
                life_loss_info=True,
                reward_clipping=False,  # we clip for the learner and keep raw scores for reports
                episodic_life=False,
                use_fire_reset=True,
            )
        )
        self.game = game
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed=None, options=None):
        self._returns[:] = 0
        self._lengths[:] = 0
        self._autoreset[:] = False
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        self.send(actions)
        return self.recv()

    def send(self, actions) -> None:
        """Start a step: the games play `actions` on ale-py's worker threads, which hold no GIL, so this
        process computes meanwhile (a learner's update) until `recv` returns the step."""
        self.env.send(np.asarray(actions))

    def recv(self):
        """Finish the step `send` started; returns what `step` does."""
        obs, raw, terminated, truncated, info = self.env.recv()
        raw = raw.astype(np.float64)
        # The step after game over only resets; it carries no reward and starts a new count.
        self._returns[self._autoreset] = 0
        self._lengths[self._autoreset] = 0
        self._returns += raw
        self._lengths += ~self._autoreset
        game_over = (terminated & (info["lives"] == 0)) | truncated
        info["episode_end"] = game_over
        info["_episode"] = game_over
        info["episode"] = {"r": self._returns.copy(), "l": self._lengths.copy()}
        self._autoreset = game_over.copy()
        return obs, np.sign(raw).astype(np.float32), terminated, truncated, info
