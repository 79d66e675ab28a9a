"""Placing an agent at a recorded observation, and Monte-Carlo returns from placed states."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from marvel import envs
from marvel.envs import VELOCITY_TASKS, make_env, step_cost
from marvel.nets import SquashedGaussianActor
from marvel.placement import (
    BULLET_PLACEABLE_TASKS,
    PLACEABLE_TASKS,
    monte_carlo_from_states,
    place_at_observation,
    supports_placement,
)
from marvel.rollout import Policy
from tests.helpers import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

CHECKED_STEPS = (15, 30, 45)  # where a recorded episode's observation is placed in a fresh env
# Next-step tolerances (observation, reward). Ball and Ant: the placed state is the recorded one
# (the Ball rolls at these steps: a bouncing Ball's height is not recorded), so only Bullet's
# contact cache and the observation's float32 rounding separate the two (~1e-6; up to 6e-4 at
# these steps). Car: its drivetrain, height, roll and pitch are not recorded, and are estimated
# (marvel/placement.py): the velocities differ by ~1e-2 (up to ~1e-1 over random states).
NEXT_STEP_ATOL = {
    "BallCircle": (1e-3, 1e-3),
    "BallRun": (1e-3, 1e-3),
    "CarCircle": (1e-1, 1e-2),
    "CarRun": (1e-1, 2e-1),  # its reward is 60 x the step's progress
    "AntCircle": (1e-3, 1e-3),
    "AntRun": (1e-3, 1e-3),
}
VELOCITY_CHECKED_STEPS = (8, 16, 24)
# Hopper and Walker2d observe their velocities clipped to [-10, 10], and fall: small actions keep
# them upright and off the clip through these steps (Walker2d's joints reach it within ~5 steps of
# full-scale random actions).
CLIPPED_VELOCITY_TASKS = ("HopperVelocity", "Walker2dVelocity")
VELOCITY_ACTION_SCALE = {"HopperVelocity": 0.1, "Walker2dVelocity": 0.1}
# Next-step tolerance of the reward and the constrained velocity: MuJoCo is deterministic and the
# placed state is the recorded one, so they match to ~1e-15, but for the Ant's, which measure the
# torso's displacement from the position MuJoCo's RK4 step leaves one stage stale (~1e-3 at these
# steps, up to ~1e-1 over random states: marvel/placement.py).
VELOCITY_REWARD_ATOL = {"AntVelocity": 1e-2}


def recorded_episode(task: str, steps: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(observations (steps, obs_dim) float32, actions (steps, act_dim)) of uniform random
    actions from ``reset(seed=seed)``, as a dataset records them."""
    env = make_env(task)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    observations, actions = [], []
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_space.shape)
        observations.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated)
    env.close()
    return np.asarray(observations, dtype=np.float32), np.asarray(actions)


def tiny_actor(task: str) -> SquashedGaussianActor:
    env = make_env(task)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    torch.manual_seed(0)
    return SquashedGaussianActor(obs_dim, act_dim, [8])


def test_every_bullet_task_but_drone_is_placeable() -> None:
    assert set(BULLET_PLACEABLE_TASKS) == {
        f"{robot}{task}" for robot in ("Ball", "Car", "Ant") for task in ("Circle", "Run")
    }
    assert PLACEABLE_TASKS == BULLET_PLACEABLE_TASKS + VELOCITY_TASKS
    assert all(supports_placement(name) for name in BULLET_PLACEABLE_TASKS)
    assert not any(supports_placement(name) for name in ("DroneCircle", "DroneRun", "Hopper-v4"))


def test_velocity_tasks_are_placeable_with_the_mujoco_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in envs.MUJOCO_MODULES:
        pytest.importorskip(module)
    assert all(supports_placement(name) for name in VELOCITY_TASKS)
    monkeypatch.setattr(envs, "MUJOCO_MODULES", ("mujoco", "a_module_that_is_not_installed"))
    assert not any(supports_placement(name) for name in VELOCITY_TASKS)
    assert all(supports_placement(name) for name in BULLET_PLACEABLE_TASKS)


def test_placement_imports_without_mujoco() -> None:
    """``marvel.placement`` imports in a Python without the MuJoCo extra (it imports mujoco only
    to place a velocity task), and places no velocity task there."""
    hide_mujoco = (
        "import sys; sys.modules['mujoco'] = None; import marvel.placement as p; "
        "assert not p.supports_placement('HopperVelocity') and p.supports_placement('BallRun')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", hide_mujoco], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("task", BULLET_PLACEABLE_TASKS)
def test_placed_env_continues_like_the_recorded_one(task: str) -> None:
    """A fresh env placed at a recorded observation returns it, and its next step (same action)
    gives the recorded env's next observation, reward, cost and termination."""
    obs_atol, reward_atol = NEXT_STEP_ATOL[task]
    recorded, placed = make_env(task), make_env(task)
    obs, _ = recorded.reset(seed=1)
    rng = np.random.default_rng(1)
    for t in range(max(CHECKED_STEPS) + 1):
        action = rng.uniform(-1, 1, recorded.action_space.shape)
        if t in CHECKED_STEPS:
            placed.reset(seed=100 + t)
            dataset_obs = obs.astype(np.float32)
            placed_obs = place_at_observation(placed, dataset_obs)
            np.testing.assert_allclose(placed_obs, dataset_obs, rtol=0, atol=1e-5)
            expected = placed.step(action)
        obs, reward, terminated, truncated, info = recorded.step(action)
        assert not (terminated or truncated)
        if t in CHECKED_STEPS:
            np.testing.assert_allclose(expected[0], obs, rtol=0, atol=obs_atol)
            assert expected[1] == pytest.approx(reward, rel=0, abs=reward_atol)
            assert step_cost(expected[4]) == step_cost(info)
            assert expected[2:4] == (terminated, truncated)
    recorded.close()
    placed.close()


def velocity_episode(
    task: str, steps: int, seed: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """(observations (steps + 1, obs_dim) float64 as the env returns them, actions, rewards,
    infos) of uniform random actions (scaled by ``VELOCITY_ACTION_SCALE``) from
    ``reset(seed=seed)``."""
    env = make_env(task)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    scale = VELOCITY_ACTION_SCALE.get(task, 1.0)
    observations, actions, rewards, infos = [obs], [], [], []
    for _ in range(steps):
        action = scale * rng.uniform(-1, 1, env.action_space.shape)
        obs, reward, terminated, truncated, info = env.step(action)
        assert not (terminated or truncated)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        infos.append(info)
    env.close()
    return np.asarray(observations), np.asarray(actions), np.asarray(rewards), infos


@pytest.mark.parametrize("task", VELOCITY_TASKS)
def test_placed_velocity_env_continues_like_the_recorded_one(task: str) -> None:
    """A fresh MuJoCo env placed at a recorded observation returns it, and its next step (same
    action) gives the recorded env's next observation (to 1e-12), reward, velocity and cost; from
    the observation rounded to float32, as datasets store it, the next observation to 1e-4."""
    pytest.importorskip("mujoco")
    observations, actions, rewards, infos = velocity_episode(task, max(VELOCITY_CHECKED_STEPS) + 1)
    reward_atol = VELOCITY_REWARD_ATOL.get(task, 1e-12)
    env = make_env(task)
    n_velocities = env.unwrapped.model.nv
    for t in VELOCITY_CHECKED_STEPS:
        obs, recorded_next, info = observations[t], observations[t + 1], infos[t]
        if task in CLIPPED_VELOCITY_TASKS:
            assert np.abs(obs[-n_velocities:]).max() < 10  # off the clip
        env.reset(seed=100 + t)
        np.testing.assert_allclose(place_at_observation(env, obs), obs, rtol=0, atol=1e-12)
        next_obs, reward, terminated, truncated, placed_info = env.step(actions[t])
        np.testing.assert_allclose(next_obs, recorded_next, rtol=0, atol=1e-12)
        assert reward == pytest.approx(rewards[t], rel=0, abs=reward_atol)
        for key in ("x_velocity", "y_velocity"):
            if key in info:
                assert placed_info[key] == pytest.approx(info[key], rel=0, abs=reward_atol)
        assert placed_info["cost"] == info["cost"]
        assert not (terminated or truncated)
        env.reset(seed=100 + t)
        dataset_obs = obs.astype(np.float32)
        np.testing.assert_allclose(place_at_observation(env, dataset_obs), obs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(env.step(actions[t])[0], recorded_next, rtol=0, atol=1e-4)
    env.close()


def test_clipped_velocities_are_placed_as_observed() -> None:
    """Walker2d at a state where a joint's velocity is beyond the observation's clip: placement
    raises nothing and returns the observation, but the placed velocity is the clipped one, so
    the next step differs."""
    pytest.importorskip("mujoco")
    env = make_env("Walker2dVelocity")
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(8):
        action = rng.uniform(-1, 1, env.action_space.shape)
        obs, *_ = env.step(action)
    assert np.abs(obs[-env.unwrapped.model.nv :]).max() == 10  # at the clip
    action = rng.uniform(-1, 1, env.action_space.shape)
    placed = make_env("Walker2dVelocity")
    placed.reset(seed=0)
    np.testing.assert_allclose(place_at_observation(placed, obs), obs, rtol=0, atol=1e-12)
    recorded_next = env.step(action)[0]
    assert np.abs(placed.step(action)[0] - recorded_next).max() > 1e-3
    env.close()
    placed.close()


@pytest.mark.parametrize("task", ["BallCircle", "CarRun", "AntRun", "AntVelocity"])
def test_placement_is_independent_of_the_envs_past(task: str) -> None:
    """The same observation placed after different resets and histories steps identically."""
    if task in VELOCITY_TASKS:
        pytest.importorskip("mujoco")
    observations, actions = recorded_episode(task, steps=20)
    env = make_env(task)
    outcomes = []
    for reset_seed, history in ((0, 0), (7, 0), (0, 10)):
        env.reset(seed=reset_seed)
        for action in actions[:history]:
            env.step(action)
        placed_obs = place_at_observation(env, observations[-1])
        next_obs, reward, *_ = env.step(actions[-1])
        outcomes.append(np.concatenate([placed_obs, next_obs, [reward]]))
    np.testing.assert_array_equal(outcomes[0], outcomes[1])
    np.testing.assert_array_equal(outcomes[0], outcomes[2])
    env.close()


def test_placement_restarts_the_time_limit() -> None:
    """A placed env runs a whole episode before truncation, however far its episode had got."""
    observations, _ = recorded_episode("BallRun", steps=5)
    env = make_env("BallRun")
    episode_steps = env.spec.max_episode_steps
    env.reset(seed=0)
    for _ in range(episode_steps - 2):
        env.step(np.zeros(2))
    place_at_observation(env, observations[-1])
    truncations = [env.step(np.zeros(2))[3] for _ in range(episode_steps)]
    assert not any(truncations[:-1]) and truncations[-1]
    env.close()


def test_unplaceable_task_raises() -> None:
    env = make_env("DroneCircle")
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="DroneCircle"):
        place_at_observation(env, obs)
    env.close()


def test_placement_checks_its_inputs() -> None:
    env = make_env("BallRun")
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        place_at_observation(env, obs[:-1])
    env.close()
    never_reset = make_env("BallRun")
    with pytest.raises(ValueError, match="reset"):
        place_at_observation(never_reset, obs)
    never_reset.close()


def mc_returns(
    env: gym.Env,
    policy: Policy,
    observations: np.ndarray,
    actions: np.ndarray,
    **overrides: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``monte_carlo_from_states`` with small defaults, on the CPU."""
    kwargs = {"rollouts": 2, "horizon": 6, "gamma": 0.9, "reward_scale": 0.1, "seed": 0}
    return monte_carlo_from_states(
        env, policy, observations, actions, **(kwargs | overrides), device=torch.device("cpu")
    )


def test_monte_carlo_shapes_and_reproducibility() -> None:
    observations, actions = recorded_episode("BallCircle", steps=12)
    observations, actions = observations[::4], actions[::4]
    actor, env = tiny_actor("BallCircle"), make_env("BallCircle")
    caller_rng = torch.get_rng_state()
    reward, cost = mc_returns(env, actor, observations, actions, seed=3)
    assert torch.equal(torch.get_rng_state(), caller_rng)  # the policy noise is forked
    assert reward.shape == cost.shape == (3,)
    assert np.all(np.isfinite(reward)) and np.all((cost >= 0) & (cost <= 6))
    again = mc_returns(env, actor, observations, actions, seed=3)
    np.testing.assert_array_equal(again[0], reward)
    np.testing.assert_array_equal(again[1], cost)
    other_seed = mc_returns(env, actor, observations, actions, seed=4)
    assert not np.array_equal(other_seed[0], reward)  # the policy is stochastic
    with pytest.raises(ValueError, match="horizon"):
        mc_returns(env, actor, observations, actions, horizon=env.spec.max_episode_steps + 1)
    env.close()


@pytest.mark.parametrize("task", ["BallCircle", "CarRun"])
def test_monte_carlo_horizon_one_is_the_first_step(task: str) -> None:
    """With horizon 1 the returns are the first action's scaled reward and cost from the placed
    state, whatever the policy draws."""
    observations, actions = recorded_episode(task, steps=30)
    observations, actions = observations[[10, 29]], actions[[10, 29]]
    env = make_env(task)
    reward, cost = mc_returns(env, tiny_actor(task), observations, actions, rollouts=3, horizon=1)
    for i, (obs, action) in enumerate(zip(observations, actions, strict=True)):
        env.reset(seed=0)
        place_at_observation(env, obs)
        _, step_reward, _, _, info = env.step(action)
        assert reward[i] == pytest.approx(0.1 * step_reward, rel=1e-12, abs=1e-12)
        assert cost[i] == step_cost(info)
    env.close()


def test_monte_carlo_horizon_one_is_the_recorded_velocity_step() -> None:
    """On a MuJoCo task placement is exact: with horizon 1 the returns are the recorded steps'
    scaled rewards and costs."""
    pytest.importorskip("mujoco")
    observations, actions, rewards, infos = velocity_episode("HopperVelocity", steps=20)
    states = [5, 19]
    env = make_env("HopperVelocity")
    reward, cost = mc_returns(
        env,
        tiny_actor("HopperVelocity"),
        observations[states],
        actions[states],
        rollouts=2,
        horizon=1,
    )
    np.testing.assert_allclose(reward, 0.1 * rewards[states], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cost, [infos[i]["cost"] for i in states])
    env.close()


class ZeroPolicy:
    """Always a = 0: a rollout is then the same every time."""

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return torch.zeros(obs.shape[0], 2)


def test_monte_carlo_discounts_from_the_first_step() -> None:
    """G = sum_t gamma^t (reward_scale r_t, c_t), t = 0 the first action's step."""
    observations, actions = recorded_episode("CarCircle", steps=20)
    env = make_env("CarCircle")
    reward, cost = mc_returns(env, ZeroPolicy(), observations[-1:], actions[-1:], horizon=5)
    env.reset(seed=0)
    place_at_observation(env, observations[-1])
    steps = [env.step(a) for a in [actions[-1]] + [np.zeros(2)] * 4]
    discounts = 0.9 ** np.arange(5)
    expected_reward = 0.1 * sum(d * step[1] for d, step in zip(discounts, steps, strict=True))
    expected_cost = sum(d * step_cost(step[4]) for d, step in zip(discounts, steps, strict=True))
    assert reward[0] == pytest.approx(expected_reward, rel=1e-12, abs=1e-12)
    assert cost[0] == pytest.approx(expected_cost, rel=1e-12, abs=1e-12)
    env.close()
