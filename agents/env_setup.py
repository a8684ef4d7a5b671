"""What every agent does with its envs: pick the preset family of an env, make the env with one-line
errors, compare env names by what they mean, and play evaluation episodes."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

import envs
from common.seeding import EVAL_SEED_OFFSET, derived_seed
from common.errors import fail
from common.session import score_line


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


def parse_env_kwargs(items: tuple[str, ...]) -> dict[str, Any]:
    """--env-kwargs KEY=VALUE ...: each value read as a Python literal (3, 0.5, True, None, 'text', (1, 2)),
    else kept as the text typed."""
    kwargs = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            fail(f"--env-kwargs {item!r}: write KEY=VALUE (e.g. gravity=9.8), KEY a Python name")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[key] = text
    return kwargs


def import_wrappers(paths: tuple[str, ...]) -> tuple:
    """--env-wrappers module:callable ...: each imported (a gymnasium.Wrapper class, or any env -> env)."""
    import importlib

    found = []
    for path in paths:
        module, _, name = path.partition(":")
        if not module or not name:
            fail(f"--env-wrappers {path}: write module:callable, e.g. my_pkg.wrappers:TimeFeature")
        try:
            target = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
        except Exception as e:  # noqa: BLE001 (whatever the import raises, said in one line)
            why = str(e).splitlines()[0][:160] if str(e) else ""
            fail(f"--env-wrappers {path}: cannot import it ({type(e).__name__}: {why}); write module:callable, "
                 f"e.g. my_pkg.wrappers:TimeFeature")
        if not callable(target):
            fail(f"--env-wrappers {path}: not a callable (write module:callable, e.g. my_pkg.wrappers:TimeFeature)")
        found.append(target)
    return tuple(found)


def make_env(algo: str, name: str, num_envs: int, *, actions: tuple[type, ...], render: bool = False,
             vector_mode: str = "sync", env_kwargs: tuple[str, ...] = (), env_wrappers: tuple[str, ...] = (),
             **options) -> gym.vector.VectorEnv:
    """`envs.make` for agent `algo` (with --env-kwargs' keyword arguments and --env-wrappers' wrappers around
    each env), refusing with one line what it cannot make or the agent cannot take: action spaces other than
    `actions`, observations other than Atari frames or flat vectors."""
    try:
        atari = envs.resolve(name).is_atari
    except envs.UnknownEnvError as e:
        fail(str(e))
    try:
        env = envs.make(name, num_envs, render_mode="rgb_array" if render and not atari else None,
                        vector_mode="sync" if atari or render else vector_mode,
                        env_kwargs=parse_env_kwargs(env_kwargs), wrappers=import_wrappers(env_wrappers), **options)
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


# One evaluation plays its episodes at once, one env each (one network call per step for all of
# them), on at most this many envs; more episodes take turns.
MAX_EVAL_ENVS = 64


class Scores(list):
    """An evaluation's raw episode returns; `cut` of them were ended by its step budget, scored as
    they stood (as the 108k-frame cap ends an Atari game)."""

    cut: int = 0


def episode_step_budget(cfg, episodes: int, training: bool) -> int | None:
    """The most agent steps an evaluation episode may take. During training an evaluation plays at
    most the run's own budget (`total_timesteps` agent steps over all its episodes), so that it never
    outlasts the training it checks: a short run of an untrained Atari agent that never presses FIRE
    after a lost life would otherwise play to the 108k-frame cap in every game. At the end of a real
    run that is far more than a full game, and scores stay comparable with published ones. `--eval`
    plays full games (None: no budget beyond the env's own limits)."""
    if not training:
        return None
    return max(cfg.total_timesteps // max(episodes, 1), 1)


def play_episodes(env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int, atari: bool,
                  video: Path | None = None, stop=None, max_episode_steps: int | None = None) -> Scores:
    """Raw full-episode returns of `episodes` episodes of policy `act` on `env` (reset with the same
    derived seed each time, so every evaluation plays the same starts). Each env plays a fixed quota,
    so short episodes are not over-represented; env 0's first episode is recorded to `video`. An
    episode still running after `max_episode_steps` is scored as it stands and ends its env's quota.
    Returns early, with what it has, once `stop` (a StopSignal) is set."""
    from envs.video import VideoRecorder

    num_envs = env.num_envs
    quota = np.full(num_envs, episodes // num_envs) + (np.arange(num_envs) < episodes % num_envs)
    scores: list[list[float]] = [[] for _ in range(num_envs)]
    running = np.zeros(num_envs)  # the current episodes' raw returns so far (non-Atari envs)
    steps = np.zeros(num_envs, dtype=np.int64)
    cut = 0
    recorder = VideoRecorder(video) if video is not None else None
    obs, _ = env.reset(seed=derived_seed(seed, EVAL_SEED_OFFSET))
    while any(len(s) < q for s, q in zip(scores, quota)) and not stop:
        if recorder is not None:
            recorder.add(obs[0, -1] if atari else env.render()[0])
        obs, reward, _, _, info = env.step(act(obs))
        running += reward
        steps += 1
        ended = np.asarray(info.get("_episode", np.zeros(num_envs, dtype=bool)), dtype=bool)
        for i in range(num_envs):
            if len(scores[i]) >= quota[i]:
                continue
            if ended[i]:
                scores[i].append(float(info["episode"]["r"][i]))
            elif max_episode_steps is not None and steps[i] >= max_episode_steps:
                # Atari's env reports the raw score so far each step; others' rewards are raw here
                scores[i].append(float(info["episode"]["r"][i]) if atari else float(running[i]))
                quota[i] = len(scores[i])
                cut += 1
            else:
                continue
            if recorder is not None and i == 0:
                try:
                    recorder.close()
                except RuntimeError as e:
                    fail(f"--capture-video: {e}")
                recorder = None
        running[ended] = 0
        steps[ended] = 0
    out = Scores(s for per_env in scores for s in per_env)
    out.cut = cut
    return out


def evaluate(make_env: Callable[[int, bool], Any], act: Callable[[np.ndarray], np.ndarray], cfg, episodes: int,
             video: Path | None = None, stop=None, training: bool = True, modules: tuple = ()) -> Scores:
    """Every agent's evaluation: `episodes` episodes of `act` (exploration off) at once on envs of their
    own (`make_env(num_envs, render)`), `modules` in eval mode meanwhile, each episode within
    `episode_step_budget`."""
    env = make_env(min(episodes, MAX_EVAL_ENVS), video is not None)
    for m in modules:
        m.eval()
    try:
        return play_episodes(env, act, episodes, cfg.seed, envs.resolve(cfg.env).is_atari, video, stop,
                             episode_step_budget(cfg, episodes, training))
    finally:
        env.close()
        for m in modules:
            m.train()


def restore_policy(cfg, saved: dict, build: Callable[[Any], Any], key: str, make_env: Callable[[int], Any],
                   device) -> Any:
    """--eval: the network `build(env)` makes for the checkpoint's env, with the weights `saved[key]`,
    on `device`; weights that do not fit are one line."""
    env = make_env(1)
    try:
        net = build(env)
    finally:
        env.close()
    try:
        net.load_state_dict(saved[key])
    except (RuntimeError, KeyError, ValueError) as e:
        fail(f"{cfg.eval}: the checkpoint's network does not fit {cfg.env} ({str(e).splitlines()[0]})")
    return net.to(device)


def eval_video(checkpoint: str, capture: bool) -> Path | None:
    """Where `--eval CHECKPOINT --capture-video` writes its mp4: the run folder's videos/."""
    return Path(checkpoint).parent / "videos" / f"eval_{Path(checkpoint).stem}.mp4" if capture else None


def report(env: str, scores: list[float], video: Path | None) -> list[float]:
    """What every agent's --eval prints: the score line, and the video's path."""
    print(score_line(env, scores))
    if video is not None:
        print(f"video: {video}")
    return scores
