"""What every agent does with its envs: pick the preset family of an env, make the env with one-line
errors, compare env names by what they mean, and play evaluation episodes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np

import envs
from common import lifecycle
from common.errors import fail


def family(env: str) -> str:
    """`atari` for ALE games, `mujoco` for MuJoCo envs, `classic` for any other gymnasium env."""
    try:
        spec = envs.resolve(env)
    except envs.UnknownEnvError as e:
        fail(str(e))
    if spec.is_atari:
        return "atari"
    return "mujoco" if "mujoco" in str(gym.registry[spec.id].entry_point) else "classic"


def canonical(name: str, value):
    """Fixed config fields compared as what they mean: `Breakout` is `ALE/Breakout-v5`, `Adam` is `adam`."""
    if name == "env":
        try:
            return envs.resolve(value).id
        except envs.UnknownEnvError:
            return value
    return value.lower() if name == "optimizer" else value


def make_env(algo: str, name: str, num_envs: int, *, actions: tuple[type, ...], render: bool = False,
             vector_mode: str = "sync", **options) -> gym.vector.VectorEnv:
    """`envs.make` for agent `algo`, refusing with one line what it cannot make or the agent cannot
    take: action spaces other than `actions`, observations other than Atari frames or flat vectors."""
    atari = envs.resolve(name).is_atari
    try:
        env = envs.make(name, num_envs, render_mode="rgb_array" if render and not atari else None,
                        vector_mode="sync" if atari or render else vector_mode, **options)
    except envs.UnknownEnvError as e:
        fail(str(e))
    except (ImportError, TypeError, ValueError, gym.error.Error) as e:  # an env that cannot be made here
        fail(f"cannot make {name}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}")
    if not isinstance(env.single_action_space, actions):
        env.close()
        kinds = " or ".join("discrete" if a is gym.spaces.Discrete else "Box" for a in actions)
        fail(f"{algo} needs {kinds} actions; {name} has {env.single_action_space}")
    shape = env.single_observation_space.shape
    if not (atari or (shape is not None and len(shape) == 1)):
        env.close()
        fail(f"{algo} takes Atari frames or flat vector observations; {name} gives {env.single_observation_space}")
    return env


def play_episodes(env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int, atari: bool,
                  video: Path | None = None, stop=None) -> list[float]:
    """Raw full-episode returns of `episodes` episodes of policy `act` on `env` (reset with the same
    derived seed each time, so every evaluation plays the same starts). Each env plays a fixed quota,
    so short episodes are not over-represented; env 0's first episode is recorded to `video`. Returns
    early, with what it has, once `stop` (a StopSignal) is set."""
    from envs.video import VideoRecorder

    num_envs = env.num_envs
    quota = np.full(num_envs, episodes // num_envs) + (np.arange(num_envs) < episodes % num_envs)
    scores: list[list[float]] = [[] for _ in range(num_envs)]
    recorder = VideoRecorder(video) if video is not None else None
    obs, _ = env.reset(seed=lifecycle.derived_seed(seed, 1_000_003))
    while any(len(s) < q for s, q in zip(scores, quota)) and not stop:
        if recorder is not None:
            recorder.add(obs[0, -1] if atari else env.render()[0])
        obs, _, _, _, info = env.step(act(obs))
        for i in np.flatnonzero(info.get("_episode", ())):
            if len(scores[i]) < quota[i]:
                scores[i].append(float(info["episode"]["r"][i]))
                if recorder is not None and i == 0:
                    try:
                        recorder.close()
                    except RuntimeError as e:
                        fail(f"--capture-video: {e}")
                    recorder = None
    return [s for per_env in scores for s in per_env]


def eval_video(checkpoint: str, capture: bool) -> Path | None:
    """Where `--eval CHECKPOINT --capture-video` writes its mp4: the run folder's videos/."""
    return Path(checkpoint).parent / "videos" / f"eval_{Path(checkpoint).stem}.mp4" if capture else None


def report(env: str, scores: list[float], video: Path | None) -> list[float]:
    """What every agent's --eval prints: the score line, and the video's path."""
    print(lifecycle.score_line(env, scores))
    if video is not None:
        print(f"video: {video}")
    return scores
