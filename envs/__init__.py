"""Making environments by name.

    env = envs.make("Breakout", num_envs=1, seed=0)     # ALE/Breakout-v5, DeepMind preprocessing
    env = envs.make("CartPole-v1", num_envs=4, seed=0)  # any gymnasium id passes through

    env = envs.make("HalfCheetah", num_envs=8, vector_mode="async", normalize_obs=True, normalize_reward=True)

Every env returned is a gymnasium 1.x vector env with next-step autoreset, and every step's info
holds `episode_end` (True where the next step is the autoreset step, which is not a transition)
and `episode` / `_episode` with the finished episodes' returns and lengths, in raw game score
(recorded before any reward clipping or normalization).

Final observations and bootstrapping. With next-step autoreset the observation returned together
with `terminated` or `truncated` True IS the episode's final observation (not a reset one; gymnasium
1.x puts no `final_obs` in info). The following step ignores its action and returns the reset
observation with reward 0 and `episode_end` False: it is no transition, mask it out. So a time-limit
truncation bootstraps from the obs of the truncated step itself (only `terminated` zeroes the
bootstrap), and `episode_end` marks exactly the steps whose successor is such an autoreset step.

Non-Atari envs (envs/continuous.py, envs/normalize.py): float observations arrive as float32, bounded
Box actions are taken in [-1, 1] and rescaled to the env's bounds, and observations and rewards can
be normalized with running statistics that `normalization_state` / `load_normalization_state` carry
from a training env to an evaluation env. A gymnasium env whose extra is not installed (Box2D,
MuJoCo) is an `EnvDependencyError` (an `UnknownEnvError`) naming the pip command.

Depends on gymnasium, ale-py and mujoco (and numpy) only.
"""
from __future__ import annotations

import difflib
import importlib
import os
import re
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.atari import AtariEnv
from envs.continuous import Float32Observation, UnitBoxAction, is_bounded_box, needs_float32
from envs.normalize import (NormalizeObservation, NormalizeReward, RunningMeanStd, freeze_normalization,
                            load_normalization_state, normalization_state)

try:
    import ale_py

    gym.register_envs(ale_py)
except ImportError:  # pragma: no cover - ale-py is a dependency; keep classic control usable without it
    ale_py = None


class UnknownEnvError(ValueError):
    pass


class EnvDependencyError(UnknownEnvError):
    """The env is registered but needs a package that is not installed (its message names the pip
    command). An UnknownEnvError so that callers' `except envs.UnknownEnvError` catch it too."""


VECTOR_MODES = ("sync", "async")

# gymnasium extra -> what to call it in the message
_EXTRA_NAMES = {"box2d": "Box2D", "mujoco": "MuJoCo", "atari": "ale-py", "classic-control": "pygame",
                "toy-text": "pygame", "other": "an optional package"}


@dataclass(frozen=True)
class EnvSpec:
    """What a user's name resolved to: the gymnasium id, the ALE game for Atari, and for `module:EnvId`
    the module whose import registers the env."""

    id: str
    atari_game: str | None = None
    module: str | None = None

    @property
    def is_atari(self) -> bool:
        return self.atari_game is not None

    @property
    def make_id(self) -> str:
        """The id gymnasium makes it by: `module:EnvId` imports the module first, in worker processes too."""
        return f"{self.module}:{self.id}" if self.module else self.id


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
    through; a name without a version (`HalfCheetah`) takes the newest registered one; `module:EnvId`
    (gymnasium's form) imports `module`, which registers `EnvId`."""
    if ":" in name:
        return _resolve_module_env(name)
    games = _atari_games()
    # A registered id that is not an ALE one is itself (gymnasium's Blackjack-v1 is not ALE's Blackjack).
    if name in gym.registry and "ale_py" not in str(gym.registry[name].entry_point):
        return EnvSpec(name)
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
    hint = (f"; did you mean {', '.join(close)}?" if close
            else " (an Atari game name like Breakout, or a gymnasium id like CartPole-v1)")
    raise UnknownEnvError(f"unknown environment {name!r}{hint}")


def _resolve_module_env(name: str) -> EnvSpec:
    """`my_pkg.envs:MyEnv-v0`: the module imported (its import registers the env), then the id looked up."""
    module, _, env_id = name.partition(":")
    if not module or not env_id:
        raise UnknownEnvError(f"{name!r}: write a user env as module:EnvId (e.g. my_pkg.envs:MyEnv-v0)")
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 (whatever the user's module raises on import, said in one line)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnknownEnvError(f"{name}: cannot import module {module!r} ({type(e).__name__}: {first[:160]})") from e
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownEnvError(f"{name}: importing {module} registered no env {env_id!r} (gymnasium.register it "
                              f"in that module){hint}")
    return EnvSpec(env_id, module=module)


def _dependency_error(env_id: str, entry_point, err: Exception) -> EnvDependencyError:
    """One line naming the gymnasium extra to install, from gymnasium's message or the entry point."""
    m = re.search(r"gymnasium\[([\w-]+)\]", str(err))
    extra = m.group(1) if m else None
    if extra is None and isinstance(entry_point, str):
        m = re.match(r"gymnasium\.envs\.(box2d|mujoco)\.|(ale_py)\b", entry_point)
        extra = (m.group(1) or "atari") if m else None
    if extra is None:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return EnvDependencyError(f"{env_id} needs a package that is not installed: {first}")
    hint = " (pip install swig first)" if extra == "box2d" else ""
    return EnvDependencyError(f'{env_id} needs {_EXTRA_NAMES.get(extra, extra)}: '
                              f'pip install "gymnasium[{extra}]"{hint}')


def _check_dependencies(env_id: str) -> None:
    """Import the env's module here, in this process, so that a missing extra is one clear error
    (with async vectorization it would otherwise surface in a worker process)."""
    entry_point = gym.registry[env_id].entry_point
    if not isinstance(entry_point, str):
        return
    try:
        gym.envs.registration.load_env_creator(entry_point)
    except (gym.error.DependencyNotInstalled, ImportError) as err:
        raise _dependency_error(env_id, entry_point, err) from err


_mujoco_quiet = False


def _route_mujoco_warnings() -> None:
    """MuJoCo's warnings as Python warnings, instead of its default of stderr plus a MUJOCO_LOG.TXT in the
    working folder; the deprecation of 'settotalmass', an attribute of gymnasium's own model files (twice
    per HalfCheetah run, nothing a user can act on), is dropped."""
    global _mujoco_quiet
    if _mujoco_quiet:
        return
    import warnings

    import mujoco

    def warn(message: str) -> None:
        if "settotalmass" not in message:
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(warn)
    _mujoco_quiet = True


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
    vector_mode: str = "sync",
    rescale_actions: bool = True,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    gamma: float = 0.99,
    clip_obs: float = 10.0,
    clip_reward: float = 10.0,
    env_kwargs: dict | None = None,
    wrappers: tuple = (),
) -> gym.vector.VectorEnv:
    """Make `num_envs` copies of env `name`. `seed` seeds the action space's sampling; seed the envs
    themselves with the first `reset(seed=...)` (env i then gets seed + i).

    Atari options (`sticky_actions`, `max_frames`, `noop_max`) apply to ALE games only; ALE games run
    on ale-py's threaded C++ vector env and take none of the options below.

    Other gymnasium envs:
    - `vector_mode`: "sync" (all envs in this process) or "async" (one subprocess each).
    - float observations other than float32 (MuJoCo's float64) are cast to float32;
    - `rescale_actions`: a bounded Box action space is offered as Box(-1, 1); actions are clipped to
      it and mapped linearly onto the env's [low, high];
    - `normalize_obs`: observations `clip((obs - mean) / std, -clip_obs, clip_obs)` with running stats;
    - `normalize_reward`: rewards divided by the running std of the `gamma`-discounted return, then
      clipped to +-`clip_reward`. `info["episode"]` keeps the raw returns.
    - `env_kwargs`: keyword arguments of the env's constructor (gymnasium.make's).
    - `wrappers`: callables env -> env applied to each env, innermost first, before everything above.
    Save the statistics with `normalization_state(env)`; load them into an evaluation env (frozen)
    with `load_normalization_state(eval_env, state)`.
    """
    if vector_mode not in VECTOR_MODES:
        raise ValueError(f"unknown vector_mode {vector_mode!r}: use 'sync' or 'async'")
    spec = resolve(name)
    if spec.is_atari:
        if render_mode is not None:
            raise ValueError("Atari envs here render no frames; record the observations instead")
        if vector_mode != "sync" or normalize_obs or normalize_reward or env_kwargs or wrappers:
            raise ValueError("Atari envs run on ale-py's threaded vector env with clipped rewards: vector_mode, "
                             "normalize_obs, normalize_reward, env kwargs and wrappers apply to other envs only")
        env = AtariEnv(spec.atari_game, num_envs, repeat_action_probability=sticky_actions,
                       max_frames=max_frames, noop_max=noop_max)
    else:
        _check_dependencies(spec.id)
        if "mujoco" in str(gym.registry[spec.id].entry_point):
            _route_mujoco_warnings()
        try:
            if render_mode == "rgb_array":
                # frames drawn off screen: pygame's SDL would look for a display (and print an error about
                # XDG_RUNTIME_DIR where there is none) for what needs no window
                os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            # render_mode only when asked for: a user's env need not take the argument
            kwargs = {**(env_kwargs or {}), **({"render_mode": render_mode} if render_mode is not None else {})}
            env = gym.make_vec(spec.make_id, num_envs, vectorization_mode=vector_mode,
                               wrappers=list(wrappers) or None, **kwargs)
        except (gym.error.DependencyNotInstalled, ImportError) as err:
            raise _dependency_error(spec.id, gym.registry[spec.id].entry_point, err) from err
        env = _EpisodeEnd(gym.wrappers.vector.RecordEpisodeStatistics(env))
        if needs_float32(env.single_observation_space):
            env = Float32Observation(env)
        if rescale_actions and is_bounded_box(env.single_action_space):
            env = UnitBoxAction(env)
        if normalize_obs:
            env = NormalizeObservation(env, clip=clip_obs)
        if normalize_reward:
            env = NormalizeReward(env, gamma=gamma, clip=clip_reward)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def finished_episodes(info: dict) -> list[tuple[float, int]]:
    """(return, length) of each episode that ended on this step."""
    if "_episode" not in info:
        return []
    done = np.flatnonzero(info["_episode"])
    return [(float(info["episode"]["r"][i]), int(info["episode"]["l"][i])) for i in done]


__all__ = ["make", "resolve", "EnvSpec", "UnknownEnvError", "EnvDependencyError", "AtariEnv", "finished_episodes",
           "Float32Observation", "UnitBoxAction", "NormalizeObservation", "NormalizeReward", "RunningMeanStd",
           "normalization_state", "load_normalization_state", "freeze_normalization", "VECTOR_MODES"]
