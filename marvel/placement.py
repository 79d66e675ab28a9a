"""Placing an agent at a recorded observation, and Monte-Carlo returns from there (the paper's
critic diagnostic, METHOD.md section 3): the simulator is set to the state a dataset observation
records, the first action applied, then pi_0 rolled out. What each robot's observation records,
and how closely the placed env then follows the recorded one: docs/PLACEMENT.md.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from bullet_safety_gym.envs import agents, tasks
from gymnasium.wrappers import TimeLimit

from marvel.envs import VELOCITY_TASKS, check_task, step_cost
from marvel.errors import MissingExtraError
from marvel.rollout import Policy
from marvel.velocity import VELOCITY_CONSTRAINTS

BULLET_PLACEABLE_TASKS: tuple[str, ...] = (
    "BallCircle",
    "BallRun",
    "CarCircle",
    "CarRun",
    "AntCircle",
    "AntRun",
)
# The velocity tasks' leading qpos entries (world x, or x and y) their observations exclude.
VELOCITY_EXCLUDED_POSITIONS = {
    "HalfCheetahVelocity": 1,
    "HopperVelocity": 1,
    "SwimmerVelocity": 2,
    "Walker2dVelocity": 1,
    "AntVelocity": 2,
}
# Every task placement handles; the velocity tasks need the MuJoCo extra (``supports_placement``).
PLACEABLE_TASKS: tuple[str, ...] = BULLET_PLACEABLE_TASKS + VELOCITY_TASKS
DRONE_REASON = (
    "its next step depends on Bullet's cached rotor link transforms and the blade angles, which "
    "the observation does not record"
)
UNPLACEABLE_REASONS = {"DroneCircle": DRONE_REASON, "DroneRun": DRONE_REASON}
ROBOT_NAMES = {agents.Ball: "Ball", agents.RaceCar: "Car", agents.Drone: "Drone", agents.Ant: "Ant"}
TASK_NAMES = {tasks.CircleTask: "Circle", tasks.RunTask: "Run"}
VELOCITY_TASK_NAMES = {constraint.gym_id: name for name, constraint in VELOCITY_CONSTRAINTS.items()}

# racecar_differential.urdf, before the agent's global_scaling: wheel radius, rear axle to hinges.
CAR_WHEEL_RADIUS = 0.05
CAR_WHEELBASE = 0.325
CAR_ROLLING_JOINTS = (
    "left_front_wheel_joint",
    "right_front_wheel_joint",
    "diff_ring_chassis",
    "diff2_ring_chassis",
)


def supports_placement(task_name: str) -> bool:
    """Whether ``place_at_observation`` can place ``task_name``'s agent (see the module doc); for
    a velocity task, whether the MuJoCo extra is installed too (checked as ``marvel.envs`` does,
    without importing it)."""
    if task_name in VELOCITY_TASKS:
        try:
            check_task(task_name)
        except MissingExtraError:
            return False
        return True
    return task_name in BULLET_PLACEABLE_TASKS


def _task_name(env: gym.Env) -> str:
    """The marvel task name of a Bullet Safety Gym env (e.g. ``CarRun``) or of a velocity task's
    MuJoCo env (e.g. ``HopperVelocity``, from its gym id ``Hopper-v4``), else its gym id."""
    world = env.unwrapped
    agent, task = getattr(world, "agent", None), getattr(world, "task", None)
    if type(agent) in ROBOT_NAMES and type(task) in TASK_NAMES:
        return ROBOT_NAMES[type(agent)] + TASK_NAMES[type(task)]
    if env.spec is None:
        return type(world).__name__
    return VELOCITY_TASK_NAMES.get(env.spec.id, env.spec.id)


def place_at_observation(env: gym.Env, obs: np.ndarray) -> np.ndarray:
    """Set the simulator of ``env`` (reset beforehand) to the state ``obs`` records; return the
    observation recomputed from the simulator.

    Sets the agent's base pose and velocities, its joints, the task's reward bookkeeping and the
    TimeLimit's step counter (a full episode may follow); state the observation omits is set as
    the module doc describes, independently of the reset's seed. A velocity task's MuJoCo state
    is set whole but the root's x (and y) position, set to 0; Hopper and Walker2d observe their
    velocities clipped to [-10, 10], so there placement is exact only while none is at the clip
    (nothing is raised: dataset observations are placed as they are).
    """
    name = _task_name(env)
    if not supports_placement(name):
        reason = UNPLACEABLE_REASONS.get(name, f"placeable: {', '.join(PLACEABLE_TASKS)}")
        raise ValueError(f"placement is not supported for {name}: {reason}")
    world = env.unwrapped
    obs = np.asarray(obs, dtype=np.float64)
    if obs.shape != env.observation_space.shape:
        expected = env.observation_space.shape
        raise ValueError(f"{name} observations have shape {expected}, got {obs.shape}")
    time_limit = _time_limit(env)
    if time_limit._elapsed_steps is None:
        raise ValueError("reset the env before placing it")
    time_limit._elapsed_steps = 0
    if name in VELOCITY_EXCLUDED_POSITIONS:
        _place_mujoco(world, obs, VELOCITY_EXCLUDED_POSITIONS[name])
        return world._get_obs()
    _PLACERS[type(world.agent)](world.agent, obs)
    if isinstance(world.task, tasks.RunTask):
        world.task.old_potential = world.task.calculate_task_potential()
    return world.get_observation()


def _time_limit(env: gym.Env) -> TimeLimit:
    """The TimeLimit wrapper inside ``env``'s wrapper chain."""
    while not isinstance(env, TimeLimit):
        if not isinstance(env, gym.Wrapper):
            raise ValueError("the env has no TimeLimit wrapper")
        env = env.env
    return env


def _place_ball(agent: agents.Ball, obs: np.ndarray) -> None:
    """Ball: resting on the ground (z = radius, vz = 0), unrotated."""
    position = [obs[0] / 0.1, obs[1] / 0.1, agent.radius]
    agent.bc.resetBasePositionAndOrientation(agent.body_id, position, [0.0, 0.0, 0.0, 1.0])
    agent.bc.resetBaseVelocity(agent.body_id, [obs[2] / 0.2, obs[3] / 0.2, 0.0], obs[4:7] / 0.1)


def _place_car(agent: agents.RaceCar, obs: np.ndarray) -> None:
    """Car: flat on its wheels, rolling without slip, steering by the bicycle model."""
    bc, scale = agent.bc, agent.global_scaling
    velocity, yaw, yaw_rate = obs[2:4], np.arctan2(obs[4], obs[5]), obs[6] / 0.1
    position = [obs[0] / 0.1, obs[1] / 0.1, CAR_WHEEL_RADIUS * scale]
    bc.resetBasePositionAndOrientation(
        agent.body_id, position, bc.getQuaternionFromEuler([0.0, 0.0, yaw])
    )
    bc.resetBaseVelocity(agent.body_id, [*velocity, 0.0], [0.0, 0.0, yaw_rate])
    forward = velocity @ np.array([np.cos(yaw), np.sin(yaw)])
    wheel_speed = forward / (CAR_WHEEL_RADIUS * scale)
    steer = np.arctan2(CAR_WHEELBASE * scale * yaw_rate * np.sign(forward), abs(forward))
    steer = np.clip(steer, -agent.steering_multiplier, agent.steering_multiplier)
    for joint in agent.motor_list:
        if joint.index in agent.steering_links:
            joint.set_state(steer, 0.0)
        else:
            joint.set_state(0.0, wheel_speed if joint.name in CAR_ROLLING_JOINTS else 0.0)


def _place_ant(agent: agents.Ant, obs: np.ndarray) -> None:
    """Ant: base, joints (positions from their limits) and the feet contacts, all recorded."""
    bc, n = agent.bc, len(agent.motor_list)
    orientation = obs[6:10] / np.linalg.norm(obs[6:10])
    bc.resetBasePositionAndOrientation(agent.body_id, obs[0:3] / 0.1, orientation)
    bc.resetBaseVelocity(agent.body_id, obs[3:6] / 0.3, obs[10:13] / 0.15)
    joint_obs = obs[13 : 13 + 2 * n].reshape(n, 2) / 0.5
    for joint, (unit_position, scaled_velocity) in zip(agent.motor_list, joint_obs, strict=True):
        middle = 0.5 * (joint.lower_limit + joint.upper_limit)
        half_range = 0.5 * (joint.upper_limit - joint.lower_limit)
        joint.set_state(middle + unit_position * half_range, scaled_velocity / 0.1)
    feet = obs[13 + 2 * n : 13 + 2 * n + len(agent.foot_list)]
    agent.feet_contact = feet.astype(np.float32)


def _place_mujoco(world: gym.Env, obs: np.ndarray, excluded: int) -> None:
    """A velocity task's MuJoCo robot: qpos (the ``excluded`` root positions 0) and qvel, the
    whole state. The simulator data is first reset as the env's own reset does (``mj_resetData``:
    the previous action's ``ctrl``, the solver's warm start and the time cleared), so the placed
    env is the env reset to this state, whatever its past. ``set_state`` runs ``mj_forward``,
    which normalizes the Ant's quaternion in qpos (a float32 one's norm is 1 to ~1e-7: the
    returned observation moves as little)."""
    import mujoco  # the MuJoCo extra: imported only where a velocity task is placed

    n_observed = world.model.nq - excluded
    qpos = np.concatenate([np.zeros(excluded), obs[:n_observed]])
    mujoco.mj_resetData(world.model, world.data)
    world.set_state(qpos, obs[n_observed : n_observed + world.model.nv].copy())


_PLACERS = {agents.Ball: _place_ball, agents.RaceCar: _place_car, agents.Ant: _place_ant}


def monte_carlo_from_states(
    env: gym.Env,
    policy: Policy,
    observations: np.ndarray,
    first_actions: np.ndarray,
    rollouts: int,
    horizon: int,
    gamma: float,
    reward_scale: float,
    seed: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean discounted returns of ``policy`` from placed states, shapes (N,) and (N,).

    For state i, ``rollouts`` times: reset ``env`` (seeded from (seed, i, rollout)), place it at
    ``observations[i]``, step with ``first_actions[i]``, then with the stochastic policy, for
    ``horizon`` steps in all or until termination. Returns the means over rollouts of
    sum_t gamma^t reward_scale r_t and sum_t gamma^t c_t (t = 0 the first action's step). Policy
    noise is drawn under a forked torch RNG seeded per rollout: the caller's stream is untouched.
    """
    observations, first_actions = np.asarray(observations), np.asarray(first_actions)
    if len(observations) != len(first_actions):
        raise ValueError(f"{len(observations)} observations but {len(first_actions)} first actions")
    if rollouts < 1:
        raise ValueError(f"rollouts must be >= 1, got {rollouts}")
    max_steps = _time_limit(env)._max_episode_steps
    if not 1 <= horizon <= max_steps:
        raise ValueError(f"horizon must be in [1, {max_steps}] (the episode length), got {horizon}")
    reward_returns = np.zeros(len(observations))
    cost_returns = np.zeros(len(observations))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for i, (obs, first_action) in enumerate(zip(observations, first_actions, strict=True)):
            for k in range(rollouts):
                reset_seed, torch_seed = np.random.SeedSequence([seed, i, k]).generate_state(2)
                torch.manual_seed(int(torch_seed))
                env.reset(seed=int(reset_seed))
                place_at_observation(env, obs)
                reward, cost = _discounted_returns(
                    env, policy, first_action, horizon, gamma, device
                )
                reward_returns[i] += reward
                cost_returns[i] += cost
    return reward_scale * reward_returns / rollouts, cost_returns / rollouts


def _discounted_returns(
    env: gym.Env,
    policy: Policy,
    first_action: np.ndarray,
    horizon: int,
    gamma: float,
    device: torch.device,
) -> tuple[float, float]:
    """(sum_t gamma^t r_t, sum_t gamma^t c_t) of one rollout from the env's current state."""
    reward_return = cost_return = 0.0
    action = first_action
    for t in range(horizon):
        obs, reward, terminated, _, info = env.step(action)
        reward_return += gamma**t * reward
        cost_return += gamma**t * step_cost(info)
        if terminated or t + 1 == horizon:  # horizon <= the episode length: never truncated
            break
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
        action = policy.act(obs_t, deterministic=False)[0].cpu().numpy()
    return reward_return, cost_return
