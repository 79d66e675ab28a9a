"""Value Pre-Alignment (METHOD.md section 3): the target, the actor stays frozen, a fresh start,
and the paper's diagnostic: the critics' rank correlation with pi_0's Monte-Carlo returns from
dataset states goes up."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from marvel.data.buffer import ReplayBuffer
from marvel.envs import make_env, space_dims
from marvel.rollout import discounted_to_go, episode_seed, run_episode
from marvel.sac_lag import SACLag, SACLagConfig
from marvel.start import NetworkSizes
from marvel.vpa import VPAConfig, align, critic_diagnostic, diagnostic_sample, spearman

CPU = torch.device("cpu")


def test_spearman() -> None:
    assert spearman(np.array([3.0, 1.0, 3.0, 2.0]), np.array([4.0, 1.0, 4.0, 2.0])) == 1.0
    assert spearman(np.arange(10), np.arange(10) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)
    assert spearman(np.arange(5), np.zeros(5)) is None


def test_discounted_to_go() -> None:
    np.testing.assert_allclose(discounted_to_go(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])


def test_vpa_cost_target_carries_the_entropy_term() -> None:
    """With alpha_c^VPA > 0 and zero costs the cost critic learns -alpha_c E[log pi_0]-like
    values > 0, i.e. it is pessimistic where pi_0 is uncertain (METHOD.md section 3)."""
    torch.manual_seed(0)
    cfg = SACLagConfig(critic_cost_lr=1e-2)
    agent = SACLag(4, 2, cfg, NetworkSizes([32, 32], [32, 32]), CPU)
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
            "timeout": np.zeros(n),
        }
    )
    actor_before = copy.deepcopy(agent.actor.state_dict())
    align(agent, buffer, VPAConfig(alpha_cost=0.1, iterations=150))
    q_c = agent.cost_critic(buffer.storage["obs"], buffer.storage["act"])[0]
    assert q_c.mean().item() > 0.05  # entropy of a wide Gaussian actor is positive
    for key, value in agent.actor.state_dict().items():
        torch.testing.assert_close(value, actor_before[key])  # pi_0 is frozen


def test_vpa_raises_the_papers_diagnostic() -> None:
    """On pi_0's own data (a fixed random policy on BallCircle), VPA makes both critics rank
    dataset state-actions by pi_0's Monte-Carlo returns from those states."""
    torch.manual_seed(0)
    env = make_env("BallCircle")
    obs_dim, act_dim = space_dims(env)
    cfg = SACLagConfig(gamma=0.9, critic_reward_lr=1e-3)
    agent = SACLag(obs_dim, act_dim, cfg, NetworkSizes([64, 64], [64, 64]), CPU)
    episodes = [run_episode(env, agent.actor, CPU, seed=episode_seed(1, i)) for i in range(20)]
    offline = ReplayBuffer(obs_dim, act_dim, 20 * 200, CPU)
    for episode in episodes:
        offline.add(episode.transitions)
    keys = {"obs": "observations", "act": "actions"}
    data = {
        name: np.concatenate([e.transitions[key] for e in episodes]) for key, name in keys.items()
    }
    vpa_cfg = VPAConfig(
        iterations=400, diagnostic_states=24, diagnostic_rollouts=2, diagnostic_horizon=40
    )
    sample = diagnostic_sample(agent, env, data, vpa_cfg, seed=0)
    assert sample.obs.shape == (24, obs_dim) and set(sample.actions) == {"dataset", "random"}
    assert np.all(np.abs(sample.actions["random"]) <= 1)
    before = critic_diagnostic(agent, sample)
    align(agent, offline, vpa_cfg)
    after = critic_diagnostic(agent, sample)
    for key in ("spearman_reward_dataset", "spearman_cost_dataset"):
        assert after[key] > 0.5 and after[key] > before[key] + 0.3, (before, after)
    # the critics' mean values move towards the Monte-Carlo means
    gap = {
        w: abs(d["q_cost_dataset"] - d["mc_cost_dataset"]) for w, d in (("b", before), ("a", after))
    }
    assert gap["a"] < gap["b"], (before, after)
