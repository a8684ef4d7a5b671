"""Continuous control: float32 observations, actions in [-1, 1], running normalization with checkpointable
statistics, truncation's final observation, and clear errors for missing extras."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import envs
from envs.normalize import NormalizeReward, RunningMeanStd


def with_prior(x: np.ndarray, prior_count: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Mean and var of data x (n, ...) pooled with a prior of mean 0, var 1 and weight prior_count."""
    n, m, v = x.shape[0], x.mean(axis=0), x.var(axis=0)
    total = n + prior_count
    return n * m / total, (prior_count * 1.0 + n * v + m**2 * prior_count * n / total) / total


class Scripted(gym.vector.VectorEnv):
    """Two envs whose rewards and episode ends follow a script; records the actions it gets."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, rewards=(), terminated=(), truncated=(), low=(-1.0,), high=(1.0,)):
        self.num_envs = 2
        self.rewards, self.terminated, self.truncated = map(np.asarray, (rewards, terminated, truncated))
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, 2)
        self.single_action_space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32))
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, 2)
        self.t, self.actions = 0, []

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros((2, 1)), {}

    def step(self, actions):
        self.actions.append(np.array(actions))
        t, self.t = self.t, self.t + 1
        return (np.full((2, 1), float(self.t)), self.rewards[t].astype(np.float64), self.terminated[t].astype(bool),
                self.truncated[t].astype(bool), {})


@pytest.mark.parametrize("name", ["HalfCheetah", "Hopper", "Walker2d", "Ant", "Humanoid"])
def test_mujoco_short_names_resolve_to_v5(name):
    assert envs.resolve(name).id == f"{name}-v5"


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3, 2)) for n in (1, 4, 7, 2)]
    data = np.concatenate(batches)
    exact, prior = RunningMeanStd((3, 2), epsilon=0.0), RunningMeanStd((3, 2))
    for b in batches:
        exact.update(b)
        prior.update(b)
    np.testing.assert_allclose(exact.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(exact.var, data.var(axis=0), rtol=1e-12)
    mean, var = with_prior(data)
    np.testing.assert_allclose(prior.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(prior.var, var, rtol=1e-12)
    assert prior.mean.dtype == np.float64 and prior.count == pytest.approx(14 + 1e-4)


def test_observation_normalization_on_pendulum():
    env = envs.make("Pendulum-v1", 2, normalize_obs=True)
    raw_env = envs.make("Pendulum-v1", 2)
    assert env.single_observation_space == gym.spaces.Box(-10, 10, (3,), np.float32)
    obs, _ = env.reset(seed=0)
    raw, _ = raw_env.reset(seed=0)
    seen = [raw]
    actions = np.linspace(-1, 1, 20)
    for a in actions:
        obs, *_ = env.step(np.full((2, 1), a))
        raw, *_ = raw_env.step(np.full((2, 1), a))
        seen.append(raw)
    seen = np.concatenate(seen).astype(np.float64)
    rms = env.rms
    mean, var = with_prior(seen)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(rms.var, var, rtol=1e-6)
    assert obs.dtype == np.float32
    np.testing.assert_allclose(obs, np.clip((raw - rms.mean) / np.sqrt(rms.var + 1e-8), -10, 10), rtol=1e-5, atol=1e-6)


def test_reward_normalization_against_hand_computed_returns():
    # env 0: rewards 1, 2, 3 (terminated), autoreset, 4.  env 1: 0.5 x 4 (truncated), autoreset.
    rewards = [[1, 0.5], [2, 0.5], [3, 0.5], [0, 0.5], [4, 0]]
    terminated = [[0, 0], [0, 0], [1, 0], [0, 0], [0, 0]]
    truncated = [[0, 0], [0, 0], [0, 0], [0, 1], [0, 0]]
    env = NormalizeReward(Scripted(rewards, terminated, truncated), gamma=0.5)
    env.reset()
    # Discounted returns G = 0.5 G + r, zeroed after each episode end; autoreset steps are skipped.
    returns_per_step = [[1, 0.5], [2.5, 0.75], [4.25, 0.875], [0.9375], [4]]
    seen = []
    for t, expected_returns in enumerate(returns_per_step):
        _, reward, *_ = env.step(np.zeros((2, 1)))
        seen += expected_returns
        _, var = with_prior(np.array(seen))
        np.testing.assert_allclose(env.rms.var, var, rtol=1e-12)
        np.testing.assert_allclose(reward, np.array(rewards[t]) / np.sqrt(var + 1e-8), rtol=1e-12)
    assert np.std(seen) == pytest.approx(np.sqrt(env.rms.var), rel=1e-3)  # the prior barely counts


def test_reward_clip():
    env = NormalizeReward(Scripted([[1000.0, -1000.0]], [[0, 0]], [[0, 0]]), clip=10.0)
    env.rms.load_state_dict({"mean": 0.0, "var": 1.0, "count": 1e6})
    env.freeze()
    env.reset()
    np.testing.assert_array_equal(env.step(np.zeros((2, 1)))[1], [10.0, -10.0])


def test_reward_normalization_keeps_raw_episode_returns():
    plain, scaled = envs.make("Pendulum-v1", 1), envs.make("Pendulum-v1", 1, normalize_reward=True)
    plain.reset(seed=1)
    scaled.reset(seed=1)
    raw_sum, scaled_sum = 0.0, 0.0
    for _ in range(200):
        _, r, _, truncated, info = plain.step(np.zeros((1, 1)))
        _, s, _, _, scaled_info = scaled.step(np.zeros((1, 1)))
        raw_sum, scaled_sum = raw_sum + r[0], scaled_sum + s[0]
    assert truncated[0] and info["_episode"][0] and scaled_info["_episode"][0]
    assert scaled_info["episode"]["r"][0] == info["episode"]["r"][0] == pytest.approx(raw_sum)
    assert abs(scaled_sum - raw_sum) > 1.0


def test_actions_in_unit_box_are_rescaled_and_clipped():
    inner = Scripted([[0, 0]] * 3, [[0, 0]] * 3, [[0, 0]] * 3, low=(-2.0, 0.0, 1.0), high=(2.0, 10.0, 3.0))
    env = envs.UnitBoxAction(inner)
    assert env.single_action_space == gym.spaces.Box(-1, 1, (3,), np.float32)
    assert env.action_space.shape == (2, 3)
    actions = np.array([[-1.0, 0.0, 1.0], [0.5, -0.5, 2.0]])
    before = actions.copy()
    env.reset()
    env.step(actions)
    env.step(np.array([[-3.0, 1.0, 0.0], [0.0, 0.25, -0.5]]))
    np.testing.assert_array_equal(actions, before)  # the agent's array is left alone
    np.testing.assert_array_equal(inner.actions[0], [[-2.0, 5.0, 3.0], [1.0, 2.5, 3.0]])
    np.testing.assert_array_equal(inner.actions[1], [[-2.0, 10.0, 2.0], [0.0, 6.25, 1.5]])
    assert inner.actions[0].dtype == np.float32


def test_unbounded_actions_and_discrete_envs_are_left_alone():
    with pytest.raises(ValueError, match="bounded Box"):
        envs.UnitBoxAction(Scripted(low=(-np.inf,), high=(np.inf,)))
    env = envs.make("CartPole-v1", 2)
    assert isinstance(env.single_action_space, gym.spaces.Discrete)
    assert env.single_observation_space.dtype == np.float32


@pytest.mark.parametrize("name, obs_dim, act_dim", [("HalfCheetah-v5", 17, 6), ("Pendulum-v1", 3, 1)])
def test_float32_observations_and_unit_actions(name, obs_dim, act_dim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its compiler warnings to ./MUJOCO_LOG.TXT
    env = envs.make(name, 2, seed=0)
    assert env.single_observation_space.dtype == np.float32 and env.observation_space.dtype == np.float32
    assert env.single_action_space == gym.spaces.Box(-1, 1, (act_dim,), np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (2, obs_dim)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.dtype == np.float32 and obs in env.observation_space
    assert info["episode_end"].shape == (2,)
    env.close()


def test_truncation_returns_the_final_observation_then_autoresets():
    env = envs.make("Pendulum-v1", 1)  # TimeLimit 200; actions in [-1, 1] -> torque in [-2, 2]
    reference = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=3)
    ref_obs, _ = reference.reset(seed=3)
    np.testing.assert_array_equal(obs[0], ref_obs)
    actions = np.resize(np.arange(-8, 9) / 8, 200)  # exact in binary: rescaling adds no rounding
    ref_return = 0.0
    for t, a in enumerate(actions, start=1):
        obs, reward, terminated, truncated, info = env.step(np.array([[a]]))
        ref_obs, ref_reward, ref_term, ref_trunc, _ = reference.step(np.array([2 * a], np.float32))
        ref_return += ref_reward
        assert truncated[0] == ref_trunc == (t == 200) and not terminated[0]
        assert info["episode_end"][0] == truncated[0]
        np.testing.assert_array_equal(obs[0], ref_obs)  # at t=200 too: the final obs, not a reset one
    assert info["_episode"][0] and info["episode"]["l"][0] == 200
    assert info["episode"]["r"][0] == pytest.approx(ref_return)
    # The next step is the autoreset: the action is ignored, the obs is the new episode's first.
    obs, reward, terminated, truncated, info = env.step(np.array([[1.0]]))
    ref_obs, _ = reference.reset()
    np.testing.assert_array_equal(obs[0], ref_obs)
    assert reward[0] == 0 and not (terminated[0] or truncated[0] or info["episode_end"][0])
    assert envs.finished_episodes(info) == []
    for t in range(1, 201):  # a full 200-step episode follows
        *_, truncated, info = env.step(np.array([[0.0]]))
        assert truncated[0] == info["episode_end"][0] == (t == 200)


def test_async_mode_matches_sync():
    sync_env = envs.make("Pendulum-v1", 2, vector_mode="sync")
    async_env = envs.make("Pendulum-v1", 2, vector_mode="async")
    try:
        assert isinstance(async_env.unwrapped, gym.vector.AsyncVectorEnv)
        a, _ = async_env.reset(seed=5)
        s, _ = sync_env.reset(seed=5)
        np.testing.assert_array_equal(a, s)
        for step in range(5):
            action = np.array([[0.5], [-0.25]])
            a, ra, *_ = async_env.step(action)
            s, rs, *_, info = sync_env.step(action)
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, s)
            np.testing.assert_array_equal(ra, rs)
    finally:
        async_env.close()
        sync_env.close()


def test_bad_vector_mode_and_atari_options():
    with pytest.raises(ValueError, match="vector_mode"):
        envs.make("Pendulum-v1", 1, vector_mode="threads")
    with pytest.raises(ValueError, match="other envs only"):
        envs.make("Breakout", 1, normalize_obs=True)


def trained_env():
    env = envs.make("Pendulum-v1", 2, normalize_obs=True, normalize_reward=True)
    env.reset(seed=0)
    for a in np.linspace(-1, 1, 10):
        env.step(np.full((2, 1), a))
    return env


def test_frozen_statistics_do_not_move():
    env = trained_env()
    before = envs.normalization_state(env)
    envs.freeze_normalization(env)
    env.reset(seed=1)
    for _ in range(5):
        obs, *_ = env.step(np.ones((2, 1)))
    assert envs.normalization_state(env) == before
    assert np.abs(obs).max() > 0  # still normalized, with the frozen statistics
    envs.freeze_normalization(env, frozen=False)
    env.step(np.ones((2, 1)))
    after = envs.normalization_state(env)
    assert after["obs"]["count"] > before["obs"]["count"] and after["reward"]["count"] > before["reward"]["count"]


def test_state_round_trip_through_torch_weights_only(tmp_path):
    env = trained_env()
    state = envs.normalization_state(env)
    assert set(state) == {"obs", "reward"}
    torch.save({"model": {"w": torch.zeros(2)}, "env_normalization": state}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["env_normalization"]
    assert loaded == state

    eval_env = envs.make("Pendulum-v1", 1, normalize_obs=True)  # evaluation: observations only
    envs.load_normalization_state(eval_env, loaded)
    assert eval_env.frozen and envs.normalization_state(eval_env) == {"obs": state["obs"]}
    raw_env = envs.make("Pendulum-v1", 1)
    obs, _ = eval_env.reset(seed=7)
    raw, _ = raw_env.reset(seed=7)
    mean, var = np.array(state["obs"]["mean"]), np.array(state["obs"]["var"])
    np.testing.assert_allclose(obs, (raw - mean) / np.sqrt(var + 1e-8), rtol=1e-5, atol=1e-6)
    eval_env.step(np.zeros((1, 1)))
    assert envs.normalization_state(eval_env) == {"obs": state["obs"]}

    with pytest.raises(ValueError, match="observation normalization"):
        envs.load_normalization_state(envs.make("Pendulum-v1", 1), loaded)
    with pytest.raises(ValueError, match="shape"):
        envs.load_normalization_state(envs.make("CartPole-v1", 1, normalize_obs=True), loaded)


@pytest.mark.skipif(importlib.util.find_spec("Box2D") is not None, reason="Box2D is installed here")
def test_missing_box2d_is_one_clear_line():
    for mode in ("sync", "async"):
        with pytest.raises(envs.EnvDependencyError) as err:
            envs.make("LunarLander-v3", 1, vector_mode=mode)
        assert isinstance(err.value, envs.UnknownEnvError) and isinstance(err.value, ValueError)
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("LunarLander-v3 needs Box2D: ") and 'pip install "gymnasium[box2d]"' in message


def test_missing_mujoco_is_one_clear_line():
    code = ("import sys; sys.modules['mujoco'] = None\n"
            "import envs\n"
            "try:\n    envs.make('HalfCheetah')\n"
            "except envs.UnknownEnvError as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == ('EnvDependencyError HalfCheetah-v5 needs MuJoCo: '
                                  'pip install "gymnasium[mujoco]"'), out.stderr


def test_missing_extra_from_the_entry_point():
    gym.register("FakeMujocoThing-v0", entry_point="gymnasium.envs.mujoco.no_such_module:Thing")
    try:
        with pytest.raises(envs.EnvDependencyError,
                           match=r'FakeMujocoThing-v0 needs MuJoCo: pip install "gymnasium\[mujoco\]"'):
            envs.make("FakeMujocoThing-v0")
    finally:
        del gym.registry["FakeMujocoThing-v0"]
