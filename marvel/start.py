"""What both phases build and what finetuning starts from (METHOD.md section 4): the networks'
sizes, their one builder, and ``Pretrained``, the output of every offline algorithm. One
builder for both phases makes the offline -> online transfer a strict load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from marvel.nets import CriticEnsemble, SquashedGaussianActor


@dataclass
class NetworkSizes:
    """The hidden sizes of pi, Q_r and Q_c, one set for both phases (``env.networks`` in
    conf/env/<task>.yaml; the collecting agent's: ``data.collect.networks``)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])  # actor and Q_r
    cost_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])  # Q_c
    num_reward_critics: int = 2


def build_critics(
    obs_dim: int, act_dim: int, sizes: NetworkSizes, device: torch.device
) -> tuple[CriticEnsemble, CriticEnsemble]:
    """Q_r (``num_reward_critics`` heads, min over heads) and Q_c (1 head)."""
    reward_critic = CriticEnsemble(obs_dim, act_dim, sizes.hidden_sizes, sizes.num_reward_critics)
    cost_critic = CriticEnsemble(obs_dim, act_dim, sizes.cost_hidden_sizes, 1)
    return reward_critic.to(device), cost_critic.to(device)


def build_networks(
    obs_dim: int, act_dim: int, sizes: NetworkSizes, device: torch.device
) -> tuple[SquashedGaussianActor, CriticEnsemble, CriticEnsemble]:
    """pi, then Q_r (``num_reward_critics`` heads) and Q_c (1 head): both phases' networks."""
    actor = SquashedGaussianActor(obs_dim, act_dim, sizes.hidden_sizes).to(device)
    return (actor, *build_critics(obs_dim, act_dim, sizes, device))


@dataclass
class Pretrained:
    """pi_0, Q_r, Q_c, the actor's optimizer state and the algorithm's own multiplier."""

    algo: str
    actor: SquashedGaussianActor
    reward_critic: CriticEnsemble
    cost_critic: CriticEnsemble
    actor_optimizer: dict[str, Any]  # torch optimizer state_dict (reused by finetuning)
    lagrange_multiplier: float  # the offline lambda (never carried over unless asked)
    sizes: NetworkSizes
    config: dict[str, Any]  # the algorithm's config, as a plain dict
    metrics: dict[str, float] = field(default_factory=dict)  # last logged training values

    def state_dict(self) -> dict[str, Any]:
        return {
            "algo": self.algo,
            "actor": self.actor.state_dict(),
            "reward_critic": self.reward_critic.state_dict(),
            "cost_critic": self.cost_critic.state_dict(),
            "actor_optimizer": self.actor_optimizer,
            "lagrange_multiplier": self.lagrange_multiplier,
            "sizes": asdict(self.sizes),
            "config": self.config,
            "metrics": self.metrics,
        }

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], obs_dim: int, act_dim: int, device: torch.device
    ) -> Pretrained:
        """Rebuild with a strict load (a mismatch raises RuntimeError naming the tensors)."""
        sizes = NetworkSizes(**state["sizes"])
        actor, reward_critic, cost_critic = build_networks(obs_dim, act_dim, sizes, device)
        actor.load_state_dict(state["actor"])
        reward_critic.load_state_dict(state["reward_critic"])
        cost_critic.load_state_dict(state["cost_critic"])
        return cls(
            algo=state["algo"],
            actor=actor,
            reward_critic=reward_critic,
            cost_critic=cost_critic,
            actor_optimizer=state["actor_optimizer"],
            lagrange_multiplier=float(state["lagrange_multiplier"]),
            sizes=sizes,
            config=dict(state["config"]),
            metrics=dict(state["metrics"]),
        )
