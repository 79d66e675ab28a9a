"""BCQ-Lag (marvel.offline.bcql): the perturbation bound, the squashed-Gaussian log-likelihood,
its losses, that it learns and pi_0 imitates it, its PID lambda, and its Pretrained output."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from marvel.data.buffer import ReplayBuffer
from marvel.nets import CriticEnsemble, SquashedGaussianActor, squashed_gaussian_log_prob
from marvel.offline.base import qc_threshold, train_offline
from marvel.offline.bcql import BCQL, BCQLConfig, Perturbation
from marvel.start import NetworkSizes, Pretrained
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
STEPS, BATCH, LOG_EVERY = 300, 128, 50

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**overrides) -> BCQLConfig:
    base = dict(vae_hidden_sizes=[64, 64], perturbation_hidden_sizes=[64, 64], num_target_actions=4)
    return BCQLConfig(**{**base, **overrides})


@dataclass
class Run:
    learner: BCQL
    initial_actor: SquashedGaussianActor  # pi_0 before training
    pretrained: Pretrained
    rows: list[dict[str, float]]


@pytest.fixture(scope="module")
def trained(buffer: ReplayBuffer) -> Run:
    """STEPS updates at d = 20, shared by the tests that read a trained learner."""
    torch.manual_seed(0)
    buffer.generator.manual_seed(0)
    obs_dim, act_dim = dims(buffer)
    learner = BCQL(obs_dim, act_dim, SIZES, small_config(), 20.0, EPISODE_LEN, CPU)
    initial_actor = copy.deepcopy(learner.actor)
    rows: list[dict[str, float]] = []
    pretrained = train_offline(
        learner, buffer, STEPS, BATCH, log=lambda m, _: rows.append(m), log_every=LOG_EVERY
    )
    return Run(learner, initial_actor, pretrained, rows)


def test_perturbation_is_bounded_and_actions_stay_in_the_box() -> None:
    torch.manual_seed(0)
    phi = 0.05
    model = Perturbation(5, 3, [32, 32], phi)
    with torch.no_grad():  # large weights: tanh saturates, xi reaches its bound
        for p in model.parameters():
            p.mul_(50.0)
    obs = torch.randn(256, 5)
    act = torch.rand(256, 3) * 2.0 - 1.0
    act[:64] = torch.sign(act[:64])  # on the box's edges: the clip is active
    xi = model.perturbation(obs, act)
    out = model(obs, act)
    assert xi.abs().max() <= phi and xi.abs().max() > 0.99 * phi
    assert out.abs().max() <= 1.0
    assert torch.equal(out, (act + xi).clamp(-1.0, 1.0))
    inside = (act + xi).abs() < 1.0
    assert torch.equal(out[inside], (act + xi)[inside])
    assert (out[:64].abs() == 1.0).any()  # some edge actions pushed outwards were clipped


def test_squashed_gaussian_log_prob_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(64, 3, generator=g, dtype=torch.float64) * 2.0
    log_std = torch.rand(64, 3, generator=g, dtype=torch.float64) * 3.0 - 2.0
    action = (torch.rand(64, 3, generator=g, dtype=torch.float64) * 2.0 - 1.0) * 0.999
    dist = TransformedDistribution(Normal(mu, log_std.exp()), [TanhTransform()])
    expected = dist.log_prob(action).sum(-1)
    torch.testing.assert_close(squashed_gaussian_log_prob(mu, log_std, action), expected)

    # The actor's own log-probability of its sampled actions, recomputed from the actions.
    torch.manual_seed(1)
    actor = SquashedGaussianActor(5, 3, [32, 32]).double()
    obs = torch.randn(64, 5, dtype=torch.float64)
    sampled, log_prob = actor(obs)
    mu, log_std = actor.distribution(obs)
    torch.testing.assert_close(squashed_gaussian_log_prob(mu, log_std, sampled), log_prob)

    # Actions on the box's edges: finite, through u = atanh(1 - eps).
    edge = squashed_gaussian_log_prob(mu[:2], log_std[:2], torch.ones(2, 3, dtype=torch.float64))
    assert torch.isfinite(edge).all()


def test_one_update_matches_the_equations() -> None:
    """Replay the update's random draws and recompute every loss and lambda from its equation."""
    torch.manual_seed(0)
    cfg = small_config(
        critic_lr=0.0,  # the critics stay put, so the actor loss can be recomputed after
        gamma=0.9,
        target_mix=0.6,
        cost_scale=2.0,
        phi=0.2,
    )
    cost_limit, episode_len = 0.5, 10
    learner = BCQL(5, 2, SIZES, cfg, cost_limit, episode_len, CPU)
    with torch.no_grad():
        for target in (learner.reward_critic_target, learner.cost_critic_target):
            for p in target.parameters():  # make the targets differ from the online networks
                p.add_(0.05)
        for critic in (learner.cost_critic, learner.cost_critic_target):
            critic.layers[-1].bias.add_(2.0)  # Q_c above l: a nonzero lambda
        for p in learner.perturbation_target.parameters():
            p.add_(0.05)
    before = copy.deepcopy(learner)
    batch = random_batch(act_bound=0.9)
    torch.manual_seed(1)
    out = learner.update(batch)

    torch.manual_seed(1)  # the same draws, in the update's order
    obs, act, next_obs = batch["obs"], batch["act"], batch["next_obs"]
    n_b, n_t, latent = obs.shape[0], cfg.num_target_actions, learner.vae.latent_dim
    with torch.no_grad():
        loss_vae = expected_vae_loss(before.vae, obs, act, cfg.vae_kl_weight)

        # Targets decode with the VAE after this update's step: the learner's own.
        next_obs_n = next_obs.repeat_interleave(n_t, 0)
        z = torch.randn(n_b * n_t, latent).clamp(-0.5, 0.5)
        next_act = before.perturbation_target(next_obs_n, learner.vae.decode(next_obs_n, z))
        next_act = next_act.view(n_b, n_t, 2)
        loss_q_r, loss_q_c = expected_critic_losses(before, batch, next_act)

        decoded = learner.vae.decode(obs, torch.randn(n_b, latent).clamp(-0.5, 0.5))
        xi = cfg.phi * torch.tanh(before.perturbation.net(torch.cat([obs, decoded], -1)))
        new_act = (decoded + xi).clamp(-1.0, 1.0)
        q_c_pi = before.cost_critic(obs, new_act)[0]
        threshold = qc_threshold(cost_limit * cfg.cost_scale, episode_len, cfg.gamma)
        error = float(q_c_pi.mean()) - threshold  # first PID step: e_0 = I_0 = 0
        assert error > 0
        lam = (cfg.pid_kp + cfg.pid_ki + cfg.pid_kd) * error
        loss_actor = (
            -before.reward_critic(obs, new_act).min(0).values.mean()
            + lam * (q_c_pi - threshold).mean()
        )

        # Distillation targets: fresh decodes, perturbed by the *updated* perturbation model.
        decoded = learner.vae.decode(obs, torch.randn(n_b, latent).clamp(-0.5, 0.5))
        bcq_act = learner.perturbation(obs, decoded)
        mu, log_std = before.actor.distribution(obs)
        dist = TransformedDistribution(Normal(mu, log_std.exp()), [TanhTransform()])
        log_prob = dist.log_prob(bcq_act.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)

    assert float(out["loss/vae"]) == pytest.approx(float(loss_vae), rel=1e-5)
    assert float(out["loss/critic_reward"]) == pytest.approx(float(loss_q_r), rel=1e-5)
    assert float(out["loss/critic_cost"]) == pytest.approx(float(loss_q_c), rel=1e-5)
    assert float(out["offline/q_c"]) == pytest.approx(float(q_c_pi.mean()), rel=1e-5)
    assert float(out["offline/lambda"]) == pytest.approx(lam, rel=1e-5)
    assert float(out["loss/actor"]) == pytest.approx(float(loss_actor), rel=1e-5)
    assert float(out["offline/distill_log_prob"]) == pytest.approx(float(log_prob.mean()), rel=1e-4)
    assert float(out["loss/distill"]) == -float(out["offline/distill_log_prob"])
    # The perturbation target moved towards the perturbation model by tau; the critics stayed.
    for p, p_bar, p_bar0 in zip(
        learner.perturbation.parameters(),
        learner.perturbation_target.parameters(),
        before.perturbation_target.parameters(),
        strict=True,
    ):
        assert torch.allclose(p_bar, (1 - cfg.tau) * p_bar0 + cfg.tau * p, atol=1e-7)
    for p, p0 in zip(
        learner.reward_critic.parameters(), before.reward_critic.parameters(), strict=True
    ):
        assert torch.equal(p, p0)
    for name in ("actor", "perturbation", "vae"):  # each of these took a step
        ours, theirs = getattr(learner, name), getattr(before, name)
        assert any(
            not torch.equal(p, p0)
            for p, p0 in zip(ours.parameters(), theirs.parameters(), strict=True)
        ), name


def test_optimizers_distillation_lr_defaults_to_actor_lr() -> None:
    learner = BCQL(5, 2, SIZES, small_config(actor_lr=3e-4), 20.0, 10, CPU)
    assert learner.actor_optimizer.param_groups[0]["lr"] == 3e-4
    assert learner.perturbation_optimizer.param_groups[0]["lr"] == 3e-4
    assert {id(p) for p in learner.actor_optimizer.param_groups[0]["params"]} == {
        id(p) for p in learner.actor.parameters()
    }
    learner = BCQL(5, 2, SIZES, small_config(actor_lr=3e-4, distill_lr=1e-5), 20.0, 10, CPU)
    assert learner.actor_optimizer.param_groups[0]["lr"] == 1e-5
    assert learner.perturbation_optimizer.param_groups[0]["lr"] == 3e-4


def test_training_learns(trained: Run) -> None:
    rows = trained.rows
    assert len(rows) == STEPS // LOG_EVERY
    expected = {
        "loss/vae",
        "loss/critic_reward",
        "loss/critic_cost",
        "loss/actor",
        "loss/distill",
        "offline/lambda",
        "offline/q_c",
        "offline/perturbation",
        "offline/distill_log_prob",
    }
    assert expected <= set(rows[0])
    assert all(math.isfinite(v) for row in rows for v in row.values())
    first, last = rows[0], rows[-1]
    for name in ("loss/vae", "loss/critic_reward", "loss/critic_cost", "loss/distill"):
        assert last[name] < first[name], name
    assert last["offline/distill_log_prob"] > first["offline/distill_log_prob"] + 0.5
    assert 0.0 < last["offline/perturbation"] <= trained.learner.cfg.phi
    assert trained.pretrained.metrics == last


def test_distilled_pi0_imitates_bcq(trained: Run, buffer: ReplayBuffer) -> None:
    """On dataset states, the trained pi_0 gives BCQ-L's actions a higher likelihood than the
    initial one did, and its deterministic action lies near BCQ-L's mean action."""
    learner = trained.learner
    obs = buffer.storage["obs"][:256]
    torch.manual_seed(2)
    obs_8 = obs.repeat(8, 1)  # 8 draws of z per state
    with torch.no_grad():
        bcq_act = learner.bcq_act(obs_8)
        bcq_mean = bcq_act.view(8, *obs.shape[:1], -1).mean(0)
        log_lik, gap = {}, {}
        for name, actor in (("before", trained.initial_actor), ("after", learner.actor)):
            log_lik[name] = squashed_gaussian_log_prob(*actor.distribution(obs_8), bcq_act).mean()
            gap[name] = (actor.act(obs, deterministic=True) - bcq_mean).abs().mean()
    assert log_lik["after"] > log_lik["before"] + 1.0
    assert gap["after"] < 0.5 * gap["before"]


def test_cost_multiplier_rises_when_q_c_exceeds_threshold(buffer: ReplayBuffer) -> None:
    """OSRL's PID lambda on Q_c rises under violation and replays its recursion."""
    obs_dim, act_dim = dims(buffer)
    cfg = small_config()
    assert_qc_pid_multiplier(
        lambda cost_limit: BCQL(obs_dim, act_dim, SIZES, cfg, cost_limit, EPISODE_LEN, CPU),
        buffer,
        batch_size=BATCH,
    )


def test_pretrained_round_trips_and_loads_strictly_into_sac_lag(
    trained: Run, buffer: ReplayBuffer
) -> None:
    pretrained, learner = trained.pretrained, trained.learner
    assert pretrained.algo == "bcql"
    assert pretrained.actor is learner.actor  # the distilled pi_0, not BCQ's perturbation model
    assert isinstance(pretrained.actor, SquashedGaussianActor)
    assert isinstance(pretrained.reward_critic, CriticEnsemble)
    assert pretrained.reward_critic.num_heads == 2 and pretrained.cost_critic.num_heads == 1
    assert pretrained.config["phi"] == learner.cfg.phi and pretrained.config["distill_lr"] is None
    assert pretrained.lagrange_multiplier == float(learner.pid.lam)
    # The distillation optimizer's state is the one handed to finetuning.
    state = pretrained.actor_optimizer["state"]
    assert len(state) == len(list(learner.actor.parameters()))
    assert int(state[0]["step"]) == STEPS

    obs, act = buffer.storage["obs"][:8], buffer.storage["act"][:8]
    assert_transfers_to_sac_lag(pretrained, obs, act)
