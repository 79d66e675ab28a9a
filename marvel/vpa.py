"""Value Pre-Alignment (METHOD.md section 3) and its Spearman diagnostic.

VPA re-fits the pretrained critics by policy evaluation of the frozen pretrained policy pi_0 on
the offline data, under the online soft objective, before any interaction:

    y_r = r + gamma (1 - d) [min_j Qbar_r,j(s', a') - alpha_r^VPA log pi_0(a'|s')]     (VPA-r)
    y_c = c + gamma (1 - d) [Qbar_c(s', a')        - alpha_c^VPA log pi_0(a'|s')]     (VPA-c)
    L_VPA = sum_j E_D (Q_r,j(s,a) - y_r)^2 + E_D (Q_c(s,a) - y_c)^2,   a' ~ pi_0(.|s')

The actor is not updated; targets track by Polyak averaging.

The paper's diagnostic (METHOD.md section 3): the Spearman rank correlation between the critics'
values at dataset states, with the dataset's action and with a uniformly random one, and the
Monte-Carlo returns of pi_0 started there (the Bullet agent placed at the recorded state,
``marvel.placement``), before and after VPA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from marvel.choices import Choice
from marvel.data.buffer import ReplayBuffer
from marvel.errors import check_finite
from marvel.losses import MetricWindow
from marvel.placement import monte_carlo_from_states
from marvel.sac_lag import SACLag

DIAGNOSTIC_SEED_OFFSET = 20_000  # diagnostic rollouts share reset seeds with nothing else
ACTION_KINDS = ("dataset", "random")  # the diagnostic's first actions


class VPAStart(Choice):
    """Where VPA starts (``vpa.start``): the pretrained critics (the paper's description) or
    freshly initialised ones (the released code's effective behaviour: METHOD.md section 3,
    "Where VPA starts")."""

    pretrained = "pretrained"
    fresh = "fresh"


@dataclass
class VPAConfig:
    """The ``vpa`` config group. Budget and minibatching are the released code's."""

    enabled: bool = False
    start: VPAStart = VPAStart.pretrained
    alpha_reward: float = 0.0  # alpha_r^VPA (0 and 0: the released code's plain `vpa`)
    alpha_cost: float = 0.0  # alpha_c^VPA (the paper: alpha_r^VPA > alpha_c^VPA)
    iterations: int = 5000  # each draws batch_size offline transitions
    batch_size: int = 256
    minibatch_size: int = 64  # one gradient step per minibatch (4 per iteration)
    # The paper's diagnostic: this many dataset states (0: skip it), pi_0 rolled out this many
    # times from each after the first action, for this many steps (None: the episode length)
    diagnostic_states: int = 32
    diagnostic_rollouts: int = 3
    diagnostic_horizon: int | None = None

    def __post_init__(self) -> None:  # the Python API's string (a wrong one raises)
        self.start = VPAStart(self.start)


def align(
    agent: SACLag,
    offline: ReplayBuffer,
    cfg: VPAConfig,
    log: Callable[[dict[str, float], int], None] | None = None,
    log_every: int = 500,
) -> dict[str, float]:
    """Run VPA on ``agent``'s critics with its actor as the frozen pi_0; returns mean losses of
    the last logging window (``NumericalFault`` if one is not finite). The critics' learning
    rates are the agent's (finetuning) ones."""
    window, last = MetricWindow(), {}
    for iteration in range(1, cfg.iterations + 1):
        batch = offline.sample(cfg.batch_size)
        for start in range(0, cfg.batch_size, cfg.minibatch_size):
            minibatch = {k: v[start : start + cfg.minibatch_size] for k, v in batch.items()}
            window.add(agent.critic_update(minibatch, cfg.alpha_reward, cfg.alpha_cost))
            agent.update_targets()
        if iteration % log_every == 0 or iteration == cfg.iterations:
            last = {f"vpa/{name.split('/')[-1]}_loss": m for name, m in window.flush().items()}
            check_finite(last, "VPA", iteration)
            if log is not None:
                log(last, iteration)
    return last


@dataclass
class DiagnosticSample:
    """Dataset states, first actions of each kind (``ACTION_KINDS``), and pi_0's Monte-Carlo
    discounted returns after them (rewards scaled as the critics learn them)."""

    obs: np.ndarray
    actions: dict[str, np.ndarray]
    reward_return: dict[str, np.ndarray]
    cost_return: dict[str, np.ndarray]


def diagnostic_sample(
    agent: SACLag, env: gym.Env, data: dict[str, np.ndarray], cfg: VPAConfig, seed: int
) -> DiagnosticSample:
    """``cfg.diagnostic_states`` dataset states drawn uniformly without replacement, with the
    dataset's action and a uniform random action in [-1, 1], and pi_0's returns from there."""
    rng = np.random.default_rng([seed, DIAGNOSTIC_SEED_OFFSET])
    n = min(cfg.diagnostic_states, len(data["observations"]))
    index = np.sort(rng.choice(len(data["observations"]), size=n, replace=False))
    obs = data["observations"][index]
    actions = {
        "dataset": data["actions"][index],
        "random": rng.uniform(-1.0, 1.0, size=data["actions"][index].shape).astype(np.float32),
    }
    horizon = cfg.diagnostic_horizon or env.spec.max_episode_steps
    reward_return, cost_return = {}, {}
    for k, (kind, first) in enumerate(actions.items()):
        reward_return[kind], cost_return[kind] = monte_carlo_from_states(
            env,
            agent.actor,
            obs,
            first,
            cfg.diagnostic_rollouts,
            horizon,
            agent.cfg.gamma,
            agent.cfg.reward_scale,
            seed=seed + DIAGNOSTIC_SEED_OFFSET + k,
            device=agent.device,
        )
    return DiagnosticSample(obs, actions, reward_return, cost_return)


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation; None when either side is constant (e.g. no cost at all)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy.stats import spearmanr  # imported where it is used: runs start faster

    return float(spearmanr(x, y).statistic)


@torch.no_grad()
def critic_diagnostic(agent: SACLag, sample: DiagnosticSample) -> dict[str, float | None]:
    """Per action kind: Spearman of min_j Q_r,j and of Q_c with pi_0's Monte-Carlo returns
    (``spearman_{reward,cost}_{kind}``), and the critics' means beside the returns' means
    (``q_{reward,cost}_{kind}``, ``mc_{reward,cost}_{kind}``: how far the values are off)."""
    obs = torch.as_tensor(sample.obs, device=agent.device)
    out: dict[str, float | None] = {}
    for kind, actions in sample.actions.items():
        act = torch.as_tensor(actions, device=agent.device)
        q_r = agent.reward_critic(obs, act).min(0).values.cpu().numpy()
        q_c = agent.cost_critic(obs, act)[0].cpu().numpy()
        for name, q, mc in (
            ("reward", q_r, sample.reward_return[kind]),
            ("cost", q_c, sample.cost_return[kind]),
        ):
            out[f"spearman_{name}_{kind}"] = spearman(q, mc)
            out[f"q_{name}_{kind}"] = float(q.mean())
            out[f"mc_{name}_{kind}"] = float(mc.mean())
    return out
