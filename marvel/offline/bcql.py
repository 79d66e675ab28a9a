"""BCQ-Lag: BCQ with a Lagrangian cost term (METHOD.md section 2, offline pretraining).

Fujimoto, Meger, Precup, "Off-Policy Deep Reinforcement Learning without Exploration", ICML 2019
(arXiv 1812.02900), extended to costs as OSRL's BCQ-L (github.com/liuzuxin/OSRL,
``osrl/algorithms/bcql.py``, defaults from ``examples/configs/bcql_configs.py``).

BCQ keeps the policy on the data's actions by construction: a conditional VAE G models the
behaviour policy, and the policy decodes a behaviour action G(s, z) (z ~ N(0, I) clipped to
[-0.5, 0.5]) and nudges it by a bounded perturbation xi_phi(s, a) = phi * max_action *
tanh(f(s, a)), each component within +-phi (max_action = 1: marvel's action box is [-1, 1]), the
sum clipped to the box. Bootstrapping takes the max over n such actions at s' of a soft-clipped
double-Q (a mix of the min and max over critic heads), and the perturbation model maximizes Q_r
(a DDPG-style step through the critic). BCQ-L adds a cost critic Q_c, trained like Q_r, and a
penalty lambda (Q_c(s, a~) - l) in the perturbation model's loss, with lambda from a PID
controller on the batch mean of Q_c - l, where l is the per-step threshold of the episodic cost
limit d.

The Gaussian pi_0 (marvel's design; OSRL's BCQ-L has no Gaussian policy): marvel finetunes a
squashed Gaussian pi_0 (``SquashedGaussianActor``, SAC-Lag's actor), but BCQ's policy, decode then
perturb, is not that architecture and has no tractable density. So ``BCQL`` also holds
``self.actor``, a ``SquashedGaussianActor`` built by ``build_networks``, and fits it each update,
on the same batch, by maximum likelihood to BCQ-L's own stochastic actions at the batch's states:

    L_distill = -E_s E_{a ~ pi_BCQ(.|s)} log pi_0(a|s)

that is, KL(pi_BCQ || pi_0) plus pi_BCQ's entropy (a constant for pi_0): a mass-covering fit,
so pi_0's spread covers the one the random z gives BCQ's actions, and its deterministic action
tanh(mu) lands near their centre. The distillation has its own Adam optimizer,
``self.actor_optimizer``, whose state ``pretrained_from`` hands to finetuning like any other
pi_0's; the perturbation model's is ``self.perturbation_optimizer``.
The Q_r and Q_c handed on are BCQ-L's critics: they evaluate pi_BCQ, which pi_0 imitates (VPA,
METHOD.md section 3, re-aligns them to pi_0 before finetuning); the offline multiplier is BCQ-L's
PID lambda. One ``update`` takes one gradient step of each part, top to bottom: VAE, Q_r, Q_c,
perturbation model (+ one PID step), pi_0's distillation, Polyak targets.

Where marvel differs from OSRL (each is marked "OSRL:" below):
- Q_r has 2 heads and Q_c one, with the task's hidden sizes (marvel's architecture, METHOD.md
  section 2). OSRL's default critic is a pair of 2-network ensembles for each (num_q = num_qc = 2:
  4 networks each, the pair's members each the min over its ensemble, [256, 256] for both); its
  min/max mix is over the pair, and its actor loss and PID see the min over all 4 Q_c networks.
- Both critics' targets score the same n next actions (OSRL decodes a fresh set for each).
- The cost target stops at terminal states, like the reward target (OSRL's does not).
- The threshold is computed from the *scaled* cost limit, cost_scale * d (OSRL uses d; the same
  at the default cost_scale = 1).
- The distillation into pi_0 (above) is ours; OSRL acts with G and xi directly.
OSRL trains 100_000 steps; the caller passes the step count to ``train_offline``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from marvel.data.buffer import Batch
from marvel.nets import (
    Linear,
    adam,
    frozen,
    gradient_step,
    polyak_update,
    squashed_gaussian_log_prob,
)
from marvel.offline.base import (
    OfflineLearnerBase,
    QcPIDLagrangian,
    pretrained_from,
    soft_clipped_targets,
)
from marvel.start import NetworkSizes, Pretrained

MAX_ACTION = 1.0  # marvel's action box is [-1, 1] (SquashedGaussianActor's range)


@dataclass
class BCQLConfig:
    """BCQ-Lag hyperparameters: OSRL's ``BCQLTrainConfig`` defaults unless marked otherwise."""

    actor_lr: float = 1e-3  # Adam, the perturbation model xi_phi (OSRL's actor)
    critic_lr: float = 1e-3  # Adam, Q_r and Q_c (OSRL uses one rate for both)
    vae_lr: float = 1e-3  # Adam, the behaviour VAE
    # Adam, pi_0's distillation (marvel's; no OSRL counterpart). None: actor_lr.
    distill_lr: float | None = None
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the critic and perturbation targets
    phi: float = 0.05  # perturbation bound: |xi_i| <= phi * max_action
    # Targets: max over num_target_actions perturbed decoded actions a'_k at s' of the
    # soft-clipped double-Q target_mix * min_j Qbar_j + (1 - target_mix) * max_j Qbar_j.
    num_target_actions: int = 10  # OSRL: sample_action_num
    target_mix: float = 0.75  # OSRL: lmbda
    # PID controller of the cost multiplier lambda on e = mean_batch Q_c(s, a~) - l (OSRL: PID).
    pid_kp: float = 0.1
    pid_ki: float = 0.003
    pid_kd: float = 0.001
    # The perturbation model's MLP f, tanh hidden activations (OSRL: a_hidden_sizes, nn.Tanh;
    # BCQ's own code uses ReLU). It is not transferred, so not the task's actor sizes.
    perturbation_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    vae_hidden_sizes: list[int] = field(default_factory=lambda: [400, 400])  # OSRL: 2 x 400
    vae_latent_dim: int | None = None  # None: 2 * act_dim (OSRL)
    vae_kl_weight: float = 0.5  # beta of the VAE loss
    reward_scale: float = 0.1  # as in finetuning (METHOD.md section 1) and OSRL's config
    cost_scale: float = 1.0
    batch_size: int = 512  # what the caller passes to train_offline


class Perturbation(nn.Module):
    """BCQ's perturbation model: a~ = clip(a + xi_phi(s, a), -max_action, max_action) with

        xi_phi(s, a) = phi * max_action * tanh(f(s, a)),   so |xi_i| <= phi * max_action,

    f an MLP on (s, a) with tanh hidden activations (OSRL's layout).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int],
        phi: float,
        max_action: float = MAX_ACTION,
    ) -> None:
        super().__init__()
        self.phi, self.max_action = phi, max_action
        layers: list[nn.Module] = []
        in_dim = obs_dim + act_dim
        for width in hidden_sizes:
            layers += [Linear(in_dim, width), nn.Tanh()]
            in_dim = width
        layers.append(Linear(in_dim, act_dim))
        self.net = nn.Sequential(*layers)

    def perturbation(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """xi_phi(s, a)."""
        return self.phi * self.max_action * torch.tanh(self.net(torch.cat([obs, act], -1)))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """The perturbed action clip(a + xi_phi(s, a), -max_action, max_action)."""
        return (act + self.perturbation(obs, act)).clamp(-self.max_action, self.max_action)


class BCQL(OfflineLearnerBase):
    """pi_0 (distilled), Q_r (2 heads), Q_c (1 head), their targets, the behaviour VAE, the
    perturbation model and its target, and lambda."""

    cfg: BCQLConfig

    TRAINED = OfflineLearnerBase.TRAINED + (
        "perturbation",
        "perturbation_target",
        "pid",
        "perturbation_optimizer",
    )

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        sizes: NetworkSizes,
        cfg: BCQLConfig,
        cost_limit: float,
        episode_len: int,
        device: torch.device,
    ) -> None:
        # pi_0, Q_r, Q_c, Qbar_r, Qbar_c, the critics' optimizers, l
        super().__init__(obs_dim, act_dim, sizes, cfg, cost_limit, episode_len, device)
        self.perturbation = Perturbation(
            obs_dim, act_dim, cfg.perturbation_hidden_sizes, cfg.phi
        ).to(device)
        self.perturbation_target = copy.deepcopy(self.perturbation).requires_grad_(False)
        self.build_behaviour_model(obs_dim, act_dim)
        # lambda: OSRL's PID on mean_batch Q_c(s, a~) - l (its state on the device: no host sync).
        self.pid = QcPIDLagrangian(cfg.pid_kp, cfg.pid_ki, cfg.pid_kd, self.q_threshold, device)

        distill_lr = cfg.actor_lr if cfg.distill_lr is None else cfg.distill_lr
        self.actor_optimizer = adam(self.actor.parameters(), lr=distill_lr)
        self.perturbation_optimizer = adam(self.perturbation.parameters(), lr=cfg.actor_lr)

    @torch.no_grad()
    def bcq_act(self, obs: torch.Tensor) -> torch.Tensor:
        """BCQ-L's own stochastic action (OSRL's ``act``): clip(G(s, z) + xi_phi(s, G(s, z)),
        -1, 1) with z ~ N(0, I) clipped to [-0.5, 0.5]."""
        return self.perturbation(obs, self.vae.decode(obs))

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step of the VAE, Q_r, Q_c, xi_phi (+ lambda) and pi_0, then the targets."""
        cfg = self.cfg
        obs, act, next_obs = batch["obs"], batch["act"], batch["next_obs"]

        # VAE (behaviour model): L_vae = mean ||a_hat - a||^2 + beta mean KL(q(z|s,a) || N(0,I))
        loss_vae = self.vae.loss(obs, act, cfg.vae_kl_weight)
        gradient_step(self.vae_optimizer, loss_vae)

        # Soft-clipped double-Q targets (``soft_clipped_targets``) over n = num_target_actions
        # next actions from the *target* perturbation model on the (updated) VAE's decodes,
        # a'_k = clip(G(s', z_k) + xibar(s', G(s', z_k)), -1, 1), then one step of Q_r and Q_c.
        with torch.no_grad():
            next_obs_n = next_obs.repeat_interleave(cfg.num_target_actions, 0)
            # one set of next actions for both critics (OSRL: one per critic)
            next_act_n = self.perturbation_target(next_obs_n, self.vae.decode(next_obs_n))
            y_r, y_c = soft_clipped_targets(self, batch, next_obs_n, next_act_n)
        loss_q_r, loss_q_c = self.critics_step(batch, y_r, y_c)

        # The perturbation model scores a~ = clip(G(s, z) + xi_phi(s, G(s, z)), -1, 1), one z per
        # state; the gradient reaches xi_phi only (the decode is a fixed input).
        with torch.no_grad():
            decoded = self.vae.decode(obs)
        new_act = self.perturbation(obs, decoded)
        with frozen(self.reward_critic, self.cost_critic):  # gradients reach xi_phi only
            q_r_pi = self.reward_critic(obs, new_act).min(0).values  # OSRL; BCQ: Q_r,1 only
            q_c_pi = self.cost_critic(obs, new_act)[0]
        lam = self.pid.step(q_c_pi.detach())  # once per update, as OSRL's BCQ-L steps it

        # L_xi = -E min_j Q_r,j(s, a~) + lambda E [Q_c(s, a~) - l]
        qc_penalty = (lam * (q_c_pi - self.q_threshold)).mean()
        loss_actor = -q_r_pi.mean() + qc_penalty
        gradient_step(self.perturbation_optimizer, loss_actor)

        # Distillation into pi_0 (marvel's; module docstring), with fresh BCQ-L actions from the
        # updated xi_phi, a_bcq = clip(G(s, z) + xi_phi(s, G(s, z)), -1, 1):
        #   L_distill = -E log pi_0(a_bcq | s),  log pi_0(a|s) = sum_i [log N(u_i; mu_i, sigma_i^2)
        #               - log(1 - tanh(u_i)^2)],  u = atanh(clamp(a, -1 + eps, 1 - eps))
        bcq_act = self.bcq_act(obs)
        mu, log_std = self.actor.distribution(obs)
        distill_log_prob = squashed_gaussian_log_prob(mu, log_std, bcq_act)
        loss_distill = -distill_log_prob.mean()
        gradient_step(self.actor_optimizer, loss_distill)

        polyak_update(self.reward_critic, self.reward_critic_target, cfg.tau)
        polyak_update(self.cost_critic, self.cost_critic_target, cfg.tau)
        polyak_update(self.perturbation, self.perturbation_target, cfg.tau)
        return {
            "loss/vae": loss_vae.detach(),
            "loss/critic_reward": loss_q_r.detach(),
            "loss/critic_cost": loss_q_c.detach(),
            "loss/actor": loss_actor.detach(),
            "loss/distill": loss_distill.detach(),
            "offline/lambda": lam,
            "offline/q_c": q_c_pi.detach().mean(),
            "offline/qc_penalty": qc_penalty.detach(),
            "offline/perturbation": (new_act.detach() - decoded).abs().mean(),
            "offline/distill_log_prob": distill_log_prob.detach().mean(),
        }

    def to_pretrained(self) -> Pretrained:
        """pi_0 (distilled), BCQ-L's Q_r and Q_c (a strict load into SAC-Lag) and lambda."""
        return pretrained_from(self, "bcql", float(self.pid.lam))
