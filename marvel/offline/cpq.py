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
of each part, top to bottom: VAE, Q_r, Q_c (+ the OOD multiplier alpha), actor, Polyak targets;
each loss is a method of its own (``targets``, ``reward_critic_loss``, ``cost_critic_loss``,
``update_alpha``, ``actor_loss``), written next to its equation in METHOD.md section 2.

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

from marvel.choices import Choice
from marvel.data.buffer import Batch
from marvel.losses import bellman_target, critic_loss
from marvel.nets import ConditionalVAE, adam, frozen, gradient_step, polyak_update
from marvel.offline.base import OfflineLearnerBase, pretrained_from
from marvel.start import NetworkSizes, Pretrained


class OODPenalty(Choice):
    """E_nu Q_c of the OOD penalty (``offline.cpq.ood_penalty``): OSRL's (target Q_c under
    no_grad: only alpha moves), or the CPQ paper's form through the current Q_c, which
    diverges (module docstring)."""

    target = "target"
    differentiable = "differentiable"


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
    ood_penalty: OODPenalty = OODPenalty.target

    def __post_init__(self) -> None:  # the Python API's string (a wrong one raises)
        self.ood_penalty = OODPenalty(self.ood_penalty)


class CPQ(OfflineLearnerBase):
    """pi, Q_r (min over heads), Q_c (1 head), their targets, the behaviour VAE and alpha."""

    cfg: CPQConfig

    TRAINED = OfflineLearnerBase.TRAINED + ("log_alpha",)

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
        # pi, Q_r, Q_c, Qbar_r, Qbar_c, the critics' optimizers, l
        super().__init__(obs_dim, act_dim, sizes, cfg, cost_limit, episode_len, device)
        self.build_behaviour_model(obs_dim, act_dim)
        self.log_alpha = torch.tensor(cfg.log_alpha_init, device=device)
        # The OOD target qc_scalar * l, in scaled cost units like l.
        self.ood_threshold = cfg.qc_scalar * self.q_threshold
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step of the VAE, Q_r, Q_c, alpha and pi, then the Polyak targets."""
        # VAE (behaviour model): L_G = mean ||a_hat - a||^2 + beta mean KL(q(z|s,a) || N(0,I))
        loss_vae = self.vae.loss(batch["obs"], batch["act"], self.cfg.vae_kl_weight)
        gradient_step(self.vae_optimizer, loss_vae)

        y_r, y_c = self.targets(batch)
        loss_q_r = self.reward_critic_loss(batch, y_r)
        gradient_step(self.reward_critic_optimizer, loss_q_r)
        loss_q_c, penalty, q_c_ood = self.cost_critic_loss(batch, y_c)
        gradient_step(self.cost_critic_optimizer, loss_q_c + penalty)
        self.update_alpha(q_c_ood)
        loss_actor, q_c_pi, log_prob = self.actor_loss(batch)
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

    @torch.no_grad()
    def targets(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(y_r, y_c), with one a' ~ pi(.|s') for both critics (no entropy term in CPQ):

        y_r = r + gamma (1 - d) 1[Qbar_c(s', a') <= l] min_j Qbar_r,j(s', a')   (CPQ's
              constraints penalized Bellman operator: unsafe next actions back up 0)
        y_c = c + gamma (1 - d) Qbar_c(s', a')                                 (OSRL: no 1 - d)
        """
        cfg, next_obs, done = self.cfg, batch["next_obs"], batch["done"]
        next_act, _ = self.actor(next_obs)
        next_q_c = self.cost_critic_target(next_obs, next_act)[0]
        next_q_r = self.reward_critic_target(next_obs, next_act).min(0).values
        safe_next = (next_q_c <= self.q_threshold).float()
        y_r = bellman_target(
            cfg.reward_scale * batch["reward"], done, cfg.gamma, safe_next * next_q_r
        )
        y_c = bellman_target(cfg.cost_scale * batch["cost"], done, cfg.gamma, next_q_c)
        return y_r, y_c

    def reward_critic_loss(self, batch: Batch, y_r: torch.Tensor) -> torch.Tensor:
        """L_Qr = sum_j E_D (Q_r,j(s, a) - y_r)^2."""
        return critic_loss(self.reward_critic(batch["obs"], batch["act"]), y_r)

    @torch.no_grad()
    def ood_actions(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The OOD set nu: K = ``sample_action_num`` candidates a ~ pi(.|s) per state, and a 0/1
        mask of those whose latent KL under the VAE's encoder is at or above the
        ``ood_quantile`` of all K B candidates. Returns (states, candidates, mask), (K B, .)."""
        cfg = self.cfg
        ood_obs = obs.repeat(cfg.sample_action_num, 1)  # (K B, obs_dim): K copies
        if cfg.ood_penalty == OODPenalty.target:  # OSRL: samples of the pre-tanh Gaussian
            mu, log_std = self.actor.distribution(ood_obs)
            ood_act = mu + log_std.exp() * torch.randn_like(mu)
        else:
            ood_act, _ = self.actor(ood_obs)
        score = ConditionalVAE.latent_kl(*self.vae.encode(ood_obs, ood_act))
        ood = (score >= torch.quantile(score, cfg.ood_quantile)).float()
        return ood_obs, ood_act, ood

    def cost_critic_loss(
        self, batch: Batch, y_c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Bellman error, OOD penalty, E_nu Q_c) of

        L_Qc = E_D (Q_c(s, a) - y_c)^2 - alpha (E_{s~D, a~nu} Q_c(s, a) - qc_scalar l):

        the Bellman error on the data, and OOD actions pushed up towards "unsafe". E_nu Q_c is
        OSRL's (``ood_penalty="target"``: target Q_c, no gradient, the masked sum over K B) or
        the paper's (``"differentiable"``: current Q_c, the mean over the OOD candidates).
        """
        ood_obs, ood_act, ood = self.ood_actions(batch["obs"])
        loss_q_c = critic_loss(self.cost_critic(batch["obs"], batch["act"]), y_c)
        if self.cfg.ood_penalty == OODPenalty.target:
            with torch.no_grad():
                q_c_ood = (self.cost_critic_target(ood_obs, ood_act)[0] * ood).mean()
        else:
            q_c_ood = (self.cost_critic(ood_obs, ood_act)[0] * ood).sum() / ood.sum()
        penalty = -self.alpha * (q_c_ood - self.ood_threshold)
        return loss_q_c, penalty, q_c_ood

    @torch.no_grad()
    def update_alpha(self, q_c_ood: torch.Tensor) -> None:
        """Dual ascent on the constraint E_nu Q_c >= qc_scalar l, in log space (OSRL):

        log alpha <- clip(log alpha + lr alpha (qc_scalar l - E_nu Q_c), +-log_alpha_clip)
        """
        cfg = self.cfg
        self.log_alpha += cfg.alpha_lr * self.alpha * (self.ood_threshold - q_c_ood)
        self.log_alpha.clamp_(-cfg.log_alpha_clip, cfg.log_alpha_clip)

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L_pi, Q_c(s, a~), log pi(a~|s)) of

        L_pi = -E_s [1[Q_c(s, a~) <= l] min_j Q_r,j(s, a~)],   a~ ~ pi(.|s) reparameterized:

        the reward value where the cost critic deems the action safe; gradients reach pi only.
        """
        obs = batch["obs"]
        new_act, log_prob = self.actor(obs)
        with frozen(self.reward_critic, self.cost_critic):
            q_c_pi = self.cost_critic(obs, new_act)[0]
            q_r_pi = self.reward_critic(obs, new_act).min(0).values
        loss_actor = -((q_c_pi <= self.q_threshold).float() * q_r_pi).mean()
        return loss_actor, q_c_pi, log_prob

    def to_pretrained(self) -> Pretrained:
        """pi_0, Q_r, Q_c and the actor's optimizer state; alpha as the offline multiplier."""
        return pretrained_from(self, "cpq", float(self.alpha))
