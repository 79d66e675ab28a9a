"""BEAR-Lag: BEAR with a Lagrangian cost term (METHOD.md section 2, offline pretraining).

Kumar, Fu, Tucker, Levine, "Stabilizing Off-Policy Q-Learning via Bootstrapping Error
Reduction", NeurIPS 2019 (arXiv 1906.00949), extended to costs as OSRL's BEAR-L
(github.com/liuzuxin/OSRL, ``osrl/algorithms/bearl.py``, defaults from
``examples/configs/bearl_configs.py`` and ``BEARLTrainer``), whose version the Marvel paper
pretrains with.

BEAR keeps the policy inside the *support* of the behaviour policy: a conditional VAE models the
data's actions, and the actor maximizes Q_r subject to MMD(pi(.|s), beta(.|s)) <= epsilon, the
constraint enforced by a dual variable alpha_mmd. Bootstrapping takes the max over several
sampled next actions of a soft-clipped double-Q (a mix of the min and max over critic heads).
BEAR-L adds a cost critic Q_c, trained like Q_r, and a penalty lambda (Q_c(s, a~) - l) in the
actor loss, with lambda from a PID controller on the batch mean of Q_c - l, where l is the
per-step threshold of the episodic cost limit d. One ``update`` takes one gradient step of each
part, top to bottom: VAE, Q_r, Q_c, actor, alpha_mmd, lambda, Polyak targets.

Where marvel differs from OSRL (each is marked "OSRL:" below):
- Q_r has 2 heads and Q_c one (marvel's architecture, METHOD.md section 2). OSRL's default
  critic is a pair of 2-network ensembles for each (num_q = num_qc = 2: 4 networks each, the
  pair's members each the min over its ensemble); its min/max mix is over the pair.
- One evaluation of the actor loss serves the actor step, the alpha_mmd step and one PID step,
  as in BEAR's own code. OSRL evaluates it twice (again after the actor step, for alpha_mmd),
  so its PID controller steps twice per update.
- Both critics' targets sample the same a' ~ pi_bar(.|s') (OSRL draws them apart).
- The cost target stops at terminal states, like the reward target (OSRL's does not).
- The threshold is computed from the *scaled* cost limit, cost_scale * d (OSRL uses d; the same
  at the default cost_scale = 1).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from marvel.choices import Choice
from marvel.data.buffer import Batch
from marvel.nets import adam, frozen, gradient_step, polyak_update, sqrt
from marvel.offline.base import (
    OfflineLearnerBase,
    QcPIDLagrangian,
    pretrained_from,
    soft_clipped_targets,
)
from marvel.start import NetworkSizes, Pretrained


class MMDKernel(Choice):
    """The MMD's kernel k (``offline.bearl.kernel``): on the squared L2 or the L1 distance."""

    gaussian = "gaussian"
    laplacian = "laplacian"


@dataclass
class BEARLConfig:
    """BEAR-Lag hyperparameters: OSRL's ``BEARLTrainConfig`` defaults unless marked otherwise.

    OSRL trains 300_000 steps; the caller passes the step count to ``train_offline``.
    """

    actor_lr: float = 1e-3  # Adam, pi
    critic_lr: float = 1e-3  # Adam, Q_r and Q_c (OSRL uses one rate for both)
    vae_lr: float = 1e-3  # Adam, the behaviour VAE
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the critic and actor targets
    # Targets: max over num_target_actions a' ~ pi_bar(.|s') of the soft-clipped double-Q
    # target_mix * min_j Qbar_j + (1 - target_mix) * max_j Qbar_j (BEAR's lambda, OSRL's lmbda).
    num_target_actions: int = 10  # OSRL: sample_action_num
    target_mix: float = 0.75
    # MMD support constraint MMD(beta(.|s), pi(.|s)) <= target_mmd_thresh between
    # num_mmd_samples pre-tanh samples of each, with a kernel of width mmd_sigma.
    kernel: MMDKernel = MMDKernel.gaussian
    mmd_sigma: float = 50.0
    num_mmd_samples: int = 10  # OSRL: num_samples_mmd_match
    target_mmd_thresh: float = 0.05
    # Its dual variable alpha_mmd = exp(log_alpha_mmd), log_alpha_mmd clipped to
    # [log_alpha_mmd_min, log_alpha_mmd_max] after each Adam step (BEAR's code, OSRL).
    mmd_alpha_lr: float = 1e-3  # OSRL: BEARLTrainer's alpha_lr (the train config leaves it)
    log_alpha_mmd_init: float = 0.0  # alpha_mmd starts at 1
    log_alpha_mmd_min: float = -5.0
    log_alpha_mmd_max: float = 10.0
    # Updates during which the actor only matches the behaviour model (no -Q_r term; the MMD
    # and cost terms stay). OSRL: start_update_policy_step, 0 in its config (20_000 in its class).
    warmup_steps: int = 0
    # PID controller of the cost multiplier lambda on e = mean_batch Q_c(s, a~) - l (OSRL: PID).
    pid_kp: float = 0.1
    pid_ki: float = 0.003
    pid_kd: float = 0.001
    vae_hidden_sizes: list[int] = field(default_factory=lambda: [400, 400])  # OSRL: 2 x 400
    vae_latent_dim: int | None = None  # None: 2 * act_dim (OSRL)
    vae_kl_weight: float = 0.5  # beta of the VAE loss
    reward_scale: float = 0.1  # as in finetuning (METHOD.md section 1) and OSRL's config
    cost_scale: float = 1.0
    batch_size: int = 512  # what the caller passes to train_offline

    def __post_init__(self) -> None:  # the Python API's string (a wrong one raises)
        self.kernel = MMDKernel(self.kernel)


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: MMDKernel | str, sigma: float) -> torch.Tensor:
    """BEAR's MMD estimate between sample sets x (B, N, d) and y (B, M, d), one per row (B,).

        MMD(x, y) = sqrt( mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j')
                          - 2 mean_{i,j} k(x_i, y_j) + 1e-6 )

    over all pairs (diagonals included), with k(u, v) = exp(-||u - v||_2^2 / (2 sigma))
    (gaussian) or exp(-||u - v||_1 / (2 sigma)) (laplacian). sigma enters unsquared, as in
    BEAR's and OSRL's code; the 1e-6 keeps the square root differentiable at 0.
    """
    kernel = MMDKernel(kernel)

    def mean_kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        diff = u.unsqueeze(2) - v.unsqueeze(1)  # (B, N, M, d)
        dist = diff.pow(2).sum(-1) if kernel == MMDKernel.gaussian else diff.abs().sum(-1)
        return torch.exp(-dist / (2.0 * sigma)).mean((1, 2))

    return sqrt(mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y) + 1e-6)


class BEARL(OfflineLearnerBase):
    """pi, Q_r (2 heads), Q_c (1 head), their targets, the behaviour VAE, alpha_mmd and lambda."""

    cfg: BEARLConfig

    TRAINED = OfflineLearnerBase.TRAINED + (
        "actor_target",
        "log_alpha_mmd",
        "pid",
        "num_updates",
        "alpha_mmd_optimizer",
    )

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        sizes: NetworkSizes,
        cfg: BEARLConfig,
        cost_limit: float,
        episode_len: int,
        device: torch.device,
    ) -> None:
        # pi, Q_r, Q_c, Qbar_r, Qbar_c, the critics' optimizers, l
        super().__init__(obs_dim, act_dim, sizes, cfg, cost_limit, episode_len, device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.build_behaviour_model(obs_dim, act_dim)
        self.log_alpha_mmd = torch.tensor(cfg.log_alpha_mmd_init, device=device, requires_grad=True)
        # lambda: OSRL's PID on mean_batch Q_c(s, a~) - l (its state on the device: no host sync).
        self.pid = QcPIDLagrangian(cfg.pid_kp, cfg.pid_ki, cfg.pid_kd, self.q_threshold, device)
        self.num_updates = 0

        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.alpha_mmd_optimizer = adam([self.log_alpha_mmd], lr=cfg.mmd_alpha_lr)

    @property
    def alpha_mmd(self) -> torch.Tensor:
        return self.log_alpha_mmd.detach().exp()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step of the VAE, Q_r, Q_c, pi, alpha_mmd and lambda, then the targets."""
        cfg = self.cfg
        obs, act, next_obs = batch["obs"], batch["act"], batch["next_obs"]
        batch_size = obs.shape[0]

        # VAE (behaviour model): L_vae = mean ||a_hat - a||^2 + beta mean KL(q(z|s,a) || N(0,I))
        loss_vae = self.vae.loss(obs, act, cfg.vae_kl_weight)
        gradient_step(self.vae_optimizer, loss_vae)

        # Soft-clipped double-Q targets (``soft_clipped_targets``) over n = num_target_actions
        # draws a'_1..a'_n ~ pi_bar(.|s') (the target actor), then one step of Q_r and Q_c.
        with torch.no_grad():
            next_obs_n = next_obs.repeat_interleave(cfg.num_target_actions, 0)
            next_act_n, _ = self.actor_target(next_obs_n)
            y_r, y_c = soft_clipped_targets(self, batch, next_obs_n, next_act_n)
        loss_q_r, loss_q_c = self.critics_step(batch, y_r, y_c)

        # MMD between N pre-tanh samples of the behaviour model (VAE decoder before its tanh,
        # z ~ N(0, I) clipped to [-0.5, 0.5]) and of pi (u = mu + sigma eps, before the tanh),
        # as BEAR and OSRL measure it.
        n = cfg.num_mmd_samples
        with torch.no_grad():
            z = torch.randn(batch_size, n, self.vae.latent_dim, device=obs.device)
            obs_n = obs.unsqueeze(1).expand(-1, n, -1)
            behaviour_u = self.vae.decoder(torch.cat([obs_n, z.clamp(-0.5, 0.5)], -1))
        mu, log_std = self.actor.distribution(obs)
        actor_u = mu.unsqueeze(1) + log_std.exp().unsqueeze(1) * torch.randn_like(behaviour_u)
        mmd_value = mmd(behaviour_u, actor_u, cfg.kernel, cfg.mmd_sigma)  # (B,)

        # The critics score a~ = tanh(u_1), the first of pi's samples.
        new_act = torch.tanh(actor_u[:, 0])
        with frozen(self.reward_critic, self.cost_critic):  # gradients reach the actor only
            q_r_pi = self.reward_critic(obs, new_act).min(0).values
            q_c_pi = self.cost_critic(obs, new_act)[0]
        lam = self.pid.step(q_c_pi.detach())  # one PID step per update (OSRL: two)

        # L_pi = E [ -min_j Q_r,j(s, a~) + alpha_mmd (MMD(s) - eps) ] + lambda E [Q_c(s, a~) - l]
        # (no -Q_r term during the warm-up)
        mmd_gap = mmd_value - cfg.target_mmd_thresh
        qc_penalty = (lam * (q_c_pi - self.q_threshold)).mean()
        loss_actor = (self.alpha_mmd * mmd_gap).mean() + qc_penalty
        if self.num_updates >= cfg.warmup_steps:
            loss_actor = loss_actor - q_r_pi.mean()
        gradient_step(self.actor_optimizer, loss_actor)

        # Dual ascent on the MMD constraint: L_alpha = -alpha_mmd E [MMD(s) - eps], then clip.
        loss_alpha = -(self.log_alpha_mmd.exp() * mmd_gap.detach()).mean()
        gradient_step(self.alpha_mmd_optimizer, loss_alpha)
        with torch.no_grad():
            self.log_alpha_mmd.clamp_(cfg.log_alpha_mmd_min, cfg.log_alpha_mmd_max)

        polyak_update(self.reward_critic, self.reward_critic_target, self.cfg.tau)
        polyak_update(self.cost_critic, self.cost_critic_target, self.cfg.tau)
        polyak_update(self.actor, self.actor_target, self.cfg.tau)
        self.num_updates += 1
        return {
            "loss/vae": loss_vae.detach(),
            "loss/critic_reward": loss_q_r.detach(),
            "loss/critic_cost": loss_q_c.detach(),
            "loss/actor": loss_actor.detach(),
            "loss/alpha_mmd": loss_alpha.detach(),
            "offline/mmd": mmd_value.detach().mean(),
            "offline/alpha_mmd": self.alpha_mmd,
            "offline/lambda": lam,
            "offline/q_c": q_c_pi.detach().mean(),
            "offline/qc_penalty": qc_penalty.detach(),
        }

    def to_pretrained(self) -> Pretrained:
        """pi_0, Q_r, Q_c (marvel's architecture: a strict load into SAC-Lag) and lambda."""
        return pretrained_from(self, "bearl", float(self.pid.lam))
