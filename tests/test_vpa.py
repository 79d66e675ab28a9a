"""Value Pre-Alignment (METHOD.md section 3): the target, the actor stays frozen, and the
critics' rank correlation with pi_0's Monte-Carlo returns goes up."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from marvel.data.buffer import ReplayBuffer
from marvel.envs import make_env, space_dims
from marvel.rollout import episode_seed, run_episode
from marvel.sac_lag import SACLag, SACLagConfig
from marvel.vpa import (
    VPAConfig,
    align,
    critic_rank_correlation,
    discounted_to_go,
    monte_carlo_returns,
    rank,
    spearman,
)

CPU = torch.device("cpu")


def test_rank_and_spearman() -> None:
    np.testing.assert_array_equal(rank(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    assert spearman(np.arange(10), np.arange(10) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)
    assert spearman(np.arange(5), np.zeros(5)) is None


def test_discounted_to_go() -> None:
    np.testing.assert_allclose(discounted_to_go(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])


def test_vpa_cost_target_carries_the_entropy_term() -> None:
    """With alpha_c^VPA > 0 and zero costs the cost critic learns -alpha_c E[log pi_0]-like
    values > 0, i.e. it is pessimistic where pi_0 is uncertain (METHOD.md section 3)."""
    torch.manual_seed(0)
    cfg = SACLagConfig(hidden_sizes=[32, 32], cost_hidden_sizes=[32, 32], critic_cost_lr=1e-2)
    agent = SACLag(4, 2, cfg, CPU)
    buffer = ReplayBuffer(4, 2, 512, CPU)
    g = torch.Generator().manual_seed(0)
    n = 512
    buffer.add(
        {
            "obs": torch.randn(n, 4, generator=g).numpy(),
            "act": (torch.rand(n, 2, generator=g) * 2 - 1).numpy(),
            "reward": np.zeros(n),
            "cost": np.zeros(n),
            "next_obs": torch.randn(n, 4, generator=g).numpy(),
            "done": np.zeros(n),
        }
    )
    actor_before = copy.deepcopy(agent.actor.state_dict())
    align(agent, buffer, VPAConfig(alpha_cost=0.1, iterations=150))
    q_c = agent.cost_critic(buffer.storage["obs"], buffer.storage["act"])[0]
    assert q_c.mean().item() > 0.05  # entropy of a wide Gaussian actor is positive
    for key, value in agent.actor.state_dict().items():
        torch.testing.assert_close(value, actor_before[key])  # pi_0 is frozen


def test_vpa_raises_rank_correlation_with_monte_carlo_returns() -> None:
    torch.manual_seed(0)
    env = make_env("BallCircle")
    obs_dim, act_dim = space_dims(env)
    cfg = SACLagConfig(
        hidden_sizes=[64, 64], cost_hidden_sizes=[64, 64], gamma=0.9, critic_reward_lr=1e-3
    )
    agent = SACLag(obs_dim, act_dim, cfg, CPU)  # pi_0: a fixed (randomly initialized) policy
    offline = ReplayBuffer(obs_dim, act_dim, 20 * 200, CPU)
    for i in range(20):  # offline data: pi_0's own behaviour
        offline.add(run_episode(env, agent.actor, CPU, seed=episode_seed(1, i)).transitions)
    sample = monte_carlo_returns(agent, env, episodes=3, seed=0)
    before = critic_rank_correlation(agent, sample)
    align(agent, offline, VPAConfig(iterations=400))
    after = critic_rank_correlation(agent, sample)
    for key in ("spearman_reward", "spearman_cost"):  # about -0.1..0.1 before, 0.7..0.8 after
        assert after[key] > 0.5 and after[key] > before[key] + 0.3, (before, after)
