"""Why a finetuning run goes where it goes: per-iteration diagnostics on the latest rollout.

For the state-actions the stochastic policy just visited, the critics' estimates beside the
episodes' discounted returns-to-go (the quantities they estimate, in the critics' units: rewards
scaled by ``reward_scale``), the two sides of the actor loss of METHOD.md section 4 (the reward
value against lambda times the cost value), and how far pi has moved from pi_0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from marvel.nets import gaussian_kl
from marvel.rollout import Episode, discounted_to_go

if TYPE_CHECKING:
    from marvel.sac_lag import SACLag


@torch.no_grad()
def rollout_diagnostics(agent: SACLag, episodes: list[Episode], lam: float) -> dict[str, float]:
    """``diag/*`` means over every transition of ``episodes``:

    q_reward = min_j Q_r,j(s, a) and mc_reward = sum_k gamma^k reward_scale r_{t+k};
    q_cost = Q_c(s, a) and mc_cost = sum_k gamma^k c_{t+k} (both to the episode's end);
    lambda_q_cost = lambda q_cost (the actor loss trades q_reward against it);
    kl_to_pi0 = KL(pi(.|s) || pi_0(.|s)) of the pre-tanh Gaussians (pi_0: the starting policy);
    entropy = -E log pi(a~|s), a~ ~ pi (drawn under a forked RNG: training's stream is untouched).
    """
    cfg, device = agent.cfg, agent.device
    obs = torch.as_tensor(np.concatenate([e.transitions["obs"] for e in episodes]), device=device)
    act = torch.as_tensor(np.concatenate([e.transitions["act"] for e in episodes]), device=device)
    rewards = [cfg.reward_scale * e.transitions["reward"].astype(np.float64) for e in episodes]
    mc_reward = np.concatenate([discounted_to_go(r, cfg.gamma) for r in rewards])
    mc_cost = np.concatenate([discounted_to_go(e.transitions["cost"], cfg.gamma) for e in episodes])
    q_reward = agent.reward_critic(obs, act).min(0).values.mean().item()
    q_cost = agent.cost_critic(obs, act)[0].mean().item()
    mu, log_std = agent.actor.distribution(obs)
    kl = gaussian_kl(mu, log_std, *agent.prior_actor.distribution(obs)).mean().item()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        _, log_prob = agent.actor(obs)
    return {
        "diag/q_reward": q_reward,
        "diag/mc_reward": float(mc_reward.mean()),
        "diag/q_cost": q_cost,
        "diag/mc_cost": float(mc_cost.mean()),
        "diag/lambda_q_cost": lam * q_cost,
        "diag/kl_to_pi0": kl,
        "diag/entropy": -log_prob.mean().item(),
    }
