"""The replay memory rebuilds exactly the observations the env gave, across episode ends and wrap-around."""
import numpy as np
import pytest

import envs
from agents.replay import ReplayMemory


def collect(env, memory, steps, seed):
    """Random play; returns the observation given at each slot write, per slot, for comparison."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    written = {}  # slot -> obs (num_envs, ...) stored there, latest write wins
    for _ in range(steps):
        actions = rng.integers(0, env.single_action_space.n, size=env.num_envs)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        written[memory.pos] = obs.copy()
        memory.add(obs, actions, rewards, terminated, info["episode_end"])
        obs = next_obs
    return written


def sampleable(memory):
    ages = np.arange(memory.frame_stack - 1, memory.size - 1)
    slots = memory._ages_to_slots(ages)
    pairs = [(s, e) for s in slots for e in range(memory.num_envs) if memory.valid[s, e]]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def test_atari_stacks_equal_env_across_episodes_and_wraparound():
    # A 400-frame cap (100 steps) forces many truncations; Breakout at random also loses games.
    env = envs.make("Breakout", num_envs=2, max_frames=400, sticky_actions=0.0)
    memory = ReplayMemory(600, 2, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8)
    written = collect(env, memory, 700, seed=3)  # 700 steps into 300 slots per env: wrapped twice
    assert memory.size == memory.T == 300
    slots, env_ids = sampleable(memory)
    assert len(slots) > 500
    obs, next_obs = memory.stacks(slots, env_ids)
    expected = np.stack([written[s][e] for s, e in zip(slots, env_ids)])
    expected_next = np.stack([written[(s + 1) % memory.T][e] for s, e in zip(slots, env_ids)])
    np.testing.assert_array_equal(obs, expected)
    np.testing.assert_array_equal(next_obs, expected_next)
    # The checks above cover episode starts: some stacks are zero-padded, some next obs are final obs.
    assert (obs[:, 0].reshape(len(slots), -1).max(1) == 0).any()
    assert memory.first[slots, env_ids].any()
    assert (~memory.valid[: memory.size]).any(), "no autoreset step was seen; the test lost its point"


def test_autoreset_steps_are_never_sampled():
    env = envs.make("CartPole-v1", num_envs=3)
    memory = ReplayMemory(3000, 3, (4,), np.float32)
    written = collect(env, memory, 1200, seed=0)
    rng = np.random.default_rng(0)
    slots, env_ids = memory.sample_index(5000, rng)
    assert memory.valid[slots, env_ids].all()
    batch = memory.sample(256, rng)
    assert batch["obs"].shape == (256, 4) and batch["next_obs"].shape == (256, 4)
    # Every sampled pair is a real transition: next obs is the slot after, never a reset obs.
    obs, next_obs = memory.stacks(slots, env_ids)
    np.testing.assert_array_equal(obs, np.stack([written[s][e] for s, e in zip(slots, env_ids)]))
    np.testing.assert_array_equal(next_obs, np.stack([written[(s + 1) % memory.T][e] for s, e in zip(slots, env_ids)]))
    # A terminated CartPole transition is followed by the episode's final obs, not the reset obs.
    term = memory.terminated[slots, env_ids]
    assert term.any()
    assert (np.abs(next_obs[term]).max(axis=1) > 0.2).all()  # final states are out of bounds


def test_bytes_per_atari_transition():
    memory = ReplayMemory(1_000_000, 1, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8)
    assert memory.nbytes / 1_000_000 <= 7200


def test_too_small_capacity_is_an_error():
    with pytest.raises(ValueError):
        ReplayMemory(4, 1, (4, 84, 84), np.uint8, frame_stack=4)
