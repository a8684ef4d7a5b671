"""The replay memory rebuilds exactly the observations the env gave, across episode ends and wrap-around;
n-step transitions match a hand-computed episode; the sum tree draws in proportion to priorities."""
import numpy as np
import pytest
import torch

import envs
from agents.replay import PrioritizedSampler, ReplayMemory, ReplayStorage, SumTree, n_step_transitions


def collect(env, memory, steps, seed):
    """Random play; returns the observation given at each slot write, per slot, for comparison."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    written = {}  # slot -> obs (num_envs, ...) stored there, latest write wins
    for _ in range(steps):
        actions = rng.integers(0, env.single_action_space.n, size=env.num_envs)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        written[memory.storage.pos] = obs.copy()
        memory.add(obs, actions, rewards, terminated, info["episode_end"])
        obs = next_obs
    return written


def sampleable(storage, n=1):
    """(slots, envs) a sampler may draw: valid, n-step window written, stack history intact."""
    ages = np.arange(storage.frame_stack - 1, storage.size - n)
    slots = storage.ages_to_slots(ages)
    pairs = [(s, e) for s in slots for e in range(storage.num_envs) if storage.valid[s, e]]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def test_atari_stacks_equal_env_across_episodes_and_wraparound():
    # A 400-frame cap (100 steps) forces many truncations; Breakout at random also loses games.
    env = envs.make("Breakout", num_envs=2, max_frames=400, sticky_actions=0.0)
    memory = ReplayMemory(600, 2, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8)
    written = collect(env, memory, 700, seed=3)  # 700 steps into 300 slots per env: wrapped twice
    storage = memory.storage
    assert storage.size == storage.T == 300
    slots, env_ids = sampleable(storage)
    assert len(slots) > 500
    obs, next_obs = storage.stack(slots, env_ids), storage.stack((slots + 1) % storage.T, env_ids)
    expected = np.stack([written[s][e] for s, e in zip(slots, env_ids)])
    expected_next = np.stack([written[(s + 1) % storage.T][e] for s, e in zip(slots, env_ids)])
    np.testing.assert_array_equal(obs, expected)
    np.testing.assert_array_equal(next_obs, expected_next)
    # The checks above cover episode starts: some stacks are zero-padded, some next obs are final obs.
    assert (obs[:, 0].reshape(len(slots), -1).max(1) == 0).any()
    assert storage.first[slots, env_ids].any()
    assert (~storage.valid[: storage.size]).any(), "no autoreset step was seen; the test lost its point"


def test_n_step_next_stacks_equal_env_with_prioritized_sampling():
    """Rainbow's memory: 3-step bootstrap stacks are the env's own observations, and the sum tree
    holds exactly the sampleable slots after wrap-around."""
    env = envs.make("Breakout", num_envs=2, max_frames=400, sticky_actions=0.0)
    memory = ReplayMemory(600, 2, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8, n_step=3,
                          gamma=0.9, prioritized=True)
    written = collect(env, memory, 700, seed=4)
    storage, tree = memory.storage, memory.sampler.tree
    slots, env_ids = sampleable(storage, n=3)
    in_tree = set(np.flatnonzero(tree.get(np.arange(storage.T * 2)) > 0))
    assert in_tree == set(slots * 2 + env_ids)
    _, _, _, next_slots = n_step_transitions(storage, slots, env_ids, 3, 0.9)
    np.testing.assert_array_equal(storage.stack(next_slots, env_ids),
                                  np.stack([written[s][e] for s, e in zip(next_slots, env_ids)]))
    assert ((next_slots - slots) % storage.T < 3).any()  # some windows were cut by an episode's end
    batch = memory.sample(32, np.random.default_rng(0), beta=0.4)
    assert batch["obs"].shape == (32, 4, 84, 84) and batch["weights"].max() == 1.0
    assert set(batch["index"].tolist()) <= in_tree


@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform-1-step", "prioritized-3-step"])
def test_a_step_added_in_two_halves_draws_as_a_whole_add(prioritized):
    """The trainers write a step's observation and action before the env steps and its outcome after,
    with the updates in between: every draw there (batches, weights, priorities updated) equals the
    draw after the whole add, across game overs, autoresets and wrap-around."""
    env = envs.make("Breakout", num_envs=2, max_frames=400, sticky_actions=0.0)
    options = dict(n_step=3, gamma=0.9, prioritized=True) if prioritized else {}
    whole, halves = (ReplayMemory(120, 2, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8, **options)
                     for _ in range(2))
    rng = np.random.default_rng(5)
    draws = [np.random.default_rng(6), np.random.default_rng(6)]
    obs, _ = env.reset(seed=5)
    compared = autoresets = 0
    for step in range(300):  # 300 steps into 60 slots per env: wrapped five times
        actions = rng.integers(0, 4, size=2)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        whole.add(obs, actions, rewards, terminated, info["episode_end"])
        halves.add_observation(obs, actions)
        autoresets += int((~halves.storage.valid[(halves.storage.pos - 1) % halves.storage.T]).any())
        assert whole.can_sample == halves.can_sample
        if whole.can_sample:
            a, b = (m.sample(8, d, beta=0.4) for m, d in zip((whole, halves), draws))
            assert a.keys() == b.keys()
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
            if prioritized:
                losses = torch.from_numpy(rng.random(8).astype(np.float32) + 0.1)
                whole.update_priorities(a["index"], losses)
                halves.update_priorities(b["index"], losses)
            compared += 1
        halves.add_outcome(rewards, terminated, info["episode_end"])
        obs = next_obs
    assert compared > 250 and autoresets >= 2, (compared, autoresets)  # the 400-frame cap: game ends
    for name in ReplayStorage.ARRAYS:
        np.testing.assert_array_equal(getattr(whole.storage, name), getattr(halves.storage, name))


def test_autoreset_steps_are_never_sampled():
    env = envs.make("CartPole-v1", num_envs=3)
    memory = ReplayMemory(3000, 3, (4,), np.float32)
    written = collect(env, memory, 1200, seed=0)
    storage = memory.storage
    rng = np.random.default_rng(0)
    slots, env_ids, _ = memory.sampler.sample(5000, rng)
    assert storage.valid[slots, env_ids].all()
    batch = memory.sample(256, rng)
    assert batch["obs"].shape == (256, 4) and batch["next_obs"].shape == (256, 4)
    assert torch.all(batch["discounts"] == np.float32(0.99))
    # Every sampled pair is a real transition: next obs is the slot after, never a reset obs.
    obs, next_obs = storage.stack(slots, env_ids), storage.stack((slots + 1) % storage.T, env_ids)
    np.testing.assert_array_equal(obs, np.stack([written[s][e] for s, e in zip(slots, env_ids)]))
    np.testing.assert_array_equal(next_obs, np.stack([written[(s + 1) % storage.T][e] for s, e in zip(slots, env_ids)]))
    # A terminated CartPole transition is followed by the episode's final obs, not the reset obs.
    term = storage.terminated[slots, env_ids]
    assert term.any()
    assert (np.abs(next_obs[term]).max(axis=1) > 0.2).all()  # final states are out of bounds


# One env, observation = an id: a truncated episode, a terminated one, and one still running.
#        obs  reward terminated episode_end
STEPS = [(10, 1.0, False, False),
         (11, 2.0, False, False),
         (12, 3.0, False, True),   # truncated: the next step is the autoreset step
         (13, 0.0, False, False),  # autoreset slot: holds episode A's final obs, no transition
         (20, 1.0, False, False),  # reset obs
         (21, 1.0, True, True),    # terminated
         (22, 0.0, False, False),  # autoreset slot
         (30, 5.0, False, False),
         (31, 6.0, False, False),
         (32, 7.0, False, False),
         (33, 8.0, False, False)]


def hand_memory(prioritized):
    memory = ReplayMemory(64, 1, (1,), np.float32, n_step=3, gamma=0.5, prioritized=prioritized)
    for obs, reward, terminated, end in STEPS:
        memory.add(np.array([[obs]], np.float32), np.array([0]), np.array([reward]), np.array([terminated]),
                   np.array([end]))
    return memory


@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
def test_n_step_returns_by_hand(prioritized):
    memory = hand_memory(prioritized)
    # slot: (return, cut by termination, gamma^k, obs bootstrapped from), gamma = 0.5, n = 3
    expected = {0: (1 + 0.5 * 2 + 0.25 * 3, False, 0.125, 13),  # truncation at slot 2: final obs 13
                1: (2 + 0.5 * 3, False, 0.25, 13),
                2: (3.0, False, 0.5, 13),
                4: (1 + 0.5 * 1, True, 0.25, 22),  # termination at slot 5: no bootstrap
                5: (1.0, True, 0.5, 22),
                7: (5 + 0.5 * 6 + 0.25 * 7, False, 0.125, 33)}
    # slot 3 and 6 are autoreset steps; slots 8-10 lack their 3-step window
    slots, env_ids = sampleable(memory.storage, n=3)
    assert sorted(slots) == sorted(expected)
    returns, cut, discounts, next_slots = n_step_transitions(memory.storage, slots, env_ids, 3, 0.5)
    next_obs = memory.storage.stack(next_slots, env_ids)[:, 0]
    for i, s in enumerate(slots):
        assert (returns[i], cut[i], discounts[i], next_obs[i]) == pytest.approx(expected[s]), s
    # the samplers draw exactly these slots
    drawn = set(memory.sample(500, np.random.default_rng(0), beta=0.5)["obs"][:, 0].tolist())
    assert drawn == {STEPS[s][0] for s in expected}


def upper_chi2(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty's approximation of the chi-square quantile (z = 3.09: p = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * (2 / (9 * df)) ** 0.5) ** 3


def test_sum_tree_draws_in_proportion_and_never_zero():
    rng = np.random.default_rng(0)
    tree = SumTree(1000)
    priorities = rng.exponential(size=1000)
    priorities[rng.random(1000) < 0.2] = 0.0  # invalid indices
    tree.set(np.arange(1000), priorities)
    assert tree.total == pytest.approx(priorities.sum())
    draws = 400_000
    leaves = tree.find(rng.random(draws) * tree.total)
    counts = np.bincount(leaves, minlength=1000)
    assert counts[priorities == 0].sum() == 0
    live = priorities > 0
    expected = draws * priorities[live] / priorities.sum()
    chi2 = ((counts[live] - expected) ** 2 / expected).sum()
    assert chi2 < upper_chi2(live.sum() - 1), chi2
    # mass at the very edges lands on positive leaves
    edges = tree.find(np.array([0.0, np.nextafter(tree.total, 0)]))
    assert (priorities[edges] > 0).all()


def test_sum_tree_batch_updates_keep_every_sum():
    rng = np.random.default_rng(1)
    tree = SumTree(777)
    values = np.zeros(777)
    for _ in range(50):
        index = rng.choice(777, size=40, replace=False)
        values[index] = rng.random(40) * (rng.random(40) < 0.8)
        tree.set(index, values[index])
    np.testing.assert_allclose(tree.get(np.arange(777)), values)
    internal = np.arange(1, tree.leaves)
    np.testing.assert_allclose(tree.nodes[internal], tree.nodes[2 * internal] + tree.nodes[2 * internal + 1])
    assert tree.total == pytest.approx(values.sum())


def test_prioritized_sampler_follows_updated_priorities():
    """After updates, a batch's draws follow p^alpha, its weights are (p_min / p)^beta, and the
    largest priority seen goes to new transitions."""
    storage = ReplayStorage(2000, 1, (1,), np.float32, min_slots=8)
    sampler = PrioritizedSampler(storage, n=1, alpha=0.5)
    for i in range(1001):
        sampler.added(storage.add(np.array([[i]], np.float32), [0], [0.0], [False], [False]))
    index = np.arange(1000)  # slots 0..999 are sampleable
    priorities = np.where(index < 500, 1.0, 9.0)  # p^0.5: 1 and 3
    sampler.update(index, priorities)
    rng = np.random.default_rng(2)
    counts = np.zeros(2)
    for _ in range(200):
        slots, _, weights = sampler.sample(64, rng, beta=1.0)
        counts += np.bincount(slots >= 500, minlength=2)
        np.testing.assert_allclose(weights, np.where(slots >= 500, 1 / 3, 1.0) if (slots < 500).any()
                                   else 1.0, rtol=1e-6)
    assert counts[1] / counts.sum() == pytest.approx(0.75, abs=0.01)
    assert sampler.max_priority == 9.0
    for i in (1001, 1002):
        sampler.added(storage.add(np.array([[i]], np.float32), [0], [0.0], [False], [False]))
    # slot 1000 was added at the old maximum (1), slot 1001 after the update at 9^alpha
    np.testing.assert_allclose(sampler.tree.get(np.array([1000, 1001])), [1.0, 3.0])


def test_bytes_per_atari_transition():
    for prioritized in (False, True):
        memory = ReplayMemory(1_000_000, 1, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8,
                              n_step=3, prioritized=prioritized)
        assert memory.nbytes / 1_000_000 <= 7200, (prioritized, memory.nbytes / 1_000_000)


def test_storage_state_dict_round_trip():
    env = envs.make("CartPole-v1", num_envs=2)
    memory = ReplayMemory(500, 2, (4,), np.float32)
    collect(env, memory, 400, seed=5)
    state = memory.storage.state_dict()
    copy = ReplayStorage(500, 2, (4,), np.float32)
    copy.load_state_dict(state)
    memory.storage.cut_episodes()  # loading cuts the episodes where they stopped (next test)
    for name in ReplayStorage.ARRAYS:
        np.testing.assert_array_equal(getattr(copy, name), getattr(memory.storage, name))
    assert (copy.pos, copy.size) == (memory.storage.pos, memory.storage.size)
    with pytest.raises(ValueError):
        ReplayStorage(500, 2, (5,), np.float32).load_state_dict(state)
    # a prioritized memory loaded from it samples exactly the sampleable slots
    prioritized = ReplayMemory(500, 2, (4,), np.float32, n_step=3, prioritized=True)
    prioritized.load_state_dict(state)
    slots, env_ids = sampleable(prioritized.storage, n=3)
    tree = prioritized.sampler.tree
    assert set(np.flatnonzero(tree.get(np.arange(500)) > 0)) == set(slots * 2 + env_ids)
    assert tree.total == pytest.approx(len(slots))


def test_a_restored_prioritized_memory_draws_as_the_saved_one():
    """--save-replay's round trip (torch.save, then torch.load with weights_only): the restored memory
    holds the priorities the updates wrote, so every later draw, add and priority update equals the
    saved memory's as it goes on; restored from the storage alone (a checkpoint of the version before),
    all priorities are the largest seen and the draws differ."""
    import io

    env = envs.make("Breakout", num_envs=2, max_frames=400, sticky_actions=0.0)
    make = lambda: ReplayMemory(120, 2, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8,  # noqa: E731
                                n_step=3, gamma=0.9, prioritized=True)
    memory, rng, draws = make(), np.random.default_rng(7), np.random.default_rng(8)
    obs, _ = env.reset(seed=7)

    def play(memories, steps, generators):
        nonlocal obs
        for _ in range(steps):
            actions = rng.integers(0, 4, size=2)
            next_obs, rewards, terminated, truncated, info = env.step(actions)
            batches = []
            for m, d in zip(memories, generators):
                m.add(obs, actions, rewards, terminated, info["episode_end"])
                if m.can_sample:
                    batches.append(m.sample(8, d, beta=0.4))
            if batches:
                losses = torch.from_numpy(rng.random(8).astype(np.float32) + 0.1)
                for m, b in zip(memories, batches):
                    m.update_priorities(b["index"], losses)
                for b in batches[1:]:
                    for key in b:
                        torch.testing.assert_close(batches[0][key], b[key], rtol=0, atol=0)
            obs = next_obs

    play([memory], 150, [draws])  # 150 steps into 60 slots per env: wrapped
    buffer = io.BytesIO()
    torch.save(memory.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored, storage_only = make(), make()
    restored.load_state_dict(state)
    storage_only.load_state_dict({k: v for k, v in state.items() if k != "sampler"})
    memory.storage.cut_episodes()  # as loading does: a resumed run's envs start new episodes
    assert restored.sampler.tree.total == pytest.approx(memory.sampler.tree.total, rel=1e-12)
    first = [m.sample(8, np.random.default_rng(9), beta=0.4)["index"] for m in (memory, storage_only)]
    assert not torch.equal(*first), "priorities reset to the largest would not change the draws"
    play([memory, restored], 100, [draws, copy_of(draws)])  # every batch compared inside
    np.testing.assert_array_equal(memory.sampler.tree.nodes, restored.sampler.tree.nodes)


def test_a_restored_memory_ends_its_episodes_where_it_stopped():
    """A resumed run's envs start new episodes: the newest saved slot becomes the interrupted episode's
    last observation, as a truncation leaves it (never drawn; the n-step returns before it end there and
    bootstrap from it), and the first new slot's stack is the reset observation's, not the old frames'."""
    env = envs.make("Breakout", num_envs=1, sticky_actions=0.0)
    make = lambda: ReplayMemory(200, 1, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8,  # noqa: E731
                                n_step=3, gamma=0.9, prioritized=True)
    memory = make()
    collect(env, memory, 60, seed=11)
    restored = make()
    restored.load_state_dict(memory.state_dict())
    storage = restored.storage
    last = storage.pos - 1
    assert storage.valid[last - 1].all() and not storage.valid[last].any()
    _, cut, discounts, next_slots = n_step_transitions(storage, np.array([last - 2, last - 1]), np.zeros(2, int),
                                                       3, 0.9)
    assert next_slots.tolist() == [last, last] and discounts.tolist() == pytest.approx([0.81, 0.9])
    assert not cut.any()  # a truncation: bootstrapped from the last observation
    obs, _ = env.reset(seed=12)
    reset_obs = obs.copy()
    rng = np.random.default_rng(12)
    for _ in range(10):
        actions = rng.integers(0, 4, size=1)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        restored.add(obs, actions, rewards, terminated, info["episode_end"])
        obs = next_obs
    # the reset observation's own stack (Breakout's frames are never blank: the old ones would show)
    np.testing.assert_array_equal(storage.stack(np.array([last + 1]), np.zeros(1, int))[0], reset_obs[0])
    index = restored.sample(64, np.random.default_rng(0), beta=0.4)["index"].numpy()  # leaf = slot: 1 env
    assert last not in index


def test_a_wrapped_memory_does_not_resume_into_a_larger_one():
    env = envs.make("CartPole-v1", num_envs=2)
    memory = ReplayMemory(100, 2, (4,), np.float32)
    collect(env, memory, 120, seed=5)  # 50 slots per env, wrapped
    with pytest.raises(ValueError, match="wrapped"):
        ReplayMemory(200, 2, (4,), np.float32).load_state_dict(memory.state_dict())
    unwrapped = ReplayMemory(200, 2, (4,), np.float32)
    collect(env, unwrapped, 30, seed=5)
    larger = ReplayMemory(400, 2, (4,), np.float32)
    larger.load_state_dict(unwrapped.state_dict())  # not wrapped: its slots keep their order
    assert (larger.storage.size, larger.storage.pos) == (30, 30)
    full = ReplayMemory(100, 2, (4,), np.float32)
    collect(env, full, 50, seed=5)  # just full: the next write is at slot 0, the oldest
    assert (full.storage.size, full.storage.pos) == (50, 0)
    larger = ReplayMemory(200, 2, (4,), np.float32)
    larger.load_state_dict(full.state_dict())
    assert (larger.storage.size, larger.storage.pos) == (50, 50)
    np.testing.assert_array_equal(larger.storage.obs[:50], full.storage.obs)


def test_priorities_kept_for_another_window_start_afresh():
    """A resume that changes --n-step or --priority-alpha: the saved priorities do not fit; every
    sampleable transition enters at the largest priority seen, as after a refill."""
    env = envs.make("CartPole-v1", num_envs=1)
    memory = ReplayMemory(300, 1, (4,), np.float32, n_step=3, prioritized=True)
    collect(env, memory, 200, seed=6)
    batch = memory.sample(16, np.random.default_rng(0), beta=0.4)
    memory.update_priorities(batch["index"], torch.full((16,), 4.0))
    other = ReplayMemory(300, 1, (4,), np.float32, n_step=5, prioritized=True)
    other.load_state_dict(memory.state_dict())
    leaves = other.sampler.tree.get(np.arange(300))
    assert set(np.unique(leaves[leaves > 0])) == {4.0 ** 0.5}  # max priority ^ alpha, for all alike
    slots, _ = sampleable(other.storage, n=5)
    assert (leaves > 0).sum() == len(slots)
    other = ReplayMemory(300, 1, (4,), np.float32, n_step=3, prioritized=True, alpha=0.6)
    other.load_state_dict(memory.state_dict())
    leaves = other.sampler.tree.get(np.arange(300))
    np.testing.assert_allclose(leaves[leaves > 0], 4.0 ** 0.6)


def copy_of(generator: np.random.Generator) -> np.random.Generator:
    twin = np.random.default_rng()
    twin.bit_generator.state = generator.bit_generator.state
    return twin


def test_too_small_capacity_is_an_error():
    with pytest.raises(ValueError):
        ReplayMemory(4, 1, (4, 84, 84), np.uint8, frame_stack=4)
    with pytest.raises(ValueError):
        ReplayMemory(20, 1, (4, 84, 84), np.uint8, frame_stack=4, n_step=20)
