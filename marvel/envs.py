"""The paper's tasks through gymnasium, with DSRL's episode lengths and reference returns.

Two families: Bullet Safety Gym's Circle/Run tasks, and Safety-Gymnasium's velocity tasks rebuilt
on gymnasium's MuJoCo v4 envs (``safety-gymnasium`` itself does not install on Python 3.11; the
MuJoCo packages are the optional extra ``marvel[mujoco]``). Every constant about a task (episode
length, reference returns for normalization) is read from ``dsrl.infos`` at run time, never
copied, so marvel scores agree with DSRL's by construction.
"""

from __future__ import annotations

import importlib.util
import os
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

from marvel.errors import MarvelError  # noqa: E402

try:  # after bullet-safety-gym, which dsrl wraps; dsrl creates DSRL_DATASET_DIR at import
    from dsrl import infos as dsrl_infos
except OSError as err:
    raise MarvelError(
        f"DSRL_DATASET_DIR={os.environ.get('DSRL_DATASET_DIR', '~/.dsrl/datasets')} cannot be "
        f"created ({err.strerror}); set DSRL_DATASET_DIR to a writable dir"
    ) from None

BULLET_TASKS: tuple[str, ...] = (
    "BallCircle",
    "BallRun",
    "CarCircle",
    "CarRun",
    "DroneCircle",
    "DroneRun",
    "AntCircle",
    "AntRun",
)


@dataclass(frozen=True)
class VelocityConstraint:
    """Safety-Gymnasium's velocity constraint (safety-gymnasium 0.4.0, which dsrl 0.1.0 pins:
    ``safety_gymnasium/tasks/safety_velocity/*_v1.py``; unchanged since): a step costs 1 when
    the agent's velocity exceeds ``threshold``, else 0. The velocity is the forward x-velocity
    of the root, (x_after - x_before) / dt, or for Ant the speed of the torso's centre of mass
    in the xy-plane; gymnasium's v4 envs report both in ``info`` computed exactly so, and their
    rewards, terminations and observations are those Safety-Gymnasium inherits."""

    gym_id: str
    threshold: float
    planar: bool = False  # speed in the xy-plane (Ant) instead of the forward x-velocity

    def velocity(self, info: dict[str, Any]) -> float:
        if self.planar:
            return float(np.hypot(info["x_velocity"], info["y_velocity"]))
        return float(info["x_velocity"])

    def cost(self, info: dict[str, Any]) -> float:
        return float(self.velocity(info) > self.threshold)


# The v1 thresholds, the version DSRL's files were recorded on (SafetyXVelocityGymnasium-v1).
VELOCITY_CONSTRAINTS: dict[str, VelocityConstraint] = {
    "HalfCheetahVelocity": VelocityConstraint("HalfCheetah-v4", 3.2096),
    "HopperVelocity": VelocityConstraint("Hopper-v4", 0.7402),
    "SwimmerVelocity": VelocityConstraint("Swimmer-v4", 0.2282),
    "Walker2dVelocity": VelocityConstraint("Walker2d-v4", 2.3415),
    "AntVelocity": VelocityConstraint("Ant-v4", 2.6222, planar=True),
}
VELOCITY_TASKS: tuple[str, ...] = tuple(VELOCITY_CONSTRAINTS)
TASKS: tuple[str, ...] = BULLET_TASKS + VELOCITY_TASKS
MUJOCO_MODULES = ("mujoco", "imageio")  # what gymnasium's MuJoCo envs import
MUJOCO_EXTRA_HINT = 'install the MuJoCo extra: pip install -e ".[mujoco]"'


class UnknownTaskError(ValueError):
    """Raised for a task name marvel does not know; the message lists the valid ones."""


class MissingExtraError(MarvelError, ImportError):
    """A task whose simulator is an optional extra that is not installed; names the extra."""


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
    """Raise for an unknown task (listing the valid ones) or a missing simulator extra."""
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    if name in VELOCITY_CONSTRAINTS:
        missing = [m for m in MUJOCO_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise MissingExtraError(
                f"{name} runs on MuJoCo, but {', '.join(missing)} is not installed; "
                + MUJOCO_EXTRA_HINT
            )


def task_spec(name: str, cost_limit: float = 20.0) -> TaskSpec:
    """The task's DSRL constants (read from ``dsrl.infos``) and the episodic cost limit d."""
    check_task(name)
    if cost_limit < 0:
        raise ValueError(f"cost limit must be >= 0, got {cost_limit}")
    return TaskSpec(
        name=name,
        gym_id=VELOCITY_CONSTRAINTS[name].gym_id
        if name in VELOCITY_CONSTRAINTS
        else f"Safety{name}-v0",
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


class VelocityCost(gym.Wrapper):
    """Adds Safety-Gymnasium's per-step velocity cost to a gymnasium MuJoCo env's ``info``.

    No reset wrapper is needed here: a MuJoCo reset clears the whole simulator state and draws
    the initial state from the env's own seeded RNG, so an episode depends on its seed alone.
    """

    def __init__(self, env: gym.Env, constraint: VelocityConstraint) -> None:
        super().__init__(env)
        self.constraint = constraint

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["cost"] = self.constraint.cost(info)
        return obs, reward, terminated, truncated, info


def make_env(name: str, seed: int | None = None) -> gym.Env:
    """The task's env with DSRL's episode length and a ``cost`` in every step's ``info`` (Bullet
    omits it when zero, see ``step_cost``); ``seed`` seeds its first reset."""
    spec = task_spec(name)
    if name in VELOCITY_CONSTRAINTS:
        env = gym.make(spec.gym_id, max_episode_steps=spec.max_episode_steps)
        env = VelocityCost(env, VELOCITY_CONSTRAINTS[name])
    else:
        with real_std_streams():
            env = gym.make(spec.gym_id, max_episode_steps=spec.max_episode_steps)
        env = ReproducibleReset(env)
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
