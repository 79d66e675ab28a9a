"""Running a policy in an env: whole episodes, as arrays ready for a replay buffer or a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from marvel.envs import step_cost


class Policy(Protocol):
    """What acts in an env: ``act(obs (1, obs_dim), deterministic) -> action (1, act_dim)``."""

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor: ...


class JumpStart:
    """JSRL's policy for one episode (Uchendu et al. 2023): the guide acts for the first
    ``guide_steps`` steps, the learner after; ``guide_acted`` counts the guide's steps."""

    def __init__(self, guide: Policy, learner: Policy, guide_steps: int) -> None:
        self.guide, self.learner, self.guide_steps = guide, learner, guide_steps
        self.steps = self.guide_acted = 0

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        guided = self.steps < self.guide_steps
        self.steps += 1
        self.guide_acted += guided
        return (self.guide if guided else self.learner).act(obs, deterministic)


@dataclass
class Episode:
    """One episode: transitions (leading axis = time) and its unscaled returns."""

    transitions: dict[str, np.ndarray]  # obs, act, reward, cost, next_obs, done, timeout
    reward: float
    cost: float

    @property
    def length(self) -> int:
        return len(self.transitions["obs"])


def discounted_to_go(values: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_k gamma^k x_{t+k} to the end of the episode."""
    out = np.zeros(len(values), dtype=np.float64)
    running = 0.0
    for t in range(len(values) - 1, -1, -1):
        running = values[t] + gamma * running
        out[t] = running
    return out


def episode_seed(seed: int, index: int) -> int:
    """A distinct, reproducible reset seed for episode ``index`` of a run seeded ``seed``.

    Seeding every reset (rather than only the first) makes an episode depend on (seed, index)
    alone, so a resumed run replays exactly what an uninterrupted one would.
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def run_episode(
    env: gym.Env,
    actor: Policy,
    device: torch.device,
    *,
    seed: int,
    deterministic: bool = False,
    action_noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Episode:
    """Roll out ``actor`` for one full episode (until termination or the time limit).

    ``action_noise`` adds N(0, action_noise^2) to each action (clipped to [-1, 1]): the extra
    exploration used when collecting datasets.
    """
    obs, _ = env.reset(seed=seed)
    steps: dict[str, list] = {k: [] for k in ("obs", "act", "reward", "cost", "next_obs", "done")}
    truncated = terminated = False
    while not (terminated or truncated):
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
        action = actor.act(obs_t, deterministic)[0].cpu().numpy()
        if action_noise > 0.0:
            assert rng is not None, "action noise needs an rng"
            action = np.clip(action + action_noise * rng.standard_normal(action.shape), -1, 1)
        next_obs, reward, terminated, truncated, info = env.step(action)
        for key, value in (
            ("obs", obs),
            ("act", action),
            ("reward", reward),
            ("cost", step_cost(info)),
            ("next_obs", next_obs),
            ("done", terminated),
        ):
            steps[key].append(value)
        obs = next_obs
    transitions = {k: np.asarray(v, dtype=np.float32) for k, v in steps.items()}
    transitions["timeout"] = np.zeros_like(transitions["done"])
    transitions["timeout"][-1] = float(truncated and not terminated)
    return Episode(
        transitions,
        reward=float(np.sum(steps["reward"])),
        cost=float(np.sum(steps["cost"])),
    )
