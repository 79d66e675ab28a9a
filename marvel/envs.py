"""The paper's tasks through gymnasium, with DSRL's episode lengths and reference returns, and
your own env (``env=custom``: any gymnasium id or ``module:Class`` whose steps report a cost).

The paper's tasks come in two families: Bullet Safety Gym's Circle/Run tasks, and
Safety-Gymnasium's velocity tasks rebuilt on gymnasium's MuJoCo v4 envs (``marvel.velocity``).
Every constant about a paper task (episode length, reference returns for
normalization) is read from ``dsrl.infos`` at run time, never copied, so marvel scores agree with
DSRL's by construction.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env


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
    from bullet_safety_gym.envs.builder import EnvironmentBuilder  # registers the Safety*-v0 envs

from marvel.errors import MarvelError, MissingExtraError, UnknownTaskError  # noqa: E402
from marvel.velocity import VELOCITY_CONSTRAINTS, VelocityCost  # noqa: E402

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


VELOCITY_TASKS: tuple[str, ...] = tuple(VELOCITY_CONSTRAINTS)
TASKS: tuple[str, ...] = BULLET_TASKS + VELOCITY_TASKS
CUSTOM = "custom"  # the env config of your own env (conf/env/custom.yaml), and its default name
MUJOCO_MODULES = ("mujoco", "imageio")  # what gymnasium's MuJoCo envs import
MUJOCO_EXTRA_HINT = 'install the MuJoCo extra: pip install -e ".[mujoco]"'


@dataclass(frozen=True)
class TaskSpec:
    """What marvel needs to know about one task (METHOD.md sections 1 and 7). A paper task's
    constants come from ``dsrl.infos``; your own env's from its config (``custom``), where the
    reference returns are optional: without them rewards are reported raw."""

    name: str
    gym_id: str  # a registered gymnasium id, or module:Class
    max_episode_steps: int
    reward_min: float | None
    reward_max: float | None
    cost_limit: float
    custom: bool = False

    @property
    def has_reference_returns(self) -> bool:
        return self.reward_min is not None and self.reward_max is not None

    def normalize(self, reward: float, cost: float) -> tuple[float, float]:
        """DSRL normalization (METHOD.md section 7); the raw reward without reference returns.

        R_n = (R - R_min) / (R_max - R_min);  C_n = (C + eps) / (d + eps), eps = 1 iff d == 0.
        """
        eps = 1.0 if self.cost_limit == 0 else 0.0
        normalized_reward = reward
        if self.has_reference_returns:
            normalized_reward = (reward - self.reward_min) / (self.reward_max - self.reward_min)
        normalized_cost = (cost + eps) / (self.cost_limit + eps)
        return float(normalized_reward), float(normalized_cost)


def check_task(name: str) -> None:
    """Raise for an unknown task (listing the valid ones) or a missing simulator extra."""
    if name not in TASKS:
        raise UnknownTaskError(
            f"unknown task {name!r}; valid tasks: {', '.join(TASKS)} (or your own env: "
            "env=custom env.gym_id=<gymnasium id or module:Class>)"
        )
    if name in VELOCITY_CONSTRAINTS:
        missing = [m for m in MUJOCO_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise MissingExtraError(
                f"{name} runs on MuJoCo, but {', '.join(missing)} is not installed; "
                + MUJOCO_EXTRA_HINT
            )


def _check_cost_limit(cost_limit: float) -> None:
    if cost_limit < 0:
        raise ValueError(f"cost limit must be >= 0, got {cost_limit}")


def task_spec(name: str, cost_limit: float = 20.0) -> TaskSpec:
    """The task's DSRL constants (read from ``dsrl.infos``) and the episodic cost limit d."""
    check_task(name)
    _check_cost_limit(cost_limit)
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


def custom_task(
    name: str,
    gym_id: str,
    max_episode_steps: int,
    cost_limit: float,
    reward_min: float | None = None,
    reward_max: float | None = None,
) -> TaskSpec:
    """Your own env as a task: its name, gymnasium id (or module:Class), episode length, cost
    limit and optional reference returns. Raises MarvelError naming the setting to fix."""
    if name in TASKS:  # a paper task's constants are DSRL's
        raise MarvelError(
            f"env.name={name} is one of the paper's tasks; give your env a name of its own"
        )
    if max_episode_steps is None or max_episode_steps < 1:
        raise MarvelError(f"env.max_episode_steps must be >= 1 for env.gym_id={gym_id}")
    if (reward_min is None) != (reward_max is None) or (
        reward_min is not None and reward_min >= reward_max
    ):
        raise MarvelError(
            f"env.reward_min={reward_min}, env.reward_max={reward_max}: give both, with "
            "reward_min < reward_max, or neither (raw rewards)"
        )
    _check_cost_limit(cost_limit)
    return TaskSpec(
        name=name,
        gym_id=gym_id,
        max_episode_steps=int(max_episode_steps),
        reward_min=None if reward_min is None else float(reward_min),
        reward_max=None if reward_max is None else float(reward_max),
        cost_limit=float(cost_limit),
        custom=True,
    )


def task_from_config(env_cfg: Any) -> TaskSpec:
    """The task an ``env`` config describes: a paper task, or your own env when it sets
    ``gym_id``."""
    if env_cfg.gym_id is None and env_cfg.name == CUSTOM:
        raise MarvelError(
            "env=custom needs env.gym_id=<gymnasium id or module:Class> and "
            "env.max_episode_steps=<its episode length>"
        )
    if env_cfg.gym_id is None:
        return task_spec(env_cfg.name, env_cfg.cost_limit)
    return custom_task(
        env_cfg.name,
        env_cfg.gym_id,
        env_cfg.max_episode_steps,
        env_cfg.cost_limit,
        env_cfg.reward_min,
        env_cfg.reward_max,
    )


def task_from_record(record: dict[str, Any], cost_limit: float) -> TaskSpec:
    """The task a checkpoint records (``TaskSpec`` fields), at ``cost_limit``."""
    _check_cost_limit(cost_limit)
    return dataclasses.replace(TaskSpec(**record), cost_limit=float(cost_limit))


def as_task(task: TaskSpec | str) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else task_spec(task)


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
        gym.Env.reset(world, seed=seed)  # seeds its (unused) np_random, as gymnasium expects
        if world.stored_state_id >= 0:
            world.bc.restoreState(world.stored_state_id)
        world.agent.apply_action(np.zeros(world.action_space.shape))
        return self.env.reset(seed=seed, options=options)


def gym_make(gym_id: str, max_episode_steps: int) -> gym.Env:
    """``gym.make`` for a registered id, ``module:Id`` (the module registers ``Id``) or
    ``module:Class``, with the episode length; MarvelError naming the id otherwise."""
    if gym_id in gym.registry:
        return gym.make(gym_id, max_episode_steps=max_episode_steps)
    module, sep, attr = gym_id.partition(":")
    if not sep:
        raise MarvelError(
            f"env.gym_id={gym_id} is not a registered gymnasium id; give a registered one or "
            "module:Class (module:Id when the module registers it)"
        )
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise MarvelError(f"env.gym_id={gym_id}: cannot import {module} ({err})") from None
    if attr in gym.registry:
        return gym.make(attr, max_episode_steps=max_episode_steps)
    if not hasattr(sys.modules[module], attr):
        raise MarvelError(f"env.gym_id={gym_id}: {module} has no {attr}")
    spec = gym.envs.registration.EnvSpec(
        id=attr, entry_point=gym_id, max_episode_steps=max_episode_steps
    )
    return gym.make(spec)


def make_env(task: TaskSpec | str, seed: int | None = None) -> gym.Env:
    """The task's env (a TaskSpec, or a paper task's name) with its episode length and a
    ``cost`` in every step's ``info`` (Bullet omits it when zero, see ``step_cost``); ``seed``
    seeds its first reset."""
    spec = as_task(task)
    if not spec.custom and spec.name in VELOCITY_CONSTRAINTS:
        env = gym.make(spec.gym_id, max_episode_steps=spec.max_episode_steps)
        env = VelocityCost(env, VELOCITY_CONSTRAINTS[spec.name])
    else:
        with real_std_streams():
            env = gym_make(spec.gym_id, spec.max_episode_steps)
        if isinstance(env.unwrapped, EnvironmentBuilder):
            env = ReproducibleReset(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def check_custom_env(task: TaskSpec) -> None:
    """Your env, built as marvel builds it, through gymnasium's env checker, and its spaces
    against what marvel's networks need (flat Box observations, Box actions in [-1, 1], since
    the actor's tanh acts there). Raises MarvelError with one line naming what fails."""
    env = make_env(task)
    try:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise MarvelError(
                f"env.gym_id={task.gym_id}: marvel needs a flat Box observation space, got "
                f"{obs_space} (gymnasium.wrappers.FlattenObservation flattens one)"
            )
        if not isinstance(act_space, gym.spaces.Box) or not (
            np.all(act_space.low == -1) and np.all(act_space.high == 1)
        ):
            raise MarvelError(
                f"env.gym_id={task.gym_id}: marvel's actor acts in [-1, 1], the action space is "
                f"{act_space} (gymnasium.wrappers.RescaleAction maps one onto [-1, 1])"
            )
        with real_std_streams(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its advice (seeding style, wrappers) is not a fault
            check_env(env, skip_render_check=True)
    except MarvelError:
        raise
    except Exception as err:  # the checker's assertions and whatever the env itself raises
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise MarvelError(
            f"env.gym_id={task.gym_id} fails gymnasium's env checker: {first_line}"
        ) from None
    finally:
        env.close()


def step_cost(info: dict[str, Any]) -> float:
    """The per-step cost; Bullet Safety Gym omits the ``cost`` key when the cost is zero."""
    return float(info.get("cost", 0.0))


def space_dims(env: gym.Env) -> tuple[int, int]:
    """(observation dim, action dim) of a flat Box env."""
    return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
