"""CPQ (marvel.offline.cpq): the Q_c threshold, each loss against its equation (METHOD.md
section 2), training on data marvel collects, the OOD penalty's effect, and the strict
offline -> online transfer of its ``Pretrained`` output."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pytest
import torch

from marvel.data.buffer import ReplayBuffer
from marvel.offline.base import qc_threshold, train_offline
from marvel.offline.cpq import CPQ, CPQConfig
from marvel.start import NetworkSizes, Pretrained
from tests.helpers import assert_transfers_to_sac_lag, dims, expected_vae_loss, random_batch

CPU = torch.device("cpu")
SIZES = NetworkSizes([64, 64], [64, 64], 2)
COST_LIMIT, EPISODE_LEN = 20.0, 200
STEPS, BATCH, LOG_EVERY = 300, 128, 50

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**overrides: object) -> CPQConfig:
    return CPQConfig(vae_hidden_sizes=[64, 64], batch_size=BATCH, **overrides)


@dataclass
class Run:
    learner: CPQ
    pretrained: Pretrained
    logs: list[dict[str, float]]


def train(buffer: ReplayBuffer, cfg: CPQConfig, steps: int = STEPS, seed: int = 0) -> Run:
    torch.manual_seed(seed)
    buffer.generator.manual_seed(seed)
    obs_dim, act_dim = dims(buffer)
    learner = CPQ(obs_dim, act_dim, SIZES, cfg, COST_LIMIT, EPISODE_LEN, CPU)
    logs: list[dict[str, float]] = []
    pretrained = train_offline(
        learner, buffer, steps, BATCH, log=lambda m, _: logs.append(m), log_every=LOG_EVERY
    )
    return Run(learner, pretrained, logs)


@pytest.fixture(scope="module")
def differentiable_run(buffer: ReplayBuffer) -> Run:
    """The CPQ paper's penalty, through the current Q_c (kept for study)."""
    return train(buffer, small_config(ood_penalty="differentiable"))


@pytest.fixture(scope="module")
def osrl_run(buffer: ReplayBuffer) -> Run:
    """The default, OSRL's penalty, has no gradient: Q_c is plain policy evaluation of pi."""
    return train(buffer, small_config())


def test_qc_threshold_matches_hand_computation() -> None:
    # d = 10 over T = 2 steps, gamma = 0.5: 5 + 0.5 * 5.
    assert qc_threshold(10.0, 2, 0.5) == pytest.approx(7.5)
    # d = 20, T = 200, gamma = 0.99: (20 / 200) sum_t 0.99^t = 10 (1 - 0.99^200).
    by_sum = sum(0.99**t for t in range(200)) * 20.0 / 200
    assert qc_threshold(20.0, 200, 0.99) == pytest.approx(by_sum)
    assert qc_threshold(20.0, 200, 0.99) == pytest.approx(10 * (1 - 0.99**200))
    assert qc_threshold(20.0, 200, 1.0) == 20.0  # undiscounted: the episodic limit itself


def test_unknown_ood_penalty_is_refused() -> None:
    with pytest.raises(ValueError, match="OODPenalty 'paper'; valid: target, differentiable"):
        CPQConfig(ood_penalty="paper")


def test_learner_thresholds_use_scaled_cost_limit() -> None:
    cfg = CPQConfig(vae_hidden_sizes=[16], cost_scale=2.0)
    learner = CPQ(3, 2, SIZES, cfg, COST_LIMIT, EPISODE_LEN, CPU)
    expected = qc_threshold(2.0 * COST_LIMIT, EPISODE_LEN, cfg.gamma)
    assert learner.q_threshold == pytest.approx(expected)
    assert learner.ood_threshold == pytest.approx(cfg.qc_scalar * expected)


def tiny_learner(**overrides: object) -> CPQ:
    """A CPQ on random_batch's dims (5, 2), its weights from seed 0."""
    torch.manual_seed(0)
    return CPQ(5, 2, SIZES, small_config(**overrides), COST_LIMIT, EPISODE_LEN, CPU)


def close(got: torch.Tensor, expected: float) -> bool:
    return float(got.detach()) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_vae_loss_matches_its_equation() -> None:
    """L_G = mean ||a_hat - a||^2 + beta mean KL(q(z|s,a) || N(0, I)), one z draw."""
    learner, batch = tiny_learner(), random_batch()
    torch.manual_seed(1)
    expected = expected_vae_loss(learner.vae, batch["obs"], batch["act"], 0.5)
    torch.manual_seed(1)
    assert close(learner.vae.loss(batch["obs"], batch["act"], 0.5), float(expected.detach()))


def test_targets_back_up_only_safe_next_actions() -> None:
    """y_r = r_s + gamma (1 - d) 1[Qbar_c(s', a') <= l] min_j Qbar_r,j(s', a') and
    y_c = c_s + gamma (1 - d) Qbar_c(s', a'), one a' ~ pi(.|s') for both."""
    learner, batch = tiny_learner(reward_scale=0.5, cost_scale=2.0), random_batch()
    cfg, next_obs = learner.cfg, batch["next_obs"]
    torch.manual_seed(1)
    with torch.no_grad():
        next_act, _ = learner.actor(next_obs)  # the a' that targets() draws under this seed
        next_q_r = learner.reward_critic_target(next_obs, next_act).tolist()
        next_q_c = learner.cost_critic_target(next_obs, next_act)[0].tolist()
    learner.q_threshold = float(np.median(next_q_c))  # l splits the next actions in two
    torch.manual_seed(1)
    y_r, y_c = learner.targets(batch)
    safe = [q <= learner.q_threshold for q in next_q_c]
    assert any(safe) and not all(safe)
    for i in range(len(next_q_c)):
        discount = cfg.gamma * (1.0 - float(batch["done"][i]))
        value = min(next_q_r[0][i], next_q_r[1][i]) if safe[i] else 0.0
        assert close(y_r[i], 0.5 * float(batch["reward"][i]) + discount * value)
        assert close(y_c[i], 2.0 * float(batch["cost"][i]) + discount * next_q_c[i])


def test_reward_critic_loss_sums_the_heads_mean_squared_errors() -> None:
    """L_Qr = sum_j E_D (Q_r,j(s, a) - y_r)^2."""
    learner, batch = tiny_learner(), random_batch()
    y_r = torch.randn(16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        q_r = learner.reward_critic(batch["obs"], batch["act"]).tolist()
    expected = sum(
        sum((q - y) ** 2 for q, y in zip(head, y_r.tolist(), strict=True)) / 16 for head in q_r
    )
    assert close(learner.reward_critic_loss(batch, y_r), expected)


@pytest.mark.parametrize("penalty", ["target", "differentiable"])
def test_cost_critic_loss_matches_its_equation(penalty: str) -> None:
    """L_Qc = E_D (Q_c(s, a) - y_c)^2 - alpha (E_nu Q_c - qc_scalar l), nu the candidates of
    pi whose latent KL is at or above the 0.75 quantile: OSRL's E_nu (target Q_c at pre-tanh
    samples, masked sum / (K B), no gradient) or the paper's (Q_c at squashed samples, mean)."""
    learner, batch = tiny_learner(ood_penalty=penalty, log_alpha_init=0.5), random_batch()
    cfg, obs, n = learner.cfg, batch["obs"], 16 * learner.cfg.sample_action_num
    y_c = torch.randn(16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    with torch.no_grad():
        ood_obs = torch.cat([obs] * cfg.sample_action_num)
        mu, log_std = learner.actor.distribution(ood_obs)
        u = mu + log_std.exp() * torch.randn(mu.shape)
        candidates = u if penalty == "target" else torch.tanh(u)
        mean, std = learner.vae.encode(ood_obs, candidates)
        kl = (0.5 * (mean**2 + std**2 - 1.0 - torch.log(std**2))).mean(-1).numpy()
        ood = kl >= np.quantile(kl, cfg.ood_quantile)
        critic = learner.cost_critic_target if penalty == "target" else learner.cost_critic
        q_ood = critic(ood_obs, candidates)[0].numpy()[ood]
        q_c = learner.cost_critic(obs, batch["act"])[0]
    e_nu = q_ood.sum() / n if penalty == "target" else q_ood.mean()
    bellman = float(((q_c - y_c) ** 2).mean())
    torch.manual_seed(3)
    loss_q_c, penalty_term, q_c_ood = learner.cost_critic_loss(batch, y_c)
    assert 0 < ood.sum() < n
    assert close(loss_q_c, bellman) and close(q_c_ood, float(e_nu))
    assert close(penalty_term, -math.exp(0.5) * (float(e_nu) - 1.5 * learner.q_threshold))
    assert penalty_term.requires_grad == (penalty == "differentiable")


def test_alpha_ascends_on_the_ood_gap_and_is_clipped() -> None:
    """log alpha <- clip(log alpha + lr alpha (qc_scalar l - E_nu Q_c), +-log_alpha_clip)."""
    learner = tiny_learner(log_alpha_init=0.3, alpha_lr=0.01)
    learner.update_alpha(torch.tensor(learner.ood_threshold - 2.0))  # E_nu Q_c 2 below target
    assert close(learner.log_alpha, 0.3 + 0.01 * math.exp(0.3) * 2.0)
    learner.update_alpha(torch.tensor(learner.ood_threshold + 1e6))  # far above: the lower clip
    assert float(learner.log_alpha) == -learner.cfg.log_alpha_clip


def test_actor_loss_maximizes_reward_value_where_safe() -> None:
    """L_pi = -E_s [1[Q_c(s, a~) <= l] min_j Q_r,j(s, a~)]; gradients reach pi only."""
    learner, batch = tiny_learner(), random_batch()
    torch.manual_seed(4)
    with torch.no_grad():
        new_act, _ = learner.actor(batch["obs"])  # the a~ that actor_loss draws under this seed
        q_r = learner.reward_critic(batch["obs"], new_act).tolist()
        q_c = learner.cost_critic(batch["obs"], new_act)[0].tolist()
    learner.q_threshold = float(np.median(q_c))
    expected = (
        -sum(min(q_r[0][i], q_r[1][i]) for i in range(16) if q_c[i] <= learner.q_threshold) / 16
    )
    torch.manual_seed(4)
    loss, _, _ = learner.actor_loss(batch)
    assert close(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in learner.actor.parameters())
    critics = (learner.reward_critic, learner.cost_critic)
    assert all(p.grad is None for critic in critics for p in critic.parameters())


def _window_means(logs: list[dict[str, float]], key: str) -> tuple[float, float]:
    return logs[0][key], logs[-1][key]


def test_training_logs_are_finite_and_losses_decrease(
    differentiable_run: Run, osrl_run: Run
) -> None:
    for run in (differentiable_run, osrl_run):
        assert len(run.logs) == STEPS // LOG_EVERY
        for row in run.logs:
            assert {"loss/vae", "loss/critic_reward", "loss/critic_cost", "loss/actor"} <= set(row)
            assert "offline/alpha" in row
            assert all(np.isfinite(v) for v in row.values()), row
        for key in ("loss/vae", "loss/critic_reward"):
            first, last = _window_means(run.logs, key)
            assert last < first, (key, first, last)
    # Q_c's Bellman error falls where it is plain policy evaluation (OSRL's gradient-free
    # penalty). With the paper's penalty it rises over these first steps instead: the pushed-up
    # OOD values propagate through the targets while alpha is still near its initial 1.
    first, last = _window_means(osrl_run.logs, "loss/critic_cost")
    assert last < first, (first, last)


def test_default_cost_critic_stays_bounded(buffer: ReplayBuffer, osrl_run: Run) -> None:
    """With the default penalty Q_c is policy evaluation of a cost in [0, 1] per step: its TD
    loss never grows and its values on the data and on uniform actions stay within
    [-0.5, 1 / (1 - gamma)], where the differentiable form runs away (benchmarks/README.md)."""
    losses = [row["loss/critic_cost"] for row in osrl_run.logs]
    assert max(losses) <= losses[0] + 1e-3, losses
    assert max(losses) < 1.0, losses
    obs, act = buffer.storage["obs"], buffer.storage["act"]
    uniform = torch.rand(act.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    gamma = osrl_run.learner.cfg.gamma
    with torch.no_grad():
        for actions in (act, uniform):
            q_c = osrl_run.learner.cost_critic(obs, actions)[0]
            assert -0.5 < q_c.min().item() and q_c.max().item() < 1.0 / (1.0 - gamma)


def test_ood_penalty_makes_unfamiliar_actions_costly(
    buffer: ReplayBuffer, differentiable_run: Run, osrl_run: Run
) -> None:
    """CPQ's penalty pushes Q_c up on actions the behaviour VAE finds unlikely, so after training
    Q_c is higher on uniformly random actions than on the data's own actions or the VAE's
    samples, and by far more than without the penalty's gradient (OSRL's variant)."""
    obs, act = buffer.storage["obs"], buffer.storage["act"]
    uniform = torch.rand(act.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def mean_q_c(run: Run, actions: torch.Tensor) -> float:
        with torch.no_grad():
            return run.learner.cost_critic(obs, actions)[0].mean().item()

    torch.manual_seed(2)
    with torch.no_grad():
        behaviour = differentiable_run.learner.vae.decode(obs)
    q_data, q_uniform = mean_q_c(differentiable_run, act), mean_q_c(differentiable_run, uniform)
    assert q_uniform > q_data + 1.0, (q_uniform, q_data)
    assert q_uniform > mean_q_c(differentiable_run, behaviour) + 1.0
    gap_without = mean_q_c(osrl_run, uniform) - mean_q_c(osrl_run, act)
    assert q_uniform - q_data > gap_without + 1.0, (q_uniform - q_data, gap_without)
    # The constrained quantity E_nu[Q_c] itself went up.
    first, last = _window_means(differentiable_run.logs, "offline/qc_ood")
    assert last > first + 1.0


def test_default_penalty_has_no_gradient(buffer: ReplayBuffer) -> None:
    """The default (OSRL's) penalty moves alpha only: alpha's start leaves every network
    unchanged. With the differentiable penalty it does not."""

    def cost_critic_after(**overrides: object) -> tuple[dict[str, torch.Tensor], float]:
        run = train(buffer, small_config(**overrides), steps=10)
        return run.learner.cost_critic.state_dict(), float(run.learner.alpha)

    for penalty, same in (("target", True), ("differentiable", False)):
        low, alpha_low = cost_critic_after(ood_penalty=penalty, log_alpha_init=-3.0)
        high, alpha_high = cost_critic_after(ood_penalty=penalty, log_alpha_init=3.0)
        assert alpha_low != alpha_high
        assert all(torch.equal(low[k], high[k]) for k in low) == same


def test_pretrained_round_trips_and_loads_strictly_into_sac_lag(
    buffer: ReplayBuffer, differentiable_run: Run
) -> None:
    pretrained, cfg = differentiable_run.pretrained, differentiable_run.learner.cfg
    assert pretrained.algo == "cpq"
    assert pretrained.config == asdict(cfg)
    assert pretrained.lagrange_multiplier == pytest.approx(float(differentiable_run.learner.alpha))
    assert pretrained.metrics == differentiable_run.logs[-1]
    assert pretrained.reward_critic.num_heads == 2 and pretrained.cost_critic.num_heads == 1

    obs, act = buffer.storage["obs"][:32], buffer.storage["act"][:32]
    assert_transfers_to_sac_lag(pretrained, obs, act)


def test_update_returns_detached_scalars(buffer: ReplayBuffer) -> None:
    obs_dim, act_dim = dims(buffer)
    learner = CPQ(obs_dim, act_dim, SIZES, small_config(), COST_LIMIT, EPISODE_LEN, CPU)
    for name, value in learner.update(buffer.sample(16)).items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, name
        assert not value.requires_grad, name
