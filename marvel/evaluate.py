"""Evaluation: the deterministic policy over N episodes, raw and DSRL-normalized (METHOD.md s.7).

Episodes run one after the other in one env (the default), or ``eval_envs`` at a time in worker
processes through a gymnasium ``AsyncVectorEnv``. The scores are the same either way: every
episode is reset with its own seed, resets are free of the previous episode
(``marvel.envs.ReproducibleReset``), and each policy forward sees one observation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from marvel.envs import TaskSpec, make_env, step_cost
from marvel.nets import SquashedGaussianActor
from marvel.rollout import episode_seed, run_episode

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never share reset seeds with training ones


@dataclass
class EvalResult:
    """Mean unscaled returns over the evaluation episodes, raw and normalized, and how sure the
    mean cost is: its standard error over the episodes."""

    reward: float
    cost: float
    normalized_reward: float
    normalized_cost: float
    reward_std: float
    cost_std: float
    cost_se: float  # standard error of the mean cost: sample std / sqrt(episodes)
    normalized_cost_se: float
    episodes: int
    safe: bool  # normalized cost <= 1
    at_limit: bool  # the limit lies within one standard error of the mean: safe is not told
    cost_limit: float  # the episodic limit d the cost is normalized against (plotted beside it)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        return {f"{prefix}/{k}": float(v) for k, v in asdict(self).items()}


def make_eval_envs(task: TaskSpec | str, num_envs: int = 1) -> gym.Env | gym.vector.VectorEnv:
    """What ``evaluate`` runs on: one env in this process for ``num_envs == 1``, else an
    ``AsyncVectorEnv`` with one env per worker process. (Never several envs in one process:
    Bullet Safety Gym draws from NumPy's global RNG, so they would perturb each other.)"""
    if num_envs < 1:
        raise ValueError(f"eval_envs must be >= 1, got {num_envs}")
    if num_envs == 1:
        return make_env(task)
    return gym.vector.AsyncVectorEnv([partial(make_env, task)] * num_envs, context="spawn")


def vector_step_costs(info: dict[str, Any], ended: np.ndarray) -> np.ndarray:
    """Per-env step costs from a vector env's ``info``. An env whose episode just ended has been
    reset already: its last step's info sits in ``final_info``. Bullet Safety Gym omits ``cost``
    when it is zero, so the key may be missing or masked off (``_cost``)."""
    costs = np.zeros(len(ended))
    if "cost" in info:
        costs = np.where(info["_cost"], info["cost"], 0.0).astype(np.float64)
    for i in np.flatnonzero(ended):
        costs[i] = step_cost(info["final_info"][i])
    return costs


def evaluate(
    actor: SquashedGaussianActor,
    envs: gym.Env | gym.vector.VectorEnv,
    task: TaskSpec,
    num_episodes: int,
    seed: int,
    device: torch.device,
    progress: str | None = None,
) -> EvalResult:
    """Run ``num_episodes`` episodes with a = tanh(mu(s)); normalize the mean returns.

    Episode i is reset with ``episode_seed(seed + EVAL_SEED_OFFSET, i)``. Normalization is the
    mean of returns passed through DSRL's formula (linear, so it equals the mean of per-episode
    normalized scores). Safe iff normalized cost <= 1. ``progress``: a progress bar's label
    (None: no bar, as inside finetuning, whose own bar runs).
    """
    seeds = [episode_seed(seed + EVAL_SEED_OFFSET, i) for i in range(num_episodes)]
    with tqdm(total=num_episodes, desc=progress, unit="ep", disable=progress is None) as bar:
        if isinstance(envs, gym.vector.VectorEnv):
            returns = parallel_returns(actor, envs, seeds, device, on_wave=bar.update)
        else:
            returns = []
            for reset_seed in seeds:
                episode = run_episode(envs, actor, device, seed=reset_seed, deterministic=True)
                returns.append((episode.reward, episode.cost))
                bar.update()
    rewards, costs = (np.array(r) for r in zip(*returns, strict=True))
    reward, cost = float(np.mean(rewards)), float(np.mean(costs))
    # one episode has no error estimate: infinitely unsure
    cost_se = float(np.std(costs, ddof=1) / np.sqrt(num_episodes)) if num_episodes > 1 else np.inf
    normalized_reward, normalized_cost = task.normalize(reward, cost)
    normalized_cost_se = task.normalize(reward, cost + cost_se)[1] - normalized_cost
    return EvalResult(
        reward=reward,
        cost=cost,
        normalized_reward=normalized_reward,
        normalized_cost=normalized_cost,
        reward_std=float(np.std(rewards)),
        cost_std=float(np.std(costs)),
        cost_se=cost_se,
        normalized_cost_se=normalized_cost_se,
        episodes=num_episodes,
        safe=normalized_cost <= 1.0,
        at_limit=abs(normalized_cost - 1.0) <= normalized_cost_se,
        cost_limit=float(task.cost_limit),
    )


def parallel_returns(
    actor: SquashedGaussianActor,
    envs: gym.vector.VectorEnv,
    seeds: list[int],
    device: torch.device,
    on_wave: Callable[[int], object] = lambda episodes: None,
) -> list[tuple[float, float]]:
    """(reward, cost) of the episodes reset with ``seeds``, ``envs.num_envs`` at a time (the
    surplus envs of the last wave rerun its first seeds, uncounted), summed as ``run_episode``
    sums them, so the figures equal the sequential loop's to the last bit."""
    n = envs.num_envs
    returns = []
    for first in range(0, len(seeds), n):
        wave = seeds[first : first + n]
        obs, _ = envs.reset(seed=(wave * n)[:n])
        running, lengths = np.ones(n, dtype=bool), np.zeros(n, dtype=int)
        step_rewards, step_costs = [], []
        while running.any():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            # One row per forward: a batched matmul may round differently from a single row.
            action = torch.cat([actor.act(row, deterministic=True) for row in obs_t.split(1)])
            obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
            ended = terminated | truncated
            step_rewards.append(reward)
            step_costs.append(vector_step_costs(info, ended))
            lengths += running
            running &= ~ended
        for i in range(len(wave)):
            returns.append(
                (
                    float(np.sum([r[i] for r in step_rewards[: lengths[i]]])),
                    float(np.sum([c[i] for c in step_costs[: lengths[i]]])),
                )
            )
        on_wave(len(wave))
    return returns
