"""Value Pre-Alignment (METHOD.md section 3) and its Spearman diagnostic.

VPA re-fits the pretrained critics by policy evaluation of the frozen pretrained policy pi_0 on
the offline data, under the online soft objective, before any interaction:

    y_r = r + gamma (1 - d) [min_j Qbar_r,j(s', a') - alpha_r^VPA log pi_0(a'|s')]     (VPA-r)
    y_c = c + gamma (1 - d) [Qbar_c(s', a')        - alpha_c^VPA log pi_0(a'|s')]     (VPA-c)
    L_VPA = sum_j E_D (Q_r,j(s,a) - y_r)^2 + E_D (Q_c(s,a) - y_c)^2,   a' ~ pi_0(.|s')

The actor is not updated; targets track by Polyak averaging. The diagnostic is the Spearman
rank correlation between the critics' values and Monte-Carlo returns of pi_0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from marvel.data.buffer import ReplayBuffer
from marvel.errors import check_finite
from marvel.rollout import episode_seed, run_episode
from marvel.sac_lag import SACLag

DIAGNOSTIC_SEED_OFFSET = 20_000  # diagnostic rollouts share reset seeds with nothing else


@dataclass
class VPAConfig:
    """The ``vpa`` config group. Budget and minibatching are the released code's."""

    enabled: bool = False
    alpha_reward: float = 0.0  # alpha_r^VPA (0 and 0: the released code's plain `vpa`)
    alpha_cost: float = 0.0  # alpha_c^VPA (the paper: alpha_r^VPA > alpha_c^VPA)
    iterations: int = 5000  # each draws batch_size offline transitions
    batch_size: int = 256
    minibatch_size: int = 64  # one gradient step per minibatch (4 per iteration)
    diagnostic_episodes: int = 5  # pi_0 rollouts for the Spearman diagnostic (0: skip it)


def align(
    agent: SACLag,
    offline: ReplayBuffer,
    cfg: VPAConfig,
    log: Callable[[dict[str, float], int], None] | None = None,
    log_every: int = 500,
) -> dict[str, float]:
    """Run VPA on ``agent``'s critics with its actor as the frozen pi_0; returns mean losses of
    the last logging window (``NumericalFault`` if one is not finite). The critics' learning
    rates are the agent's (finetuning) ones."""
    totals: dict[str, torch.Tensor] = {}
    steps, last = 0, {}
    for iteration in range(1, cfg.iterations + 1):
        batch = offline.sample(cfg.batch_size)
        for start in range(0, cfg.batch_size, cfg.minibatch_size):
            minibatch = {k: v[start : start + cfg.minibatch_size] for k, v in batch.items()}
            losses = agent.critic_update(minibatch, cfg.alpha_reward, cfg.alpha_cost)
            agent.update_targets()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value
            steps += 1
        if iteration % log_every == 0 or iteration == cfg.iterations:
            last = {
                f"vpa/{name.split('/')[-1]}_loss": float(t) / steps for name, t in totals.items()
            }
            check_finite(last, "VPA", iteration)
            if log is not None:
                log(last, iteration)
            totals, steps = {}, 0
    return last


@dataclass
class MonteCarloSample:
    """State-actions visited by pi_0 and their discounted returns-to-go (reward scaled)."""

    obs: np.ndarray
    act: np.ndarray
    reward_return: np.ndarray
    cost_return: np.ndarray


def discounted_to_go(values: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_k gamma^k x_{t+k} to the end of the episode."""
    out = np.zeros(len(values), dtype=np.float64)
    running = 0.0
    for t in range(len(values) - 1, -1, -1):
        running = values[t] + gamma * running
        out[t] = running
    return out


def monte_carlo_returns(agent: SACLag, env: gym.Env, episodes: int, seed: int) -> MonteCarloSample:
    """Roll out pi_0 (stochastic, as the critics evaluate it) and record returns-to-go.

    Episodes end at the time limit, so returns near the end are truncated: the diagnostic
    compares rankings, which this bias disturbs little for gamma = 0.99 and long episodes.
    """
    cfg = agent.cfg
    parts = []
    for i in range(episodes):
        episode = run_episode(
            env, agent.actor, agent.device, seed=episode_seed(seed + DIAGNOSTIC_SEED_OFFSET, i)
        )
        t = episode.transitions
        parts.append(
            (
                t["obs"],
                t["act"],
                discounted_to_go(cfg.reward_scale * t["reward"], cfg.gamma),
                discounted_to_go(t["cost"], cfg.gamma),
            )
        )
    obs, act, reward_return, cost_return = (np.concatenate(p) for p in zip(*parts, strict=True))
    return MonteCarloSample(obs, act, reward_return, cost_return)


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation; None when either side is constant (e.g. no cost at all)."""
    rx, ry = rank(np.asarray(x, dtype=np.float64)), rank(np.asarray(y, dtype=np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


@torch.no_grad()
def critic_rank_correlation(agent: SACLag, sample: MonteCarloSample) -> dict[str, float | None]:
    """Spearman correlation of min_j Q_r,j and Q_c with pi_0's Monte-Carlo returns."""
    obs = torch.as_tensor(sample.obs, device=agent.device)
    act = torch.as_tensor(sample.act, device=agent.device)
    q_r = agent.reward_critic(obs, act).min(0).values.cpu().numpy()
    q_c = agent.cost_critic(obs, act)[0].cpu().numpy()
    return {
        "spearman_reward": spearman(q_r, sample.reward_return),
        "spearman_cost": spearman(q_c, sample.cost_return),
    }
