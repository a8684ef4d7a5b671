"""Making environments by name.

    env = envs.make("Breakout", num_envs=1, seed=0)     # ALE/Breakout-v5, DeepMind preprocessing
    env = envs.make("CartPole-v1", num_envs=4, seed=0)  # any gymnasium id passes through

Every env returned is a gymnasium 1.x vector env with next-step autoreset, and every step's info
holds `episode_end` (True where the next step is the autoreset step, which is not a transition)
and `episode` / `_episode` with the finished episodes' returns and lengths. Depends on gymnasium,
ale-py and mujoco only.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.atari import AtariEnv

try:
    import ale_py

    gym.register_envs(ale_py)
except ImportError:  # pragma: no cover - ale-py is a dependency; keep classic control usable without it
    ale_py = None


class UnknownEnvError(ValueError):
    pass


@dataclass(frozen=True)
class EnvSpec:
    """What a user's name resolved to: the gymnasium id, and the ALE game for Atari."""

    id: str
    atari_game: str | None = None

    @property
    def is_atari(self) -> bool:
        return self.atari_game is not None


def _atari_games() -> dict[str, str]:
    """Short name ('Breakout') -> ALE rom id ('breakout') for every ALE v5 game registered."""
    games = {}
    for env_id, spec in gym.registry.items():
        m = re.fullmatch(r"ALE/(\w+)-v5", env_id)
        if m and "game" in spec.kwargs:
            games[m.group(1)] = spec.kwargs["game"]
    return games


def resolve(name: str) -> EnvSpec:
    """`Breakout`, `ALE/Breakout-v5` and the older spellings (`BreakoutNoFrameskip-v4`, `Breakout-v0`)
    -> the Atari game with this toolkit's DeepMind preprocessing; `CartPole-v1`, `HalfCheetah-v5` pass
    through; a name without a version (`HalfCheetah`) takes the newest registered one."""
    games = _atari_games()
    short = re.fullmatch(r"(?:ALE/)?(\w+?)(?:NoFrameskip)?(?:-v\d+)?", name)
    if short and short.group(1) in games:
        game = short.group(1)
        return EnvSpec(f"ALE/{game}-v5", games[game])
    if name in gym.registry:
        return EnvSpec(name)
    versions = sorted(
        (k for k in gym.registry if re.fullmatch(re.escape(name) + r"-v(\d+)", k)),
        key=lambda k: int(k.rsplit("-v", 1)[1]),
    )
    if versions:
        return EnvSpec(versions[-1])
    # Offer Atari games by short name only, not by their many registered spellings.
    choices = list(games) + [k for k in gym.registry if not k.startswith("ALE/") and
                             re.sub(r"(NoFrameskip)?-v\d+$|Deterministic", "", k) not in games]
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else " (an Atari game name like Breakout, or a gymnasium id like CartPole-v1)"
    raise UnknownEnvError(f"unknown environment {name!r}{hint}")


class _EpisodeEnd(gym.vector.VectorWrapper):
    """Adds `info["episode_end"]` to a gymnasium vector env: the step after it is the autoreset."""

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        info["episode_end"] = terminated | truncated
        return obs, reward, terminated, truncated, info


def make(
    name: str,
    num_envs: int = 1,
    seed: int | None = None,
    *,
    sticky_actions: float = 0.25,
    max_frames: int = 108_000,
    noop_max: int = 30,
    render_mode: str | None = None,
) -> gym.vector.VectorEnv:
    """Make `num_envs` copies of env `name`. `seed` seeds the action space's sampling; seed the envs
    themselves with the first `reset(seed=...)` (env i then gets seed + i).

    Atari options (`sticky_actions`, `max_frames`, `noop_max`) apply to ALE games only.
    """
    spec = resolve(name)
    if spec.is_atari:
        if render_mode is not None:
            raise ValueError("Atari envs here render no frames; record the observations instead")
        env = AtariEnv(spec.atari_game, num_envs, repeat_action_probability=sticky_actions,
                       max_frames=max_frames, noop_max=noop_max)
    else:
        env = gym.make_vec(spec.id, num_envs, vectorization_mode="sync", render_mode=render_mode)
        env = _EpisodeEnd(gym.wrappers.vector.RecordEpisodeStatistics(env))
    if seed is not None:
        env.action_space.seed(seed)
    return env


def finished_episodes(info: dict) -> list[tuple[float, int]]:
    """(return, length) of each episode that ended on this step."""
    if "_episode" not in info:
        return []
    done = np.flatnonzero(info["_episode"])
    return [(float(info["episode"]["r"][i]), int(info["episode"]["l"][i])) for i in done]


__all__ = ["make", "resolve", "EnvSpec", "UnknownEnvError", "AtariEnv", "finished_episodes"]
