"""CleanRL's Atari env, as dqn_atari.py and ppo_atari.py build each of their envs, for bench/cleanrl_*.py.

`gym.make(env_id)` (NoFrameskip-v4: no sticky actions) with RecordEpisodeStatistics, then SB3's
NoopResetEnv(30), MaxAndSkipEnv(4), EpisodicLifeEnv, FireResetEnv (games with FIRE) and ClipRewardEnv
(the wrappers CleanRL imports from stable_baselines3.common.atari_wrappers; the `bench` extra installs
it), then gymnasium's ResizeObservation (84, 84), grayscale and a 4-frame stack, under their gymnasium
1.x names (GrayscaleObservation, FrameStackObservation; 0.29's GrayScaleObservation, FrameStack).
"""
from __future__ import annotations

import ale_py
import gymnasium as gym

try:
    from stable_baselines3.common.atari_wrappers import (ClipRewardEnv, EpisodicLifeEnv, FireResetEnv,
                                                         MaxAndSkipEnv, NoopResetEnv)
except ImportError:
    raise SystemExit("CleanRL's Atari env needs stable-baselines3 (its wrappers): pip install -e '.[bench]'") from None

gym.register_envs(ale_py)


def make_env(env_id: str, seed: int | None = None):
    """A thunk for gym.vector.SyncVectorEnv; `seed` seeds the action space (dqn_atari.py does, ppo_atari.py
    does not)."""
    def thunk():
        env = gym.make(env_id)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = NoopResetEnv(env, noop_max=30)
        env = MaxAndSkipEnv(env, skip=4)
        env = EpisodicLifeEnv(env)
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireResetEnv(env)
        env = ClipRewardEnv(env)
        env = gym.wrappers.ResizeObservation(env, (84, 84))
        env = gym.wrappers.GrayscaleObservation(env)
        env = gym.wrappers.FrameStackObservation(env, 4)
        if seed is not None:
            env.action_space.seed(seed)
        return env

    return thunk
