"""Two small envs of a user's own, registered on import, as a user's package would register them: the tests
name them `user_envs:Corridor-v0` (discrete actions) and `user_envs:Target-v0` (Box actions)."""
import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right along a corridor of `length` cells: reward 1 at its end, which ends the episode."""

    def __init__(self, length: int = 5):
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (length,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0

    def _obs(self):
        obs = np.zeros(self.length, dtype=np.float32)
        obs[self.position] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self._obs(), {}

    def step(self, action):
        self.position = min(max(self.position + (1 if action == 1 else -1), 0), self.length - 1)
        done = self.position == self.length - 1
        return self._obs(), float(done), done, False, {}


class Target(gym.Env):
    """Move a point on a line towards `goal`: the reward is minus the distance after the move."""

    def __init__(self, goal: float = 0.5):
        self.goal = goal
        self.observation_space = gym.spaces.Box(-2.0, 2.0, (2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.x = 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1, 1))
        return np.array([self.x, self.goal], dtype=np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.1 * float(action[0]), -2, 2))
        return np.array([self.x, self.goal], dtype=np.float32), -abs(self.x - self.goal), False, False, {}


class WithDistance(gym.ObservationWrapper):
    """A user's wrapper: Target's observation with the distance to the goal appended."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-4.0, 4.0, (3,), dtype=np.float32)

    def observation(self, obs):
        return np.append(obs, abs(obs[0] - obs[1])).astype(np.float32)


gym.register("Corridor-v0", entry_point=Corridor, max_episode_steps=50)
gym.register("Target-v0", entry_point=Target, max_episode_steps=30)
