"""Bullet Safety Gym tasks through gymnasium, with DSRL's episode lengths and reference returns.

Every constant about a task (episode length, reference returns for normalization) is read from
``dsrl.infos`` at run time, never copied, so marvel scores agree with DSRL's by construction.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np


@contextmanager
def real_std_streams() -> Iterator[None]:
    """Point sys.stdout/stderr at the process's real streams for a moment.

    bullet-safety-gym hides pybullet's banners by flushing the C stream named like
    ``sys.stdout``/``sys.stderr``; under captured streams (pytest, Jupyter) those names are not C
    streams and its import and env construction fail.
    """
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


with real_std_streams():
    import bullet_safety_gym.envs.builder  # noqa: F401  (registers the Safety*-v0 envs)

from dsrl import infos as dsrl_infos  # noqa: E402  (after bullet-safety-gym, which dsrl wraps)

TASKS: tuple[str, ...] = (
    "BallCircle",
    "BallRun",
    "CarCircle",
    "CarRun",
    "DroneCircle",
    "DroneRun",
    "AntCircle",
    "AntRun",
)


class UnknownTaskError(ValueError):
    """Raised for a task name marvel does not know; the message lists the valid ones."""


@dataclass(frozen=True)
class TaskSpec:
    """What marvel needs to know about one task (METHOD.md sections 1 and 7)."""

    name: str
    gym_id: str
    max_episode_steps: int
    reward_min: float
    reward_max: float
    cost_limit: float

    def normalize(self, reward: float, cost: float) -> tuple[float, float]:
        """DSRL normalization (METHOD.md section 7).

        R_n = (R - R_min) / (R_max - R_min);  C_n = (C + eps) / (d + eps), eps = 1 iff d == 0.
        """
        eps = 1.0 if self.cost_limit == 0 else 0.0
        normalized_reward = (reward - self.reward_min) / (self.reward_max - self.reward_min)
        normalized_cost = (cost + eps) / (self.cost_limit + eps)
        return float(normalized_reward), float(normalized_cost)


def check_task(name: str) -> None:
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")


def task_spec(name: str, cost_limit: float = 20.0) -> TaskSpec:
    """The task's DSRL constants (read from ``dsrl.infos``) and the episodic cost limit d."""
    check_task(name)
    if cost_limit < 0:
        raise ValueError(f"cost limit must be >= 0, got {cost_limit}")
    return TaskSpec(
        name=name,
        gym_id=f"Safety{name}-v0",
        max_episode_steps=int(dsrl_infos.DEFAULT_MAX_EPISODE_STEPS[name]),
        reward_min=float(dsrl_infos.MIN_EPISODE_REWARD[name]),
        reward_max=float(dsrl_infos.MAX_EPISODE_REWARD[name]),
        cost_limit=float(cost_limit),
    )


class ReproducibleReset(gym.Wrapper):
    """Makes ``reset(seed=s)`` reproducible: the episode depends on ``s`` alone.

    Bullet Safety Gym ignores the ``seed`` of ``reset`` and draws initial states (and some
    in-episode noise) from NumPy's *global* RNG; this wrapper seeds that RNG from ``s``. Its
    reset restores a saved simulator state, but joint motor commands (Car and Drone wheels and
    propellers, Ant torques) survive a restore, and reset steps the simulation once: the previous
    episode's last action would leak into the next episode's first state. So before each reset
    the saved state is restored and a zero action applied, the same in a fresh env and a used
    one (tested for every task: an episode is the same after any history, which resumed runs
    and parallel evaluation rely on).
    """

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            np.random.seed(seed % 2**32)
        world = self.env.unwrapped
        if world.stored_state_id >= 0:
            world.bc.restoreState(world.stored_state_id)
        world.agent.apply_action(np.zeros(world.action_space.shape))
        return self.env.reset(seed=seed, options=options)


def make_env(name: str, seed: int | None = None) -> gym.Env:
    """A Bullet Safety Gym env with DSRL's episode length; ``seed`` seeds its first reset."""
    spec = task_spec(name)
    with real_std_streams():
        env = ReproducibleReset(gym.make(spec.gym_id, max_episode_steps=spec.max_episode_steps))
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def step_cost(info: dict[str, Any]) -> float:
    """The per-step cost; Bullet Safety Gym omits the ``cost`` key when the cost is zero."""
    return float(info.get("cost", 0.0))


def space_dims(env: gym.Env) -> tuple[int, int]:
    """(observation dim, action dim) of a flat Box env."""
    return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
