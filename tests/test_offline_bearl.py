"""BEAR-Lag (marvel.offline.bearl): its MMD, its losses, that it learns, its Pretrained output."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from marvel.data.buffer import ReplayBuffer
from marvel.nets import CriticEnsemble, SquashedGaussianActor
from marvel.offline.base import qc_threshold, train_offline
from marvel.offline.bearl import BEARL, BEARLConfig, mmd
from marvel.start import NetworkSizes
from tests.helpers import (
    assert_qc_pid_multiplier,
    assert_transfers_to_sac_lag,
    dims,
    expected_critic_losses,
    expected_vae_loss,
    random_batch,
)

CPU = torch.device("cpu")
SIZES = NetworkSizes([64, 64], [64, 64], 2)
EPISODE_LEN = 200  # BallCircle

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**overrides) -> BEARLConfig:
    base = dict(vae_hidden_sizes=[64, 64], num_target_actions=4, num_mmd_samples=4)
    return BEARLConfig(**{**base, **overrides})


def test_qc_threshold() -> None:
    assert qc_threshold(20.0, 200, 0.99) == pytest.approx(20 * (1 - 0.99**200) / (0.01 * 200))
    assert qc_threshold(20.0, 200, 1.0) == 20.0


@pytest.mark.parametrize(
    ("kernel", "k_xx", "k_yy", "k_xy"),
    [
        # x = {(0,0), (1,0)}, y = {(0,0), (0,2)}, sigma = 1; pairwise ||.||_2^2 and ||.||_1:
        # xx: 0,1,1,0   yy: 0,4,4,0   xy: 0,4,1,5 (gaussian) / 0,2,1,3 (laplacian)
        (
            "gaussian",
            (2 + 2 * math.exp(-0.5)) / 4,
            (2 + 2 * math.exp(-2)) / 4,
            (1 + math.exp(-2) + math.exp(-0.5) + math.exp(-2.5)) / 4,
        ),
        (
            "laplacian",
            (2 + 2 * math.exp(-0.5)) / 4,
            (2 + 2 * math.exp(-1)) / 4,
            (1 + math.exp(-1) + math.exp(-0.5) + math.exp(-1.5)) / 4,
        ),
    ],
)
def test_mmd_matches_hand_computation(kernel: str, k_xx: float, k_yy: float, k_xy: float) -> None:
    x = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    y = torch.tensor([[[0.0, 0.0], [0.0, 2.0]]], dtype=torch.float64)
    expected = math.sqrt(k_xx + k_yy - 2 * k_xy + 1e-6)
    assert mmd(x, y, kernel, sigma=1.0).tolist() == pytest.approx([expected], rel=1e-12)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_mmd_zero_for_identical_sets_positive_for_shifted(kernel: str) -> None:
    x = torch.randn(3, 8, 2, generator=torch.Generator().manual_seed(0))
    same = mmd(x, x.clone(), kernel, sigma=1.0)
    shifted = mmd(x, x + 3.0, kernel, sigma=1.0)
    assert same.shape == (3,)
    assert torch.allclose(same, torch.full((3,), 1e-3))  # sqrt of the 1e-6 stabilizer
    assert (shifted > 0.5).all()
    with pytest.raises(ValueError, match="laplacian"):
        mmd(x, x, "cosine", sigma=1.0)


@pytest.mark.parametrize("warmup_steps", [0, 1])
def test_one_update_matches_the_equations(warmup_steps: int) -> None:
    """Replay the update's random draws and recompute every loss and lambda from its equation.

    With ``warmup_steps = 1`` the first update is a warm-up one: no -Q_r term in L_pi.
    """
    torch.manual_seed(0)
    cfg = small_config(
        warmup_steps=warmup_steps,
        critic_lr=0.0,  # the critics stay put, so the actor loss can be recomputed after
        gamma=0.9,
        target_mix=0.6,
        cost_scale=2.0,
        target_mmd_thresh=0.01,
        log_alpha_mmd_init=0.3,
    )
    cost_limit, episode_len = 0.5, 10
    learner = BEARL(5, 2, SIZES, cfg, cost_limit, episode_len, CPU)
    with torch.no_grad():  # make the targets differ from the online networks
        for target in (learner.reward_critic_target, learner.cost_critic_target):
            for p in target.parameters():
                p.add_(0.05)
    before = copy.deepcopy(learner)
    batch = random_batch(act_bound=0.9)
    torch.manual_seed(1)
    out = learner.update(batch)

    torch.manual_seed(1)  # the same draws, in the update's order
    obs, act, next_obs = batch["obs"], batch["act"], batch["next_obs"]
    n_b, n_t, n_m = obs.shape[0], cfg.num_target_actions, cfg.num_mmd_samples
    with torch.no_grad():
        loss_vae = expected_vae_loss(before.vae, obs, act, cfg.vae_kl_weight)

        next_act, _ = before.actor_target(next_obs.repeat_interleave(n_t, 0))
        next_act = next_act.view(n_b, n_t, 2)
        loss_q_r, loss_q_c = expected_critic_losses(before, batch, next_act)

        # The MMD sees the VAE after this update's step: the learner's own.
        z = torch.randn(n_b, n_m, learner.vae.latent_dim).clamp(-0.5, 0.5)
        behaviour_u = learner.vae.decoder(torch.cat([obs.unsqueeze(1).expand(-1, n_m, -1), z], -1))
        mu, log_std = before.actor.distribution(obs)
        actor_u = mu.unsqueeze(1) + log_std.exp().unsqueeze(1) * torch.randn(n_b, n_m, 2)
        mmd_value = mmd(behaviour_u, actor_u, cfg.kernel, cfg.mmd_sigma)
        new_act = torch.tanh(actor_u[:, 0])
        q_c_pi = before.cost_critic(obs, new_act)[0]
        threshold = qc_threshold(cost_limit * cfg.cost_scale, episode_len, cfg.gamma)
        error = q_c_pi.mean() - threshold  # first PID step: e_0 = I_0 = 0
        lam = (cfg.pid_kp + cfg.pid_ki + cfg.pid_kd) * max(float(error), 0.0)
        loss_actor = (
            math.exp(cfg.log_alpha_mmd_init) * (mmd_value - cfg.target_mmd_thresh).mean()
            + lam * (q_c_pi - threshold).mean()
        )
        if warmup_steps == 0:
            loss_actor = loss_actor - before.reward_critic(obs, new_act).min(0).values.mean()
        log_alpha = cfg.log_alpha_mmd_init + cfg.mmd_alpha_lr * (
            1.0 if float((mmd_value - cfg.target_mmd_thresh).mean()) > 0 else -1.0
        )  # Adam's first step moves by lr in the sign of -grad

    assert float(out["loss/vae"]) == pytest.approx(float(loss_vae), rel=1e-5)
    assert float(out["loss/critic_reward"]) == pytest.approx(float(loss_q_r), rel=1e-5)
    assert float(out["loss/critic_cost"]) == pytest.approx(float(loss_q_c), rel=1e-5)
    assert float(out["offline/mmd"]) == pytest.approx(float(mmd_value.mean()), rel=1e-5)
    assert float(out["offline/q_c"]) == pytest.approx(float(q_c_pi.mean()), rel=1e-5)
    assert float(out["offline/lambda"]) == pytest.approx(lam, rel=1e-5, abs=1e-8)
    assert float(out["loss/actor"]) == pytest.approx(float(loss_actor), rel=1e-5)
    assert learner.log_alpha_mmd.item() == pytest.approx(log_alpha, rel=1e-4)
    # The actor target moved towards the actor by tau; the critics stayed (critic_lr = 0).
    for p, p_bar, p_bar0 in zip(
        learner.actor.parameters(),
        learner.actor_target.parameters(),
        before.actor.parameters(),
        strict=True,
    ):
        assert torch.allclose(p_bar, (1 - cfg.tau) * p_bar0 + cfg.tau * p, atol=1e-7)
    for p, p0 in zip(
        learner.reward_critic.parameters(), before.reward_critic.parameters(), strict=True
    ):
        assert torch.equal(p, p0)


def test_training_learns(buffer: ReplayBuffer) -> None:
    torch.manual_seed(0)
    obs_dim, act_dim = dims(buffer)
    learner = BEARL(obs_dim, act_dim, SIZES, small_config(), 20.0, EPISODE_LEN, CPU)
    rows: list[dict[str, float]] = []
    pretrained = train_offline(
        learner, buffer, steps=300, batch_size=128, log=lambda m, _: rows.append(m), log_every=50
    )
    assert len(rows) == 6
    expected = {
        "loss/vae",
        "loss/critic_reward",
        "loss/critic_cost",
        "loss/actor",
        "offline/mmd",
        "offline/lambda",
        "offline/alpha_mmd",
    }
    assert expected <= set(rows[0])
    assert all(math.isfinite(v) for row in rows for v in row.values())
    first, last = rows[0], rows[-1]
    for name in ("loss/vae", "loss/critic_reward", "loss/critic_cost", "offline/mmd"):
        assert last[name] < first[name], name
    assert pretrained.metrics == last


def test_cost_multiplier_rises_when_q_c_exceeds_threshold(buffer: ReplayBuffer) -> None:
    """OSRL's PID lambda on Q_c rises under violation and replays its recursion."""
    obs_dim, act_dim = dims(buffer)
    cfg = small_config()
    assert_qc_pid_multiplier(
        lambda cost_limit: BEARL(obs_dim, act_dim, SIZES, cfg, cost_limit, EPISODE_LEN, CPU),
        buffer,
        batch_size=128,
    )


def test_pretrained_round_trips_and_loads_strictly_into_sac_lag(buffer: ReplayBuffer) -> None:
    torch.manual_seed(0)
    obs_dim, act_dim = dims(buffer)
    cfg = small_config()
    learner = BEARL(obs_dim, act_dim, SIZES, cfg, 20.0, EPISODE_LEN, CPU)
    pretrained = train_offline(learner, buffer, steps=5, batch_size=32, log_every=5)
    assert pretrained.algo == "bearl"
    assert isinstance(pretrained.actor, SquashedGaussianActor)
    assert isinstance(pretrained.reward_critic, CriticEnsemble)
    assert pretrained.reward_critic.num_heads == 2 and pretrained.cost_critic.num_heads == 1
    assert pretrained.config["mmd_sigma"] == cfg.mmd_sigma
    assert pretrained.lagrange_multiplier == float(learner.pid.lam)

    obs, act = buffer.storage["obs"][:8], buffer.storage["act"][:8]
    assert_transfers_to_sac_lag(pretrained, obs, act)


def test_unknown_kernel_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown MMDKernel 'rbf'; valid: gaussian, laplacian"):
        BEARL(5, 2, SIZES, small_config(kernel="rbf"), 20.0, 10, CPU)
