"""Env checker over the 8 Bullet tasks: spaces, dtypes, reset/step API, cost key, DSRL lengths."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from dsrl import infos

from marvel.envs import TASKS, make_env, step_cost, task_spec
from marvel.errors import UnknownTaskError


@pytest.mark.parametrize("name", TASKS)
def test_env_api(name: str) -> None:
    env = make_env(name, seed=0)
    spec = task_spec(name)
    assert spec.max_episode_steps == infos.DEFAULT_MAX_EPISODE_STEPS[name]
    assert env.spec.max_episode_steps == spec.max_episode_steps
    assert isinstance(env.observation_space, gym.spaces.Box)
    assert isinstance(env.action_space, gym.spaces.Box)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset(seed=1)
    assert obs.shape == env.observation_space.shape and np.all(np.isfinite(obs))
    assert isinstance(info, dict)
    costs = []
    for _ in range(50):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == env.observation_space.shape and np.all(np.isfinite(obs))
        assert np.isscalar(reward) and np.isfinite(reward)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        cost = step_cost(info)
        assert cost >= 0.0 and ("cost" in info or cost == 0.0)
        costs.append(cost)
        if terminated or truncated:
            env.reset()
    env.close()


def test_same_seed_same_episode() -> None:
    def first_obs(seed: int) -> np.ndarray:
        env = make_env("BallRun")
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs] + [env.step(env.action_space.sample())[0] for _ in range(10)]
        env.close()
        return np.stack(out)

    np.testing.assert_array_equal(first_obs(3), first_obs(3))


def full_action_episode(env: gym.Env, seed: int, steps: int = 60) -> np.ndarray:
    """Observations of ``steps`` steps at full throttle (+1 on every actuator: the action most
    likely to leave motor commands behind) from ``reset(seed=seed)``."""
    obs, _ = env.reset(seed=seed)
    action = np.ones(env.action_space.shape, dtype=np.float32)
    return np.stack([obs] + [env.step(action)[0] for _ in range(steps)])


@pytest.mark.parametrize("name", TASKS)
def test_episode_independent_of_history(name: str) -> None:
    """An episode is the same in a fresh env and after other episodes (Car, Drone and Ant motor
    commands survive Bullet's state restore; marvel.envs.ReproducibleReset clears them)."""
    fresh = make_env(name)
    used = make_env(name)
    full_action_episode(used, seed=1)
    np.testing.assert_array_equal(full_action_episode(fresh, 7), full_action_episode(used, 7))
    fresh.close()
    used.close()


def test_episode_runs_to_dsrl_length() -> None:
    env = make_env("BallRun", seed=0)
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        steps += 1
        done = terminated or truncated
    assert steps <= infos.DEFAULT_MAX_EPISODE_STEPS["BallRun"]


def test_unknown_task_lists_valid_ones() -> None:
    with pytest.raises(UnknownTaskError, match="BallCircle, BallRun"):
        task_spec("PointGoal")


def test_negative_cost_limit_rejected() -> None:
    with pytest.raises(ValueError, match="cost limit"):
        task_spec("BallRun", cost_limit=-1)
