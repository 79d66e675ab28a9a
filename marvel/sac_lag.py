"""SAC-Lagrangian: the online finetuning agent (METHOD.md section 4).

The agent never imports Hydra: it takes a ``SACLagConfig`` and plain tensors. Its update takes
lambda as a number (the loop, ``marvel.online.OnlineLearner``, owns the controller) and
``UpdateHook``s, through which plug-ins (``marvel.baselines``) change the update.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from marvel.choices import Choice
from marvel.data.buffer import Batch
from marvel.losses import bellman_target, critic_loss
from marvel.nets import adam, frozen, gradient_step, polyak_update
from marvel.start import NetworkSizes, Pretrained, build_critics, build_networks


class LambdaUpdateEvery(Choice):
    """When lambda <- controller.update(J_c) runs (``finetune.lambda_update_every``)."""

    update = "update"
    minibatch = "minibatch"
    iteration = "iteration"


@dataclass
class SACLagConfig:
    """SAC-Lag hyperparameters and its iteration schedule (METHOD.md sections 2 and 4)."""

    actor_lr: float = 5e-5
    critic_reward_lr: float = 5e-3
    critic_cost_lr: float = 5e-3
    gamma: float = 0.99
    tau: float = 0.005
    alpha: float = 1e-3  # fixed per task (code); auto_alpha tunes it towards target_entropy
    auto_alpha: bool = False
    alpha_lr: float = 3e-4
    target_entropy: float | None = None  # None: -act_dim (SAC's default)
    reward_scale: float = 0.1  # rewards are scaled during learning only (code)
    # L_pi scores a~ with the target critics (the released code; its critic rates assume it);
    # False: with the online critics, as the paper's L_pi is written.
    actor_uses_target_critics: bool = True
    # Iteration: E episodes, then U updates of batch_size samples in minibatch_size steps. The
    # released code's 5 and 5 (one episode per update); the Figure 1 caption's 3 episodes per
    # update is episodes_per_iteration=15 (METHOD.md section 4).
    episodes_per_iteration: int = 5
    updates_per_iteration: int = 5
    batch_size: int = 256
    minibatch_size: int = 64
    # From a pretrained start: reuse the actor's optimizer state (the released code does; the
    # critics' is not reused) with the learning rate reset to actor_lr (METHOD.md section 4).
    reuse_actor_optimizer: bool = True
    # When lambda <- controller.update(J_c) runs: per minibatch (the released code, whose gains
    # and dual rates were tuned at that cadence), per update, or once per iteration.
    lambda_update_every: LambdaUpdateEvery = LambdaUpdateEvery.minibatch
    buffer_capacity: int = 1_000_000

    def __post_init__(self) -> None:  # the Python API's string (a wrong one raises)
        self.lambda_update_every = LambdaUpdateEvery(self.lambda_update_every)


class UpdateHook(Protocol):
    """What a plug-in may change in one SAC-Lag update (``marvel.baselines`` implements it)."""

    def target_action(self, next_act: torch.Tensor) -> torch.Tensor:
        """The next action a' that the critics' targets score (SO2's target noise)."""
        ...

    def actor_loss(
        self, agent: SACLag, obs: torch.Tensor
    ) -> tuple[torch.Tensor | float, dict[str, torch.Tensor]]:
        """A term added to L_pi and its metrics (KL to pi_0)."""
        ...


class SACLag:
    """Actor, reward-critic ensemble Q_r (min over heads), cost critic Q_c and their targets."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: SACLagConfig,
        sizes: NetworkSizes,
        device: torch.device,
    ) -> None:
        """``sizes``: the networks' sizes (finetuning: ``env.networks``, the pretrained start's)."""
        self.cfg, self.sizes, self.device = cfg, sizes, device
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.actor, self.reward_critic, self.cost_critic = build_networks(
            obs_dim, act_dim, sizes, device
        )
        self.reward_critic_target = copy.deepcopy(self.reward_critic).requires_grad_(False)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.log_alpha = torch.tensor(float(np.log(cfg.alpha)), device=device, requires_grad=True)
        self.target_entropy = (
            -float(act_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        )
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.reward_critic_optimizer = adam(
            self.reward_critic.parameters(), lr=cfg.critic_reward_lr
        )
        self.cost_critic_optimizer = adam(self.cost_critic.parameters(), lr=cfg.critic_cost_lr)
        self.alpha_optimizer = adam([self.log_alpha], lr=cfg.alpha_lr)
        # pi_0, frozen: the diagnostics' reference, the KL-to-prior penalty's target, JSRL's
        # guide, PEX's second policy (the random init until a pretrained start is loaded)
        self.freeze_prior()

    def load_pretrained(self, pretrained: Pretrained) -> None:
        """Start from an offline algorithm's pi_0, Q_r, Q_c (METHOD.md section 4).

        Strict loads (one architecture for both phases); targets start as copies of the
        critics; the actor's optimizer state is reused if configured, with the configured
        finetuning learning rate set explicitly (loading it restores the offline one).
        """
        self.actor.load_state_dict(pretrained.actor.state_dict())
        self.reward_critic.load_state_dict(pretrained.reward_critic.state_dict())
        self.cost_critic.load_state_dict(pretrained.cost_critic.state_dict())
        self.reward_critic_target.load_state_dict(self.reward_critic.state_dict())
        self.cost_critic_target.load_state_dict(self.cost_critic.state_dict())
        if self.cfg.reuse_actor_optimizer:
            self.actor_optimizer.load_state_dict(pretrained.actor_optimizer)
            for group in self.actor_optimizer.param_groups:
                group["lr"] = self.cfg.actor_lr
        self.freeze_prior()

    def reset_critics(self) -> None:
        """Freshly initialised Q_r, Q_c, their targets and optimizers (VPA's ``start=fresh``)."""
        cfg = self.cfg
        fresh_reward, fresh_cost = build_critics(
            self.obs_dim, self.act_dim, self.sizes, self.device
        )
        for critic, target, fresh in (
            (self.reward_critic, self.reward_critic_target, fresh_reward),
            (self.cost_critic, self.cost_critic_target, fresh_cost),
        ):
            critic.load_state_dict(fresh.state_dict())
            target.load_state_dict(fresh.state_dict())
        self.reward_critic_optimizer = adam(
            self.reward_critic.parameters(), lr=cfg.critic_reward_lr
        )
        self.cost_critic_optimizer = adam(self.cost_critic.parameters(), lr=cfg.critic_cost_lr)

    def freeze_prior(self) -> None:
        """Keep a frozen copy of the current actor as pi_0 (KL-to-prior, JSRL, PEX)."""
        self.prior_actor = copy.deepcopy(self.actor).requires_grad_(False)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def critic_update(
        self,
        batch: Batch,
        alpha_reward: torch.Tensor | float,
        alpha_cost: torch.Tensor | float,
        hooks: Sequence[UpdateHook] = (),
    ) -> dict[str, torch.Tensor]:
        """One gradient step of both critics towards soft targets under the current actor.

        With a' ~ pi(.|s'):
            y_r = r + gamma (1 - d) [min_j Qbar_r,j(s', a') - alpha_r log pi(a'|s')]
            y_c = c + gamma (1 - d) [Qbar_c(s', a')        - alpha_c log pi(a'|s')]
            L_Qr = sum_j E (Q_r,j(s,a) - y_r)^2 ;  L_Qc = E (Q_c(s,a) - y_c)^2
        SAC-Lag (METHOD.md section 4) uses alpha_r = alpha, alpha_c = 0; Value Pre-Alignment
        (section 3) uses its own alpha_r^VPA, alpha_c^VPA with the frozen pi_0. ``hooks`` may
        transform a'.
        """
        cfg = self.cfg
        obs, act, next_obs, done = batch["obs"], batch["act"], batch["next_obs"], batch["done"]
        with torch.no_grad():
            next_act, next_log_prob = self.actor(next_obs)
            for hook in hooks:
                next_act = hook.target_action(next_act)
            next_q_r = self.reward_critic_target(next_obs, next_act).min(0).values
            next_q_c = self.cost_critic_target(next_obs, next_act)[0]
            next_v_r = next_q_r - alpha_reward * next_log_prob  # the soft values of s'
            next_v_c = next_q_c - alpha_cost * next_log_prob
            y_r = bellman_target(cfg.reward_scale * batch["reward"], done, cfg.gamma, next_v_r)
            y_c = bellman_target(batch["cost"], done, cfg.gamma, next_v_c)

        loss_q_r = critic_loss(self.reward_critic(obs, act), y_r)
        loss_q_c = critic_loss(self.cost_critic(obs, act), y_c)
        gradient_step(self.reward_critic_optimizer, loss_q_r)
        gradient_step(self.cost_critic_optimizer, loss_q_c)
        return {"loss/critic_reward": loss_q_r.detach(), "loss/critic_cost": loss_q_c.detach()}

    def update(
        self, batch: Batch, lam: float, hooks: Sequence[UpdateHook] = ()
    ) -> dict[str, torch.Tensor]:
        """One SAC-Lag gradient step on a minibatch (METHOD.md section 4); detached losses.
        ``hooks`` may add terms to L_pi and transform a'."""
        cfg, alpha, obs = self.cfg, self.alpha, batch["obs"]
        losses = self.critic_update(batch, alpha, 0.0, hooks)

        # L_pi = E [-min_j Q_r,j(s, a~) + lambda Q_c(s, a~) + alpha log pi(a~|s)], a~ reparam.
        reward_critic, cost_critic = (
            (self.reward_critic_target, self.cost_critic_target)
            if cfg.actor_uses_target_critics
            else (self.reward_critic, self.cost_critic)
        )
        new_act, log_prob = self.actor(obs)
        with frozen(reward_critic, cost_critic):  # gradients reach the actor only
            q_r_pi = reward_critic(obs, new_act).min(0).values
            q_c_pi = cost_critic(obs, new_act)[0]
        loss_actor = (-q_r_pi + lam * q_c_pi + alpha * log_prob).mean()
        for hook in hooks:
            term, metrics = hook.actor_loss(self, obs)
            loss_actor = loss_actor + term
            losses.update(metrics)
        gradient_step(self.actor_optimizer, loss_actor)
        losses["loss/actor"] = loss_actor.detach()
        losses["train/entropy"] = -log_prob.detach().mean()

        if cfg.auto_alpha:  # J(alpha) = E[-alpha (log pi + target entropy)]
            loss_alpha = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
            gradient_step(self.alpha_optimizer, loss_alpha)
            losses["loss/alpha"] = loss_alpha.detach()

        self.update_targets()
        return losses

    def update_targets(self) -> None:
        """Polyak averaging of both critics' targets."""
        polyak_update(self.reward_critic, self.reward_critic_target, self.cfg.tau)
        polyak_update(self.cost_critic, self.cost_critic_target, self.cfg.tau)

    def _modules(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "reward_critic": self.reward_critic,
            "cost_critic": self.cost_critic,
            "reward_critic_target": self.reward_critic_target,
            "cost_critic_target": self.cost_critic_target,
            "actor_optimizer": self.actor_optimizer,
            "reward_critic_optimizer": self.reward_critic_optimizer,
            "cost_critic_optimizer": self.cost_critic_optimizer,
            "alpha_optimizer": self.alpha_optimizer,
        }

    def state_dict(self) -> dict[str, Any]:
        state = {name: m.state_dict() for name, m in self._modules().items()}
        state["log_alpha"] = self.log_alpha.detach().clone()
        state["prior_actor"] = self.prior_actor.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Strict load of every network and optimizer (METHOD.md section 4: exact transfer)."""
        for name, module in self._modules().items():
            module.load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.prior_actor.load_state_dict(state["prior_actor"])
