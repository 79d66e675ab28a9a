"""CPQ: Constraints Penalized Q-learning (METHOD.md section 2, the paper's offline pretraining).

Xu, Zhang, Liu, "Constraints Penalized Q-learning for Safe Offline Reinforcement Learning",
AAAI 2022 (arXiv 2107.09003), as implemented in OSRL (github.com/liuzuxin/OSRL,
``osrl/algorithms/cpq.py``, defaults from ``examples/configs/cpq_configs.py``), whose version
the Marvel paper pretrains with.

CPQ learns a cost critic Q_c that is *pessimistic on out-of-distribution (OOD) actions*: actions
the current policy proposes that a conditional VAE of the behaviour policy finds unlikely are
pushed up to at least a threshold, so they count as unsafe. The reward critic then backs up only
through next actions the cost critic calls safe (the constraints penalized Bellman operator), and
the actor maximizes Q_r where Q_c is below the threshold. One ``update`` takes one gradient step
of each part, top to bottom: VAE, Q_r, Q_c (+ the OOD multiplier alpha), actor, Polyak targets.

Where marvel differs from OSRL (each is marked "OSRL:" below):
- Q_c has one head (the released code's architecture, METHOD.md section 2); OSRL's has two.
- The OOD penalty is OSRL's by default (``ood_penalty="target"``): Q_c of the OOD candidates
  (pre-tanh samples of pi) comes from the *target* cost critic under no_grad, as a masked sum
  over all K B candidates, so the penalty leaves Q_c's gradient unchanged and only alpha moves.
  ``ood_penalty="differentiable"`` is the form the CPQ paper writes: the *current* Q_c, the
  mean over the OOD candidates, squashed candidates; it pushes Q_c up without bound on the
  policy's own actions and diverges (benchmarks/README.md), so it is kept for study only.
- The cost target stops at terminal states, like the reward target (OSRL's does not).
- The threshold is computed from the *scaled* cost limit, cost_scale * d (OSRL uses d; the same
  at the default cost_scale = 1).
- OSRL also Polyak-averages a copy of the actor that no loss reads; marvel keeps no actor target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from marvel.data.buffer import Batch
from marvel.nets import ConditionalVAE, adam, frozen, gradient_step, polyak_update
from marvel.offline.base import (
    OfflineLearnerBase,
    pretrained_from,
    qc_threshold,
)
from marvel.start import NetworkSizes, Pretrained


@dataclass
class CPQConfig:
    """CPQ hyperparameters: OSRL's ``CPQTrainConfig`` defaults unless marked otherwise."""

    actor_lr: float = 1e-4  # Adam, pi
    critic_lr: float = 1e-3  # Adam, Q_r and Q_c (OSRL uses one rate for both)
    vae_lr: float = 1e-3  # Adam, the behaviour VAE
    alpha_lr: float = 1e-4  # step size of the OOD multiplier's ascent on log(alpha)
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the critic targets
    # OSRL's CPQ has no entropy term: no alpha_entropy in the targets or the actor loss.
    # The OOD multiplier alpha = exp(log_alpha), log_alpha clipped to +-log_alpha_clip.
    log_alpha_init: float = 0.0  # alpha starts at 1
    log_alpha_clip: float = 5.0
    qc_scalar: float = 1.5  # E_nu[Q_c] is pushed to >= qc_scalar * qc_threshold(...)
    sample_action_num: int = 10  # candidate actions from pi per state for the OOD penalty
    ood_quantile: float = 0.75  # candidates whose latent KL is above this quantile are OOD
    vae_hidden_sizes: list[int] = field(default_factory=lambda: [400, 400])  # OSRL: 2 x 400
    vae_latent_dim: int | None = None  # None: 2 * act_dim (OSRL)
    vae_kl_weight: float = 0.5  # beta of the VAE loss (OSRL's config; its class default is 1.5)
    reward_scale: float = 0.1  # as in finetuning (METHOD.md section 1) and OSRL's config
    cost_scale: float = 1.0
    batch_size: int = 512  # what the caller passes to train_offline
    # target: OSRL's OOD penalty (target Q_c under no_grad; only alpha moves); differentiable:
    # the CPQ paper's form through the current Q_c, which diverges (module docstring)
    ood_penalty: str = "target"


class CPQ(OfflineLearnerBase):
    """pi, Q_r (min over heads), Q_c (1 head), their targets, the behaviour VAE and alpha."""

    cfg: CPQConfig

    TRAINED = OfflineLearnerBase.TRAINED + (
        "vae",
        "log_alpha",
        "actor_optimizer",
        "reward_critic_optimizer",
        "cost_critic_optimizer",
        "vae_optimizer",
    )

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        sizes: NetworkSizes,
        cfg: CPQConfig,
        cost_limit: float,
        episode_len: int,
        device: torch.device,
    ) -> None:
        super().__init__(obs_dim, act_dim, sizes, cfg, device)  # pi, Q_r, Q_c, Qbar_r, Qbar_c
        latent_dim = cfg.vae_latent_dim or 2 * act_dim
        self.vae = ConditionalVAE(obs_dim, act_dim, cfg.vae_hidden_sizes, latent_dim).to(device)
        self.log_alpha = torch.tensor(cfg.log_alpha_init, device=device)
        # l (indicator threshold) and the OOD target qc_scalar * l, in scaled cost units.
        self.q_threshold = qc_threshold(cost_limit * cfg.cost_scale, episode_len, cfg.gamma)
        self.ood_threshold = cfg.qc_scalar * self.q_threshold

        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.reward_critic_optimizer = adam(self.reward_critic.parameters(), lr=cfg.critic_lr)
        self.cost_critic_optimizer = adam(self.cost_critic.parameters(), lr=cfg.critic_lr)
        self.vae_optimizer = adam(self.vae.parameters(), lr=cfg.vae_lr)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step of the VAE, Q_r, Q_c, alpha and pi, then the Polyak targets."""
        cfg = self.cfg
        obs, act, next_obs = batch["obs"], batch["act"], batch["next_obs"]
        discount = cfg.gamma * (1.0 - batch["done"])

        # VAE (behaviour model): L_vae = mean ||a_hat - a||^2 + beta mean KL(q(z|s,a) || N(0,I))
        loss_vae = self.vae.loss(obs, act, cfg.vae_kl_weight)
        gradient_step(self.vae_optimizer, loss_vae)

        # Targets, with one a' ~ pi(.|s') for both critics (no entropy term in CPQ):
        #   y_r = r + gamma (1 - d) 1[Qbar_c(s', a') <= l] min_j Qbar_r,j(s', a')   (CPQ's
        #         constraints penalized Bellman operator: unsafe next actions back up 0)
        #   y_c = c + gamma (1 - d) Qbar_c(s', a')                                 (OSRL: no 1-d)
        with torch.no_grad():
            next_act, _ = self.actor(next_obs)
            next_q_c = self.cost_critic_target(next_obs, next_act)[0]
            next_q_r = self.reward_critic_target(next_obs, next_act).min(0).values
            safe_next = (next_q_c <= self.q_threshold).float()
            y_r = cfg.reward_scale * batch["reward"] + discount * safe_next * next_q_r
            y_c = cfg.cost_scale * batch["cost"] + discount * next_q_c

        # L_Qr = sum_j E (Q_r,j(s, a) - y_r)^2
        q_r = self.reward_critic(obs, act)
        loss_q_r = F.mse_loss(q_r, y_r.expand_as(q_r), reduction="none").mean(1).sum()
        gradient_step(self.reward_critic_optimizer, loss_q_r)

        # OOD actions nu: K candidates a ~ pi(.|s) per state; those whose latent KL under the
        # VAE's encoder is in the top (1 - ood_quantile) of all K B candidates are OOD.
        with torch.no_grad():
            ood_obs = obs.repeat(cfg.sample_action_num, 1)  # (K B, obs_dim): K copies
            if cfg.ood_penalty == "target":  # OSRL: samples of the pre-tanh Gaussian
                mu, log_std = self.actor.distribution(ood_obs)
                ood_act = mu + log_std.exp() * torch.randn_like(mu)
            else:
                ood_act, _ = self.actor(ood_obs)
            score = ConditionalVAE.latent_kl(*self.vae.encode(ood_obs, ood_act))
            ood = (score >= torch.quantile(score, cfg.ood_quantile)).float()

        # L_Qc = E_D (Q_c(s, a) - y_c)^2 - alpha (E_{s~D, a~nu} Q_c(s, a) - qc_scalar l):
        # Bellman error on the data, and OOD actions pushed up towards "unsafe".
        loss_q_c = F.mse_loss(self.cost_critic(obs, act)[0], y_c)
        if cfg.ood_penalty == "target":  # OSRL: target Q_c, no gradient, masked sum / (K B)
            with torch.no_grad():
                q_c_ood = (self.cost_critic_target(ood_obs, ood_act)[0] * ood).mean()
        else:
            q_c_ood = (self.cost_critic(ood_obs, ood_act)[0] * ood).sum() / ood.sum()
        penalty = -self.alpha * (q_c_ood - self.ood_threshold)
        gradient_step(self.cost_critic_optimizer, loss_q_c + penalty)

        # Dual ascent on the constraint E_nu Q_c >= qc_scalar l, in log space (OSRL):
        #   log alpha <- clip(log alpha + lr alpha (qc_scalar l - E_nu Q_c), +-log_alpha_clip)
        with torch.no_grad():
            self.log_alpha += cfg.alpha_lr * self.alpha * (self.ood_threshold - q_c_ood)
            self.log_alpha.clamp_(-cfg.log_alpha_clip, cfg.log_alpha_clip)

        # L_pi = -E_s [1[Q_c(s, a~) <= l] min_j Q_r,j(s, a~)], a~ ~ pi(.|s) reparameterized:
        # maximize the reward value where the cost critic deems the action safe.
        new_act, log_prob = self.actor(obs)
        with frozen(self.reward_critic, self.cost_critic):  # gradients reach the actor only
            q_c_pi = self.cost_critic(obs, new_act)[0]
            q_r_pi = self.reward_critic(obs, new_act).min(0).values
        loss_actor = -((q_c_pi <= self.q_threshold).float() * q_r_pi).mean()
        gradient_step(self.actor_optimizer, loss_actor)

        polyak_update(self.reward_critic, self.reward_critic_target, self.cfg.tau)
        polyak_update(self.cost_critic, self.cost_critic_target, self.cfg.tau)
        return {
            "loss/vae": loss_vae.detach(),
            "loss/critic_reward": loss_q_r.detach(),
            "loss/critic_cost": loss_q_c.detach(),
            "loss/cost_ood_penalty": penalty.detach(),
            "loss/actor": loss_actor.detach(),
            "offline/alpha": self.alpha,
            "offline/qc_ood": q_c_ood.detach(),
            "offline/qc_pi": q_c_pi.detach().mean(),
            "offline/safe_fraction": (q_c_pi.detach() <= self.q_threshold).float().mean(),
            "train/entropy": -log_prob.detach().mean(),
        }

    def to_pretrained(self) -> Pretrained:
        """pi_0, Q_r, Q_c and the actor's optimizer state; alpha as the offline multiplier."""
        return pretrained_from(self, "cpq", float(self.alpha))
