"""Evaluation: the deterministic policy over N episodes, raw and DSRL-normalized (METHOD.md s.7)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import torch

from marvel.envs import TaskSpec
from marvel.nets import SquashedGaussianActor
from marvel.rollout import episode_seed, run_episode

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never share reset seeds with training ones


@dataclass
class EvalResult:
    """Mean unscaled returns over the evaluation episodes, raw and normalized."""

    reward: float
    cost: float
    normalized_reward: float
    normalized_cost: float
    reward_std: float
    cost_std: float
    episodes: int
    safe: bool
    cost_limit: float  # the episodic limit d the cost is normalized against (plotted beside it)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        return {f"{prefix}/{k}": float(v) for k, v in asdict(self).items()}


def evaluate(
    actor: SquashedGaussianActor,
    env: gym.Env,
    task: TaskSpec,
    num_episodes: int,
    seed: int,
    device: torch.device,
) -> EvalResult:
    """Run ``num_episodes`` episodes with a = tanh(mu(s)); normalize the mean returns.

    Normalization is the mean of returns passed through DSRL's formula (linear, so it equals
    the mean of per-episode normalized scores). Safe iff normalized cost <= 1.
    """
    rewards, costs = [], []
    for i in range(num_episodes):
        episode = run_episode(
            env, actor, device, seed=episode_seed(seed + EVAL_SEED_OFFSET, i), deterministic=True
        )
        rewards.append(episode.reward)
        costs.append(episode.cost)
    reward, cost = float(np.mean(rewards)), float(np.mean(costs))
    normalized_reward, normalized_cost = task.normalize(reward, cost)
    return EvalResult(
        reward=reward,
        cost=cost,
        normalized_reward=normalized_reward,
        normalized_cost=normalized_cost,
        reward_std=float(np.std(rewards)),
        cost_std=float(np.std(costs)),
        episodes=num_episodes,
        safe=normalized_cost <= 1.0,
        cost_limit=float(task.cost_limit),
    )
