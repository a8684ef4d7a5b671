"""Replay memory that stores each observation once.

Atari observations are stacks of the last 4 frames, and consecutive observations share 3 of them;
a buffer of (obs, next_obs) pairs stores every frame 8 times (SB3: 56 KB per transition). Here each
env step stores only its newest 84x84 frame (7 KB), and stacks are rebuilt at sampling time from
the frames before it, zero-padded at an episode start exactly as the env pads its own stack. The
next observation is the following slot, so it costs nothing either (as in Dopamine).

Layout: one time-major ring per env, arrays of shape (T, num_envs, ...), T = capacity / num_envs.
Slot t of env e holds the observation o_t an action was taken from and what that action gave.
Gymnasium 1.x autoreset: after the step that ends an episode, the env's next step ignores its
action and returns the reset observation. That step's slot holds the episode's final observation
(the next_obs of the slot before it) but is no transition itself, so it is never sampled.
"""
from __future__ import annotations

import numpy as np
import torch


class ReplayMemory:
    """Uniform replay over `capacity` transitions from `num_envs` parallel envs.

    `frame_stack > 1`: observations are (frame_stack, H, W) stacks whose last frame is new each
    step (Atari); only that frame is stored. `frame_stack == 1`: any observation (CartPole,
    MuJoCo) is stored whole.
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
    ):
        if frame_stack > 1 and obs_shape[0] != frame_stack:
            raise ValueError(f"obs_shape {obs_shape} does not start with frame_stack={frame_stack}")
        self.T = -(-capacity // num_envs)  # slots per env
        if self.T < frame_stack + 1:
            raise ValueError(f"capacity {capacity} is too small for {num_envs} envs and a stack of {frame_stack}")
        self.num_envs, self.frame_stack = num_envs, frame_stack
        self.device = torch.device(device)
        stored = obs_shape[1:] if frame_stack > 1 else obs_shape
        # np.zeros maps pages lazily: a 1M-frame Atari buffer costs memory only as it fills.
        self.obs = np.zeros((self.T, num_envs, *stored), dtype=obs_dtype)
        self.actions = np.zeros((self.T, num_envs, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros((self.T, num_envs), dtype=np.float32)
        self.terminated = np.zeros((self.T, num_envs), dtype=bool)
        self.first = np.zeros((self.T, num_envs), dtype=bool)  # o_t is an episode's first obs
        self.valid = np.zeros((self.T, num_envs), dtype=bool)  # slot t is a transition (not autoreset)
        self.pos = 0  # next slot to write
        self.size = 0  # slots written, up to T
        self._next_first = np.ones(num_envs, dtype=bool)
        self._next_autoreset = np.zeros(num_envs, dtype=bool)
        self._pinned: list[dict[str, torch.Tensor]] = []
        self._pinned_turn = 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.obs, self.actions, self.rewards, self.terminated, self.first, self.valid))

    @property
    def can_sample(self) -> bool:
        return self._hi >= self._lo

    def add(self, obs, action, reward, terminated, episode_end) -> None:
        """Store one vector-env step: `obs` is what `action` was taken from; `reward`, `terminated`
        and `episode_end` (game over or truncation: the next step is the autoreset) are its outcome."""
        t = self.pos
        obs = np.asarray(obs)
        self.obs[t] = obs[:, -1] if self.frame_stack > 1 else obs
        self.actions[t] = action
        self.rewards[t] = reward
        self.terminated[t] = terminated
        self.first[t] = self._next_first
        self.valid[t] = ~self._next_autoreset
        self._next_first = self._next_autoreset.copy()  # the slot after an autoreset step is a reset obs
        self._next_autoreset = np.asarray(episode_end, dtype=bool) & self.valid[t]
        self.pos = (t + 1) % self.T
        self.size = min(self.size + 1, self.T)

    # Ages count slots from the oldest (0) to the newest (size - 1). A sampled slot needs its next
    # slot written (age <= size - 2) and, for stacks, frame_stack - 1 slots before it that have not
    # been overwritten (age >= frame_stack - 1).
    @property
    def _lo(self) -> int:
        return self.frame_stack - 1

    @property
    def _hi(self) -> int:
        return self.size - 2

    def _ages_to_slots(self, ages):
        oldest = self.pos if self.size == self.T else 0
        return (oldest + ages) % self.T

    def sample_index(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Uniform (slot, env) pairs of valid transitions."""
        if self._hi < self._lo:
            raise ValueError("the replay memory holds no transition yet")
        slots = np.empty(batch_size, dtype=np.int64)
        envs = np.empty(batch_size, dtype=np.int64)
        todo = np.arange(batch_size)
        for _ in range(1000):  # autoreset slots are rare, so this ends in a round or two
            slots[todo] = self._ages_to_slots(rng.integers(self._lo, self._hi + 1, size=todo.size))
            envs[todo] = rng.integers(0, self.num_envs, size=todo.size)
            todo = todo[~self.valid[slots[todo], envs[todo]]]
            if todo.size == 0:
                return slots, envs
        raise RuntimeError("could not sample valid transitions: the memory holds too few")

    def stacks(self, slots: np.ndarray, envs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stacked observations of `slots` and of the slots after them, as the env gave them."""
        if self.frame_stack == 1:
            return self.obs[slots, envs], self.obs[(slots + 1) % self.T, envs]
        S = self.frame_stack
        window = (slots[:, None] + np.arange(-S + 1, 2)) % self.T  # (B, S + 1): o_{t-S+1} .. o_{t+1}
        frames = self.obs[window, envs[:, None]]
        first = self.first[window, envs[:, None]]
        # starts_after[:, p]: an episode starts at some slot after p in the window; frames before
        # an episode's first obs belong to the previous episode and the env shows zeros there.
        later = np.cumsum(first[:, ::-1], axis=1)[:, ::-1]  # later[:, p] = firsts at p..S
        starts_after = np.zeros_like(later)
        starts_after[:, :-1] = later[:, 1:]
        obs_mask = (starts_after[:, :S] - starts_after[:, S - 1:S]) == 0  # window positions 0..S-1
        next_mask = starts_after[:, 1:] == 0  # positions 1..S
        obs = frames[:, :S] * obs_mask[:, :, None, None]
        next_obs = frames[:, 1:] * next_mask[:, :, None, None]
        return obs, next_obs

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A batch of transitions as tensors on `device`: obs, actions, rewards, next_obs, terminated."""
        slots, envs = self.sample_index(batch_size, rng)
        obs, next_obs = self.stacks(slots, envs)
        batch = {
            "obs": obs,
            "actions": self.actions[slots, envs],
            "rewards": self.rewards[slots, envs],
            "next_obs": next_obs,
            "terminated": self.terminated[slots, envs],
        }
        return self._to_device(batch)

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
