"""What every offline algorithm shares (METHOD.md section 2): its start (pi_0, Q_r, Q_c built
by ``marvel.start.build_networks``, as finetuning builds them), the Q_c threshold, the critics'
step, BEAR's and BCQ's soft-clipped targets, and the training loop that ends in a ``Pretrained``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from marvel.choices import plain_dict
from marvel.data.buffer import Batch, ReplayBuffer
from marvel.errors import check_finite
from marvel.losses import MetricWindow, bellman_target, critic_loss
from marvel.nets import ConditionalVAE, adam, gradient_step
from marvel.start import NetworkSizes, Pretrained, build_networks


def qc_threshold(cost_limit: float, episode_len: int, gamma: float) -> float:
    """The per-step Q_c threshold l of an episodic cost limit d (OSRL's ``q_thres``).

    Spread d evenly over the T = ``episode_len`` steps and discount it from the start:

        l = sum_{t=0}^{T-1} gamma^t d / T = d (1 - gamma^T) / ((1 - gamma) T)

    so l -> d as gamma -> 1 (returned exactly for gamma = 1). OSRL computes it this way in
    CPQ and BEAR-L (``cost_limit * (1 - gamma**episode_len) / (1 - gamma) / episode_len``).
    """
    if gamma == 1.0:
        return float(cost_limit)
    return float(cost_limit * (1.0 - gamma**episode_len) / ((1.0 - gamma) * episode_len))


class OfflineLearnerBase:
    """The start every offline learner shares: its config, pi, Q_r and Q_c exactly as SAC-Lag
    builds them (``build_networks``), frozen deep copies of Q_r and Q_c as their Polyak targets
    Qbar_r and Qbar_c, the critics' optimizers (Adam at ``cfg.critic_lr``) and the Q_c
    threshold l. Each algorithm adds its own parts after these: the behaviour VAE
    (``build_behaviour_model``, where its weights' draws fall in the algorithm's order), its
    ``actor_optimizer``, and in ``TRAINED`` the rest of what training changes (networks,
    optimizers, tensors, PID, counters)."""

    TRAINED: tuple[str, ...] = (
        "actor",
        "reward_critic",
        "cost_critic",
        "reward_critic_target",
        "cost_critic_target",
        "vae",
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
        cfg: Any,
        cost_limit: float,
        episode_len: int,
        device: torch.device,
    ) -> None:
        self.cfg, self.sizes, self.device = cfg, sizes, device
        self.actor, self.reward_critic, self.cost_critic = build_networks(
            obs_dim, act_dim, sizes, device
        )
        self.reward_critic_target = copy.deepcopy(self.reward_critic).requires_grad_(False)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.reward_critic_optimizer = adam(self.reward_critic.parameters(), lr=cfg.critic_lr)
        self.cost_critic_optimizer = adam(self.cost_critic.parameters(), lr=cfg.critic_lr)
        # l in scaled cost units (OSRL: from the unscaled d).
        self.q_threshold = qc_threshold(cost_limit * cfg.cost_scale, episode_len, cfg.gamma)

    def build_behaviour_model(self, obs_dim: int, act_dim: int) -> None:
        """The behaviour model G, a conditional VAE of the data's actions (``vae``; latent
        ``cfg.vae_latent_dim``, None: 2 x act_dim as OSRL), and its Adam (``vae_optimizer``)."""
        cfg, latent_dim = self.cfg, self.cfg.vae_latent_dim or 2 * act_dim
        vae = ConditionalVAE(obs_dim, act_dim, cfg.vae_hidden_sizes, latent_dim)
        self.vae = vae.to(self.device)
        self.vae_optimizer = adam(self.vae.parameters(), lr=cfg.vae_lr)

    def critics_step(
        self, batch: Batch, y_r: torch.Tensor, y_c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step of Q_r and Q_c on their targets; returns (L_Qr, L_Qc):

        L_Qr = sum_j E (Q_r,j(s,a) - y_r)^2 ;  L_Qc = E (Q_c(s,a) - y_c)^2
        """
        obs, act = batch["obs"], batch["act"]
        loss_q_r = critic_loss(self.reward_critic(obs, act), y_r)
        loss_q_c = critic_loss(self.cost_critic(obs, act), y_c)
        gradient_step(self.reward_critic_optimizer, loss_q_r)
        gradient_step(self.cost_critic_optimizer, loss_q_c)
        return loss_q_r, loss_q_c

    def state_dict(self) -> dict[str, Any]:
        """The ``TRAINED`` parts, for a pretraining checkpoint."""
        state: dict[str, Any] = {}
        for name in self.TRAINED:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                state[name] = value.detach().clone()
            elif isinstance(value, int):
                state[name] = value
            else:  # a network, an optimizer or the PID
                state[name] = value.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the ``TRAINED`` parts in place (strict: the same algorithm and sizes)."""
        for name in self.TRAINED:
            value, saved = getattr(self, name), state[name]
            if isinstance(value, torch.Tensor):
                with torch.no_grad():
                    value.copy_(saved)
            elif isinstance(value, int):
                setattr(self, name, saved)
            else:
                value.load_state_dict(saved)


def soft_clipped_target(
    critic: torch.nn.Module,
    next_obs_n: torch.Tensor,
    next_act_n: torch.Tensor,
    mix: float,
    num_actions: int,
) -> torch.Tensor:
    """BEAR's and BCQ's soft-clipped double-Q target value, shape (B,):

        max_k [m min_j Qbar_j(s', a'_k) + (1 - m) max_j Qbar_j(s', a'_k)]

    over n = ``num_actions`` next actions a'_k per state, m = ``mix``. ``next_obs_n`` and
    ``next_act_n`` are (B n, .), each state's n draws adjacent (``repeat_interleave``). With one
    head (Q_c) the mix is Qbar itself.
    """
    q = critic(next_obs_n, next_act_n)  # (heads, B * n), each state's n draws adjacent
    mixed = mix * q.min(0).values + (1.0 - mix) * q.max(0).values
    return mixed.view(-1, num_actions).max(1).values


def soft_clipped_targets(
    learner: OfflineLearnerBase,
    batch: Batch,
    next_obs_n: torch.Tensor,
    next_act_n: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BEAR's and BCQ's targets (y_r, y_c) from the n = ``cfg.num_target_actions`` next actions
    a'_k of each state (``next_obs_n``, ``next_act_n`` as ``soft_clipped_target`` takes them),
    with m = ``cfg.target_mix`` and r, c scaled by ``cfg.reward_scale``, ``cfg.cost_scale``:

        y_r = r + gamma (1 - d) max_k [m min_j Qbar_r,j(s', a'_k)
                                       + (1 - m) max_j Qbar_r,j(s', a'_k)]
        y_c = c + gamma (1 - d) max_k Qbar_c(s', a'_k)   (one head: the mix is Qbar_c itself;
                                                         OSRL: no (1 - d))
    """
    cfg = learner.cfg
    next_q_r, next_q_c = (
        soft_clipped_target(critic, next_obs_n, next_act_n, cfg.target_mix, cfg.num_target_actions)
        for critic in (learner.reward_critic_target, learner.cost_critic_target)
    )
    y_r = bellman_target(cfg.reward_scale * batch["reward"], batch["done"], cfg.gamma, next_q_r)
    y_c = bellman_target(cfg.cost_scale * batch["cost"], batch["done"], cfg.gamma, next_q_c)
    return y_r, y_c


class QcPIDLagrangian:
    """OSRL's PID Lagrangian on Q_c (its ``LagrangianPIDController``), BEAR-L's and BCQ-L's
    cost multiplier lambda. One ``step`` per call:

        e_t = mean_batch Q_c(s, a~) - l
        I_t = max(0, I_{t-1} + e_t)
        lambda = max(0, K_p max(0, e_t) + K_i I_t + K_d max(0, e_t - e_{t-1}))

    (e_0 = I_0 = 0, lambda_0 = 0). It differs from marvel.lagrange.PIDLagrangian (no smoothing,
    the gain K_i outside the integral, a one-step derivative, an error on Q_c each gradient step
    rather than on J_c each rollout), so it lives here. The gains and l are floats, the state
    (``error``, ``integral``, ``lam``) 0-dim tensors on the device: a step never syncs with the
    host.
    """

    def __init__(
        self, kp: float, ki: float, kd: float, threshold: float, device: torch.device
    ) -> None:
        self.kp, self.ki, self.kd, self.threshold = kp, ki, kd, threshold
        self.error = torch.zeros((), device=device)
        self.integral = torch.zeros((), device=device)
        self.lam = torch.zeros((), device=device)

    def step(self, q_c: torch.Tensor) -> torch.Tensor:
        """One step on a batch of Q_c(s, a~) values (detached); returns lambda."""
        error = q_c.mean() - self.threshold
        derivative = F.relu(error - self.error)
        self.integral = F.relu(self.integral + error)
        self.error = error
        self.lam = F.relu(self.kp * F.relu(error) + self.ki * self.integral + self.kd * derivative)
        return self.lam

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "error": self.error.clone(),
            "integral": self.integral.clone(),
            "lam": self.lam.clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.lam.device
        self.error, self.integral, self.lam = (
            state[k].to(device) for k in ("error", "integral", "lam")
        )


def pretrained_from(learner: Any, algo: str, lagrange_multiplier: float) -> Pretrained:
    """The shared output of a learner holding ``actor``, ``reward_critic``, ``cost_critic``,
    ``actor_optimizer``, ``sizes`` and a dataclass ``cfg``."""
    return Pretrained(
        algo=algo,
        actor=learner.actor,
        reward_critic=learner.reward_critic,
        cost_critic=learner.cost_critic,
        actor_optimizer=copy.deepcopy(learner.actor_optimizer.state_dict()),
        lagrange_multiplier=float(lagrange_multiplier),
        sizes=learner.sizes,
        config=plain_dict(learner.cfg),
    )


class OfflineLearner(Protocol):
    """What ``train_offline`` drives: one gradient step per batch, then the shared output."""

    def update(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def to_pretrained(self) -> Pretrained: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def train_offline(
    learner: OfflineLearner,
    buffer: ReplayBuffer,
    steps: int,
    batch_size: int,
    log: Callable[[dict[str, float], int], None] | None = None,
    log_every: int = 1000,
    done: int = 0,
    last: dict[str, float] | None = None,
) -> Pretrained:
    """``steps`` updates on uniform batches of the offline data; logs means every ``log_every``
    (and stops with ``NumericalFault`` if one is not finite). A resumed run passes the steps
    ``done`` before its checkpoint (a multiple of ``log_every``) and the ``last`` means logged."""
    window, start = MetricWindow(), time.perf_counter()
    last = dict(last or {})
    for step in range(done + 1, steps + 1):
        window.add(learner.update(buffer.sample(batch_size)))
        if step % log_every == 0 or step == steps:
            count = window.steps
            last = window.flush()
            check_finite(last, "offline pretraining", step)
            last["perf/offline_steps_per_s"] = count / (time.perf_counter() - start)
            if log is not None:
                log(last, step)
            start = time.perf_counter()
    pretrained = learner.to_pretrained()
    pretrained.metrics = last
    return pretrained
