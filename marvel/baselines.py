"""The paper's O2O baselines under aPID (METHOD.md section 6) as plug-ins of the online loop.

A baseline implements only the hooks it needs; every hook's default leaves Marvel's loop as it
is. The hooks: the acting policy of an episode (JSRL, PEX), the source of an update's samples
(hybrid replay), an extra actor-loss term (KL to pi_0) and a transform of the target actions
(SO2's target noise). ``make_baselines`` builds the ones ``BaselinesConfig`` (the config's
``baselines`` key) switches on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from marvel.data.buffer import Batch, ReplayBuffer
from marvel.nets import gaussian_kl
from marvel.rollout import JumpStart, Policy

if TYPE_CHECKING:
    from marvel.sac_lag import SACLag


@dataclass
class BaselinesConfig:
    """The ``baselines`` config key: the O2O baselines the released code hooks for (METHOD.md
    section 6). Every default is off: Marvel."""

    kl_to_prior: float = 0.0  # beta of a PROTO-style beta * KL(pi || pi_0) in the actor loss
    target_noise_std: float = 0.0  # SO2: N(0, std^2) noise on target actions (SO2: 0.1)
    target_noise_clip: float = 0.5  # the noise is clipped to +-clip (TD3/SO2 practice)
    # Hybrid replay: the share of every minibatch drawn from the offline dataset, the rest from
    # the online buffer (RLPD-style symmetric sampling is 0.5; 0 = pure online, Marvel).
    offline_fraction: float = 0.0
    # JSRL: pi_0 (frozen) acts for the first guide fraction of each episode's steps, the learner
    # for the rest; the fraction falls linearly from this value to 0 over the finetuning
    # iterations (JSRL's curriculum; 0 = off, Marvel). Only the learner is updated.
    jsrl_initial_fraction: float = 0.0
    # PEX, policy expansion: each step samples a0 ~ pi_0 (frozen) and a ~ pi and acts with a0
    # with probability softmax(Q_r(s, .) / pex_temperature)[a0] (min over Q_r heads).
    pex: bool = False
    pex_temperature: float = 1.0  # PEX's default


class Baseline:
    """The hooks of the online loop; each default is Marvel's behaviour."""

    def begin_rollout(self, agent: SACLag, iteration: int) -> None:
        """Called before an iteration's episodes are rolled out."""

    def episode_policy(self, policy: Policy, max_steps: int) -> Policy:
        """The policy that acts for one episode, given the one that would act otherwise."""
        return policy

    def rollout_metrics(self) -> dict[str, float]:
        """The baseline's own metrics for the rollout just finished."""
        return {}

    def sample_batch(
        self, online: ReplayBuffer, batch_size: int, minibatch_size: int
    ) -> Batch | None:
        """One update's samples; None: the online buffer's, uniform (Marvel)."""
        return None

    def target_action(self, next_act: torch.Tensor) -> torch.Tensor:
        """The next action a' the critics' targets score."""
        return next_act

    def actor_loss(self, agent: SACLag, obs: torch.Tensor) -> tuple[torch.Tensor | float, dict]:
        """A term added to L_pi, and its metrics."""
        return 0.0, {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""


class KLToPrior(Baseline):
    """PROTO-style + beta E KL(pi(.|s) || pi_0(.|s)) in the actor loss."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def actor_loss(self, agent: SACLag, obs: torch.Tensor) -> tuple[torch.Tensor | float, dict]:
        with torch.no_grad():
            prior_mu, prior_log_std = agent.prior_actor.distribution(obs)
        kl = gaussian_kl(*agent.actor.distribution(obs), prior_mu, prior_log_std).mean()
        return self.beta * kl, {"train/kl_to_prior": kl.detach()}


class TargetNoise(Baseline):
    """SO2: the target actions perturbed by clipped Gaussian noise, clip(a' + eps) in the box."""

    def __init__(self, std: float, clip: float) -> None:
        self.std, self.clip = std, clip

    def target_action(self, next_act: torch.Tensor) -> torch.Tensor:
        noise = (self.std * torch.randn_like(next_act)).clamp(-self.clip, self.clip)
        return (next_act + noise).clamp(-1.0, 1.0)


class HybridReplay(Baseline):
    """Each minibatch block holds round(fraction * minibatch_size) uniform samples of the
    offline dataset after its online ones (RLPD-style symmetric sampling at 0.5)."""

    def __init__(self, offline: ReplayBuffer, fraction: float) -> None:
        self.offline, self.fraction = offline, fraction

    def sample_batch(self, online: ReplayBuffer, batch_size: int, minibatch_size: int) -> Batch:
        blocks = batch_size // minibatch_size
        n_offline = round(self.fraction * minibatch_size)
        n_online = minibatch_size - n_offline
        online_part = online.sample(blocks * n_online)
        offline_part = self.offline.sample(blocks * n_offline)
        return {
            key: torch.cat(
                [
                    online_part[key].unflatten(0, (blocks, n_online)),
                    offline_part[key].unflatten(0, (blocks, n_offline)),
                ],
                dim=1,
            ).flatten(0, 1)
            for key in online_part
        }

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.offline.generator.get_state()}  # the data is the dataset's

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.offline.generator.set_state(state["sampler"])


class JumpStartRL(Baseline):
    """JSRL: pi_0 (frozen) acts for the first guide fraction of each episode's steps, the
    learner for the rest; the fraction falls linearly from ``initial_fraction`` to 0 over the
    finetuning iterations (JSRL's curriculum)."""

    def __init__(self, initial_fraction: float, total_iterations: int) -> None:
        self.initial_fraction, self.total_iterations = initial_fraction, total_iterations
        self.fraction, self.guide_steps, self.jump_starts = 0.0, 0, []

    def guide_fraction(self, iteration: int) -> float:
        progress = iteration / max(self.total_iterations, 1)
        return self.initial_fraction * max(0.0, 1.0 - progress)

    def begin_rollout(self, agent: SACLag, iteration: int) -> None:
        self.prior, self.fraction = agent.prior_actor, self.guide_fraction(iteration)
        self.jump_starts = []

    def episode_policy(self, policy: Policy, max_steps: int) -> Policy:
        guide_steps = round(self.fraction * max_steps)
        if guide_steps == 0:
            return policy
        self.jump_starts.append(JumpStart(self.prior, policy, guide_steps))
        return self.jump_starts[-1]

    def rollout_metrics(self) -> dict[str, float]:
        guided = sum(policy.guide_acted for policy in self.jump_starts)
        return {"jsrl/guide_fraction": self.fraction, "jsrl/guide_steps": guided}


class PolicyExpansion:
    """PEX's policy (Zhang et al. 2023): at each step it samples an action from pi_0 and one
    from pi and acts with one of them, drawn with probabilities softmax(Q_r / temperature) over
    their reward values; ``prior_chosen`` / ``steps`` is its rate of pi_0's actions."""

    def __init__(self, agent: SACLag, temperature: float) -> None:
        self.agent, self.temperature = agent, temperature
        self.steps = self.prior_chosen = 0

    @torch.no_grad()
    def choice_probabilities(
        self, obs: torch.Tensor, prior_act: torch.Tensor, act: torch.Tensor
    ) -> torch.Tensor:
        """(B, 2): the probabilities of acting with pi_0's action and with pi's."""
        critic = self.agent.reward_critic
        values = torch.stack(
            [critic(obs, prior_act).min(0).values, critic(obs, act).min(0).values], dim=-1
        )
        return torch.softmax(values / self.temperature, dim=-1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        prior_act = self.agent.prior_actor.act(obs, deterministic)
        act = self.agent.actor.act(obs, deterministic)
        choice = torch.multinomial(self.choice_probabilities(obs, prior_act, act), 1)
        prior = choice == 0  # (B, 1)
        self.steps += obs.shape[0]
        self.prior_chosen += int(prior.sum())
        return torch.where(prior, prior_act, act)


class PEX(Baseline):
    """PEX acts with ``PolicyExpansion`` over pi_0 (frozen) and pi in every episode."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def begin_rollout(self, agent: SACLag, iteration: int) -> None:
        self.expansion = PolicyExpansion(agent, self.temperature)

    def episode_policy(self, policy: Policy, max_steps: int) -> Policy:
        return self.expansion

    def rollout_metrics(self) -> dict[str, float]:
        rate = self.expansion.prior_chosen / max(self.expansion.steps, 1)
        return {"pex/prior_action_rate": rate}


def make_baselines(
    cfg: BaselinesConfig, offline: ReplayBuffer | None = None, total_iterations: int = 1
) -> list[Baseline]:
    """The baselines ``cfg`` switches on (none: Marvel). ``offline``: the offline dataset that
    hybrid replay samples; ``total_iterations``: the budget JSRL's curriculum spans."""
    baselines: list[Baseline] = []
    if cfg.kl_to_prior > 0:
        baselines.append(KLToPrior(cfg.kl_to_prior))
    if cfg.target_noise_std > 0:
        baselines.append(TargetNoise(cfg.target_noise_std, cfg.target_noise_clip))
    if cfg.offline_fraction > 0:
        if offline is None:
            raise ValueError("offline_fraction > 0 (hybrid replay) needs the offline dataset")
        baselines.append(HybridReplay(offline, cfg.offline_fraction))
    if cfg.pex:
        baselines.append(PEX(cfg.pex_temperature))
    if cfg.jsrl_initial_fraction > 0:
        baselines.append(JumpStartRL(cfg.jsrl_initial_fraction, total_iterations))
    return baselines
