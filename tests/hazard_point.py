"""A small safe-RL env of one's own, for the ``env=custom`` tests: a point in the plane moves
toward a goal (reward: the distance gained) and pays a cost of 1 per step inside a hazard disc
on the straight path. Loaded as ``env.gym_id=tests.hazard_point:HazardPoint``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

GOAL = np.array([1.0, 0.0], dtype=np.float32)
HAZARD, HAZARD_RADIUS = np.array([0.5, 0.0], dtype=np.float32), 0.2
STEP = 0.1


class HazardPoint(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)  # position, to goal
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-0.1, 0.1, 2).astype(np.float32)
        return self._obs(), {}

    def step(self, action: np.ndarray):
        before = np.linalg.norm(GOAL - self.position)
        self.position = self.position + STEP * np.clip(action, -1.0, 1.0).astype(np.float32)
        after = np.linalg.norm(GOAL - self.position)
        cost = float(np.linalg.norm(self.position - HAZARD) < HAZARD_RADIUS)
        return self._obs(), float(before - after), bool(after < 0.05), False, {"cost": cost}

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.position, GOAL - self.position]).astype(np.float32)
