"""Safety-Gymnasium's velocity tasks rebuilt on gymnasium's MuJoCo v4 envs: the constraint of each
task and the wrapper that adds its per-step cost (``safety-gymnasium`` itself does not install on
Python 3.11; the MuJoCo packages are the optional extra ``marvel[mujoco]``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np


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
