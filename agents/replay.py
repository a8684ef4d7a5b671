"""Replay memory that stores each observation once, n-step transitions over it, and two samplers.

    memory = ReplayMemory(1_000_000, 1, (4, 84, 84), frame_stack=4)                   # DQN: uniform, 1-step
    memory = ReplayMemory(1_000_000, 1, (4, 84, 84), frame_stack=4, n_step=3, gamma=0.99,
                          prioritized=True, alpha=0.5)                                  # Rainbow
    batch = memory.sample(32, rng, beta=0.4)        # obs, actions, rewards, next_obs, terminated, discounts
    memory.update_priorities(batch["index"], per_sample_loss)                          # prioritized only

Three parts, so that DQN and Rainbow share one storage:

- `ReplayStorage`: what the env gave. Atari observations are stacks of the last 4 frames, and
  consecutive observations share 3 of them; a buffer of (obs, next_obs) pairs stores every frame 8
  times (SB3: 56 KB per transition). Here each env step stores only its newest 84x84 frame (7 KB),
  and stacks are rebuilt at sampling time from the frames before it, zero-padded at an episode start
  exactly as the env pads its own stack. The next observation is a later slot, so it costs nothing
  either (as in Dopamine).
- `n_step_transitions`: the n-step return of a slot and the slot it bootstraps from, cut at
  terminations (no bootstrap) and at episode ends (truncation or game over: bootstrap from the
  episode's final observation), read from the storage as it is.
- `UniformSampler` (DQN) and `PrioritizedSampler` (Rainbow, Schaul et al. 2016, proportional): which
  slots a batch uses. A slot is sampleable once the n slots after it are written (its n-step window
  exists) and until the frames its stack needs are overwritten.

Layout: one time-major ring per env, arrays of shape (T, num_envs, ...), T = capacity / num_envs.
Slot t of env e holds the observation o_t an action was taken from and what that action gave.
Gymnasium 1.x autoreset: after the step that ends an episode, the env's next step ignores its
action and returns the reset observation. That step's slot holds the episode's final observation
(the next_obs of the slot before it) but is no transition itself, so it is never sampled, and a
slot whose successor is such a step ended its episode. A memory loaded to resume a run treats its
newest slot the same way (`cut_episodes`): the resumed envs start new episodes there.
"""
from __future__ import annotations

import numpy as np
import torch


class ReplayStorage:
    """Rings of single frames (or whole vector observations) from `num_envs` parallel envs.

    `frame_stack > 1`: observations are (frame_stack, H, W) stacks whose last frame is new each
    step (Atari); only that frame is stored. `frame_stack == 1`: any observation (CartPole,
    MuJoCo) is stored whole.
    """

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype=np.uint8,
                 frame_stack: int = 1, action_shape: tuple[int, ...] = (), action_dtype=np.int64,
                 min_slots: int = 0):
        if frame_stack > 1 and obs_shape[0] != frame_stack:
            raise ValueError(f"obs_shape {obs_shape} does not start with frame_stack={frame_stack}")
        self.T = -(-capacity // num_envs)  # slots per env
        if self.T < max(frame_stack + 1, min_slots):
            raise ValueError(f"capacity {capacity} is too small for {num_envs} envs and a stack of {frame_stack}")
        self.num_envs, self.frame_stack = num_envs, frame_stack
        stored = obs_shape[1:] if frame_stack > 1 else obs_shape
        # np.zeros maps pages lazily: a 1M-frame Atari buffer costs memory only as it fills.
        self.obs = np.zeros((self.T, num_envs, *stored), dtype=obs_dtype)
        self.actions = np.zeros((self.T, num_envs, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros((self.T, num_envs), dtype=np.float32)
        self.terminated = np.zeros((self.T, num_envs), dtype=bool)
        self.first = np.zeros((self.T, num_envs), dtype=bool)  # o_t is an episode's first obs
        self.valid = np.zeros((self.T, num_envs), dtype=bool)  # slot t is a transition (not autoreset or cut)
        self.pos = 0  # next slot to write
        self.size = 0  # slots written, up to T
        self._next_first = np.ones(num_envs, dtype=bool)
        self._next_autoreset = np.zeros(num_envs, dtype=bool)

    ARRAYS = ("obs", "actions", "rewards", "terminated", "first", "valid")

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, a).nbytes for a in self.ARRAYS)

    def add(self, obs, action, reward, terminated, episode_end) -> int:
        """Store one vector-env step: `obs` is what `action` was taken from; `reward`, `terminated`
        and `episode_end` (game over or truncation: the next step is the autoreset) are its outcome.
        Returns the slot written."""
        t = self.add_observation(obs, action)
        self.add_outcome(reward, terminated, episode_end)
        return t

    def add_observation(self, obs, action) -> int:
        """The first half of `add`, what is known before the env steps: the slot is written but for its
        outcome, which nothing reads until the slot after it is written (a slot is sampleable once n
        slots follow it; its n-step window reads the rewards of its own and the n - 1 slots after). So
        the memory samples as after the whole `add` while the env plays the step. Not to be saved
        (state_dict) before `add_outcome`: the slot's outcome and the next slot's flags are not yet
        written. Returns the slot."""
        t = self.pos
        obs = np.asarray(obs)
        self.obs[t] = obs[:, -1] if self.frame_stack > 1 else obs
        self.actions[t] = action
        self.first[t] = self._next_first
        self.valid[t] = ~self._next_autoreset
        self.pos = (t + 1) % self.T
        self.size = min(self.size + 1, self.T)
        return t

    def add_outcome(self, reward, terminated, episode_end) -> None:
        """The second half of `add`: the outcome of the step `add_observation` began."""
        t = (self.pos - 1) % self.T
        self.rewards[t] = reward
        self.terminated[t] = terminated
        self._next_first = self._next_autoreset.copy()  # the slot after an autoreset step is a reset obs
        self._next_autoreset = np.asarray(episode_end, dtype=bool) & self.valid[t]

    def ages_to_slots(self, ages):
        """Ages count slots from the oldest (0) to the newest (size - 1)."""
        oldest = self.pos if self.size == self.T else 0
        return (oldest + ages) % self.T

    def stack(self, slots: np.ndarray, envs: np.ndarray) -> np.ndarray:
        """The observations at `slots` as the env gave them (stacks rebuilt from single frames)."""
        if self.frame_stack == 1:
            return self.obs[slots, envs]
        S = self.frame_stack
        window = (slots[:, None] + np.arange(-S + 1, 1)) % self.T  # (B, S): o_{t-S+1} .. o_t
        frames = self.obs[window, envs[:, None]]
        first = self.first[window, envs[:, None]]
        # Frames before the latest episode start in the window belong to the previous episode; the
        # env shows zeros there. firsts_from[:, p] counts the episode starts at positions p..S-1.
        firsts_from = np.cumsum(first[:, ::-1], axis=1)[:, ::-1]
        keep = (firsts_from - first) == 0  # no episode starts after position p
        return frames * keep[:, :, None, None]

    def state_dict(self) -> dict:
        """Everything stored, as tensors (for `torch.save` and `torch.load(weights_only=True)`)."""
        state = {a: torch.from_numpy(getattr(self, a)[: self.size]) for a in self.ARRAYS}
        state.update(pos=self.pos, size=self.size, next_first=torch.from_numpy(self._next_first),
                     next_autoreset=torch.from_numpy(self._next_autoreset))
        return state

    def load_state_dict(self, state: dict) -> None:
        """The saved contents, then `cut_episodes()`: a memory is loaded to resume a run, whose envs
        start new episodes."""
        size, pos = int(state["size"]), int(state["pos"])
        for a in self.ARRAYS:
            value = state[a].numpy()
            target = getattr(self, a)
            if size > self.T or value.shape[1:] != target.shape[1:] or len(value) != size:
                raise ValueError(f"the saved replay's {a} {tuple(value.shape)} does not fit {tuple(target.shape)}")
        # A ring that wrapped has its oldest slot at pos: into a larger ring it would not read in order
        # (pos 0: the oldest is slot 0 whether it wrapped or just filled).
        if size < self.T and pos not in (0, size):
            raise ValueError(f"the saved replay memory filled its {size:,} slots per env and wrapped; it "
                             f"resumes only into as many (this run has {self.T:,}: --buffer-size or "
                             f"--num-envs changed)")
        for a in self.ARRAYS:
            getattr(self, a)[:size] = state[a].numpy()
        self.pos, self.size = (size if size < self.T else pos) % self.T, size
        self._next_first = state["next_first"].numpy().copy()
        self._next_autoreset = state["next_autoreset"].numpy().copy()
        self.cut_episodes()

    def cut_episodes(self) -> None:
        """The envs restart their episodes (a resumed run resets them) where the memory stopped: the
        newest slot's observation becomes the interrupted episodes' last, as a truncation leaves it
        (not a transition; earlier slots' n-step returns end there and bootstrap from it), and the
        next slot written starts an episode. One transition per env is lost."""
        if self.size == 0:
            return
        self.valid[(self.pos - 1) % self.T] = False
        self._next_first[:] = True
        self._next_autoreset[:] = False


def n_step_transitions(storage: ReplayStorage, slots: np.ndarray, envs: np.ndarray, n: int, gamma: float):
    """For each (slot t, env): the n-step return r_t + gamma r_{t+1} + ... summed up to n rewards or
    to the step that ends the episode, whichever comes first; whether a termination cut it (no
    bootstrap); gamma^k for the k rewards summed; and the slot t+k it bootstraps from. An episode
    that ends by truncation or game over at step t+j bootstraps from slot t+j+1, the autoreset slot
    that holds its final observation. Needs slots t+1 .. t+n written (the samplers ensure it)."""
    T = storage.T
    window = (slots[:, None] + np.arange(n)) % T  # (B, n)
    e = envs[:, None]
    rewards = storage.rewards[window, e].astype(np.float64)
    terminated = storage.terminated[window, e]
    ends = terminated | ~storage.valid[(window + 1) % T, e]  # the next slot is an autoreset step
    counted = (np.cumsum(ends, axis=1) - ends) == 0  # no end before position j: its reward counts
    k = counted.sum(axis=1)
    returns = (rewards * counted * gamma ** np.arange(n)).sum(axis=1)
    cut = (terminated & counted).any(axis=1)
    return returns.astype(np.float32), cut, (gamma ** k).astype(np.float32), (slots + k) % T


class UniformSampler:
    """Uniform (slot, env) pairs of sampleable transitions (DQN)."""

    def __init__(self, storage: ReplayStorage, n: int = 1):
        self.storage, self.n = storage, n
        self.nbytes = 0

    # A sampled slot needs its n next slots written (age <= size - 1 - n) and, for stacks,
    # frame_stack - 1 slots before it that have not been overwritten (age >= frame_stack - 1).
    def _range(self) -> tuple[int, int]:
        return self.storage.frame_stack - 1, self.storage.size - 1 - self.n

    @property
    def can_sample(self) -> bool:
        lo, hi = self._range()
        return hi >= lo

    def added(self, slot: int) -> None:
        pass

    def rebuild(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float | None = None):
        """(slots, envs, None): no importance weights."""
        lo, hi = self._range()
        if hi < lo:
            raise ValueError("the replay memory holds no transition yet")
        s = self.storage
        slots = np.empty(batch_size, dtype=np.int64)
        envs = np.empty(batch_size, dtype=np.int64)
        todo = np.arange(batch_size)
        for _ in range(1000):  # autoreset slots are rare, so this ends in a round or two
            slots[todo] = s.ages_to_slots(rng.integers(lo, hi + 1, size=todo.size))
            envs[todo] = rng.integers(0, s.num_envs, size=todo.size)
            todo = todo[~s.valid[slots[todo], envs[todo]]]
            if todo.size == 0:
                return slots, envs, None
        raise RuntimeError("could not sample valid transitions: the memory holds too few")


class SumTree:
    """A binary tree over `size` non-negative leaves whose nodes hold the sums below them: leaves set
    and drawn in proportion to their values a whole batch at a time, in O(batch * log size) numpy
    operations and no Python loop per index. Node 1 is the root; leaf i is node `leaves + i`."""

    def __init__(self, size: int):
        self.leaves = 1 << max(size - 1, 1).bit_length()
        self.depth = self.leaves.bit_length() - 1
        self.nodes = np.zeros(2 * self.leaves, dtype=np.float64)  # float64: sums of 1M leaves stay exact enough

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def get(self, index: np.ndarray) -> np.ndarray:
        return self.nodes[self.leaves + index]

    def set(self, index: np.ndarray, values: np.ndarray) -> None:
        """Set leaves (distinct indices) and recompute the sums above them, level by level (a parent
        reached twice is recomputed twice from the same children: same result)."""
        node = self.leaves + np.asarray(index, dtype=np.int64)
        self.nodes[node] = values
        for _ in range(self.depth):
            node = node >> 1
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """For each `mass` in [0, total): the leaf where the running sum of leaves passes it. Never a
        zero leaf: the descent only enters subtrees whose sum is positive."""
        node = np.ones(len(mass), dtype=np.int64)
        mass = np.array(mass, dtype=np.float64)
        for _ in range(self.depth):
            left = 2 * node
            left_sum = self.nodes[left]
            right = ((mass >= left_sum) & (self.nodes[left + 1] > 0)) | (left_sum <= 0)
            mass -= left_sum * right
            node = left + right
        return node - self.leaves


class PrioritizedSampler:
    """Proportional prioritized replay (Schaul et al. 2016): transition i is drawn with probability
    p_i^alpha / sum_k p_k^alpha, new transitions at the largest priority seen so far, and each
    draw weighted by (N P(i))^-beta normalised by the batch's largest weight (as Schaul et al.'s
    Algorithm 1 normalises by the maximum). A batch is stratified: one draw from each of `batch_size`
    equal slices of the total, as in the paper.

    Sum-tree leaf `slot * num_envs + env` is zero until the slot's n-step window exists and zero
    again once the slot, or a frame its stack needs, is overwritten: invalid indices are never drawn.
    """

    def __init__(self, storage: ReplayStorage, n: int, alpha: float, min_priority: float = 1e-6):
        if storage.T < storage.frame_stack + n + 1:
            raise ValueError(f"{storage.T} slots per env are too few for {n}-step windows")
        self.storage, self.n, self.alpha, self.min_priority = storage, n, alpha, min_priority
        self.tree = SumTree(storage.T * storage.num_envs)
        # p^alpha given at add time, in the tree once the window exists
        self.pending = np.zeros((storage.T, storage.num_envs), dtype=np.float32)
        self.max_priority = 1.0

    @property
    def nbytes(self) -> int:
        return self.tree.nodes.nbytes + self.pending.nbytes

    @property
    def can_sample(self) -> bool:
        return self.tree.total > 0

    def added(self, slot: int) -> None:
        """The storage has just written `slot`."""
        s, E = self.storage, self.storage.num_envs
        envs = np.arange(E)
        # Overwritten: the slot itself, and the frame_stack - 1 slots after it (the oldest), whose
        # stacks reached back to the frame just replaced.
        dead = (slot + np.arange(s.frame_stack)) % s.T
        index = [(dead[:, None] * E + envs).ravel()]
        values = [np.zeros(len(index[0]))]
        self.pending[slot] = self.max_priority ** self.alpha
        # The slot n before this one now has its whole window; its stack history is intact once at
        # least frame_stack - 1 slots precede it (as the uniform sampler's lowest age).
        ready = (slot - self.n) % s.T
        if s.size - 1 - self.n >= s.frame_stack - 1:
            index.append(ready * E + envs)
            values.append(self.pending[ready] * s.valid[ready])
        self.tree.set(np.concatenate(index), np.concatenate(values))

    def rebuild(self) -> None:
        """After the storage was loaded from a state dict: every sampleable slot in the tree at the
        largest priority seen (1 if none), as new transitions enter."""
        s, E = self.storage, self.storage.num_envs
        self.pending[:] = self.max_priority ** self.alpha
        slots = s.ages_to_slots(np.arange(s.frame_stack - 1, s.size - self.n))
        self.tree.nodes[:] = 0
        self.tree.set((slots[:, None] * E + np.arange(E)).ravel(), (self.pending[slots] * s.valid[slots]).ravel())

    def state_dict(self) -> dict:
        """The priorities of the slots written (leaves slot * num_envs + env, and the p^alpha that a
        slot's leaf takes once its window exists) and the largest priority seen: a memory restored with
        them draws as the one saved."""
        written = self.storage.size * self.storage.num_envs
        return {"leaves": torch.from_numpy(self.tree.nodes[self.tree.leaves:][:written].copy()),
                "pending": torch.from_numpy(self.pending[: self.storage.size].copy()),
                "max_priority": self.max_priority, "n": self.n, "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        """After the storage's own load_state_dict. Priorities kept for another n-step window or
        alpha (changed on resume) do not fit this memory: it starts them afresh (`rebuild`)."""
        self.max_priority = float(state["max_priority"])
        if int(state.get("n", self.n)) != self.n or float(state.get("alpha", self.alpha)) != self.alpha:
            self.rebuild()
            return
        leaves, pending = state["leaves"].numpy(), state["pending"].numpy()
        size = self.storage.size
        if leaves.shape != (size * self.storage.num_envs,) or pending.shape != (size, self.storage.num_envs):
            raise ValueError(f"the saved priorities {tuple(leaves.shape)} do not fit {size:,} slots of "
                             f"{self.storage.num_envs} envs")
        self.pending[:] = 0
        self.pending[:size] = pending
        self.tree.nodes[:] = 0
        self.tree.set(np.arange(len(leaves)), leaves)

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float):
        """(slots, envs, importance weights)."""
        total = self.tree.total
        if total <= 0:
            raise ValueError("the replay memory holds no transition yet")
        mass = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        leaf = self.tree.find(np.minimum(mass, np.nextafter(total, 0)))
        p = self.tree.get(leaf) / total
        # (N P(i))^-beta / max_j (N P(j))^-beta: N cancels, the smallest P(j) gives the largest weight
        weights = (p / p.min()) ** -beta
        return leaf // self.storage.num_envs, leaf % self.storage.num_envs, weights.astype(np.float32)

    def update(self, index: np.ndarray, priorities: np.ndarray) -> None:
        """Set sampled transitions' priorities (Rainbow: their losses). A leaf that is no longer in
        the tree (overwritten since it was drawn) stays out; a leaf drawn twice takes the last value."""
        priorities = np.maximum(np.asarray(priorities, dtype=np.float64), self.min_priority)
        self.max_priority = max(self.max_priority, float(priorities.max()))
        live = self.tree.get(index) > 0
        index, priorities = index[live], priorities[live]
        index, last = np.unique(index[::-1], return_index=True)  # last occurrence of each leaf
        self.tree.set(index, priorities[::-1][last] ** self.alpha)


def for_env(env, capacity: int, num_envs: int, device: torch.device, **options) -> "ReplayMemory":
    """The replay memory for `env`'s observations (Atari stacks kept as single frames, actions as
    bytes where they fit), refused with one line if it could not fit in this machine's memory when
    full. `options`: ReplayMemory's n_step, gamma, prioritized, alpha."""
    from common import lifecycle
    from common.errors import fail

    space = env.single_observation_space
    stacked = len(space.shape) == 3
    per_obs = int(np.prod(space.shape[1:] if stacked else space.shape)) * np.dtype(space.dtype).itemsize
    per_action = 8 if hasattr(env.single_action_space, "n") else 4 * int(np.prod(env.single_action_space.shape))
    per_transition = per_obs + per_action + 8 + (20 if options.get("prioritized") else 0)  # + reward, flags, tree
    need = capacity * per_transition
    if need > lifecycle.physical_memory():
        fail(f"--buffer-size {capacity:,}: the replay memory would take {need / 2**30:,.1f} GiB when full, "
             f"more than this machine's {lifecycle.physical_memory() / 2**30:,.1f} GiB")
    actions = env.single_action_space
    if hasattr(actions, "n"):  # discrete: one index, a byte where it fits
        action_shape, action_dtype = (), np.uint8 if int(actions.n) < 256 else np.int64
    else:  # Box: float32 vectors
        action_shape, action_dtype = actions.shape, np.float32
    try:
        return ReplayMemory(capacity, num_envs, space.shape, space.dtype, frame_stack=space.shape[0] if stacked else 1,
                            action_shape=action_shape, action_dtype=action_dtype, device=device, **options)
    except ValueError as e:
        fail(f"--buffer-size {capacity:,}: {e}")


class ReplayMemory:
    """The replay memory agents use: a `ReplayStorage`, its n-step transitions and a sampler.

    `sample` returns tensors on `device`: obs, actions, rewards (the n-step return), next_obs (the
    observation it bootstraps from), terminated (a termination cut the return: no bootstrap), and
    discounts (gamma^k, the k rewards summed); prioritized memories add weights (importance
    sampling) and index (for `update_priorities`, on the CPU). With n_step = 1, rewards and
    terminated are the one-step transition's own and next_obs the slot after.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype=np.uint8,
        frame_stack: int = 1,
        action_shape: tuple[int, ...] = (),
        action_dtype=np.int64,
        device: torch.device | str = "cpu",
        *,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.5,
    ):
        if n_step < 1:
            raise ValueError(f"n_step must be at least 1 (got {n_step})")
        self.storage = ReplayStorage(capacity, num_envs, obs_shape, obs_dtype, frame_stack, action_shape,
                                     action_dtype, min_slots=frame_stack + n_step + 1)
        self.sampler = (PrioritizedSampler(self.storage, n_step, alpha) if prioritized
                        else UniformSampler(self.storage, n_step))
        self.n_step, self.gamma = n_step, gamma
        self.device = torch.device(device)
        self._pinned: list[dict[str, torch.Tensor]] = []
        self._pinned_turn = 0

    @property
    def nbytes(self) -> int:
        return self.storage.nbytes + self.sampler.nbytes

    @property
    def can_sample(self) -> bool:
        return self.sampler.can_sample

    def add(self, obs, action, reward, terminated, episode_end) -> None:
        self.add_observation(obs, action)
        self.add_outcome(reward, terminated, episode_end)

    def add_observation(self, obs, action) -> None:
        """`add` in two halves, the observation and action before the env steps, its outcome after:
        in between the memory samples exactly as after the whole `add` (ReplayStorage.add_observation),
        so a trainer can run the updates while the env steps."""
        self.sampler.added(self.storage.add_observation(obs, action))

    def add_outcome(self, reward, terminated, episode_end) -> None:
        self.storage.add_outcome(reward, terminated, episode_end)

    def state_dict(self) -> dict:
        """The storage's contents and the sampler's priorities: restored, the memory draws what the
        saved one would have drawn."""
        return {**self.storage.state_dict(), "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """A state without "sampler" (an earlier version's: the storage only) gives every transition
        the largest priority seen, as new ones get."""
        self.storage.load_state_dict(state)
        if "sampler" in state:
            self.sampler.load_state_dict(state["sampler"])
        else:
            self.sampler.rebuild()

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 1.0) -> dict[str, torch.Tensor]:
        slots, envs, weights = self.sampler.sample(batch_size, rng, beta)
        returns, cut, discounts, next_slots = n_step_transitions(self.storage, slots, envs, self.n_step, self.gamma)
        batch = {
            "obs": self.storage.stack(slots, envs),
            "actions": self.storage.actions[slots, envs],
            "rewards": returns,
            "next_obs": self.storage.stack(next_slots, envs),
            "terminated": cut,
            "discounts": discounts,
        }
        if weights is not None:
            batch["weights"] = weights
        out = self._to_device(batch)
        if weights is not None:
            out["index"] = torch.from_numpy(slots * self.storage.num_envs + envs)
        return out

    def update_priorities(self, index: torch.Tensor, priorities: torch.Tensor) -> None:
        self.sampler.update(index.numpy(), priorities.detach().float().cpu().numpy())

    def _to_device(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        if self.device.type != "cuda":
            return {k: torch.from_numpy(v) for k, v in batch.items()}
        # Host -> GPU through page-locked buffers so the copy runs asynchronously. Two sets take
        # turns: a set is refilled only after the copy that read it two batches ago has finished.
        if not self._pinned:
            self._pinned = [
                {k: torch.empty(v.shape, dtype=torch.from_numpy(v).dtype).pin_memory() for k, v in batch.items()}
                for _ in range(2)
            ]
            self._events = [None, None]
        turn = self._pinned_turn
        self._pinned_turn ^= 1
        if self._events[turn] is not None:
            self._events[turn].synchronize()
        out = {}
        for k, v in batch.items():
            buf = self._pinned[turn][k]
            buf.numpy()[...] = v
            out[k] = buf.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._events[turn] = event
        return out
