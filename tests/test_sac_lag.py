"""SAC-Lag (METHOD.md section 4): the losses equal their equations, it learns, it is repeatable."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from marvel.baselines import BaselinesConfig, JumpStartRL, PolicyExpansion, make_baselines
from marvel.checkpoint import load_checkpoint, load_policy, rng_state, save_checkpoint
from marvel.checkpoint_records import FinetuneProgress, FinetuningCheckpoint
from marvel.choices import plain_dict
from marvel.config import CollectConfig
from marvel.data.buffer import ReplayBuffer
from marvel.diagnostics import rollout_diagnostics
from marvel.envs import make_env, space_dims, task_spec
from marvel.evaluate import evaluate, make_eval_envs
from marvel.lagrange import DualAscent
from marvel.nets import gaussian_kl
from marvel.online import OnlineLearner
from marvel.rollout import JumpStart
from marvel.sac_lag import SACLag, SACLagConfig
from marvel.start import NetworkSizes
from tests.helpers import random_batch

CPU = torch.device("cpu")
SMALL = NetworkSizes([32, 32], [32, 32, 32])


def small_config(**overrides) -> SACLagConfig:
    return SACLagConfig(**{"alpha": 0.2, **overrides})


def small_agent(**overrides) -> SACLag:
    """SAC-Lag on 5-d states and 2-d actions with ``SMALL`` networks."""
    return SACLag(5, 2, small_config(**overrides), SMALL, CPU)


@pytest.mark.parametrize("actor_uses_target_critics", [False, True])
def test_losses_match_method_equations(actor_uses_target_critics: bool) -> None:
    torch.manual_seed(0)
    cfg = small_config(
        critic_reward_lr=0.0,  # critics stay put, so the actor loss can be recomputed after
        critic_cost_lr=0.0,
        reward_scale=0.1,
        gamma=0.9,
        actor_uses_target_critics=actor_uses_target_critics,
    )
    agent = SACLag(5, 2, cfg, SMALL, CPU)
    with torch.no_grad():  # make the targets differ from the online critics
        for p in agent.reward_critic_target.parameters():
            p.add_(0.05)
    before = copy.deepcopy(agent)  # the networks as the update sees them
    batch, lam, alpha = random_batch(), 0.7, cfg.alpha
    torch.manual_seed(1)
    losses = agent.update(batch, lam)

    torch.manual_seed(1)  # replay the same two action draws: a' ~ pi(.|s'), then a~ ~ pi(.|s)
    with torch.no_grad():
        next_act, next_logp = before.actor(batch["next_obs"])
        q_next = before.reward_critic_target(batch["next_obs"], next_act).min(0).values
        y_r = 0.1 * batch["reward"] + 0.9 * (1 - batch["done"]) * (q_next - alpha * next_logp)
        q_c_next = before.cost_critic_target(batch["next_obs"], next_act)[0]
        y_c = batch["cost"] + 0.9 * (1 - batch["done"]) * q_c_next
        q_r = before.reward_critic(batch["obs"], batch["act"])
        expected_q_r = sum(((q_r[j] - y_r) ** 2).mean() for j in range(2))
        expected_q_c = ((before.cost_critic(batch["obs"], batch["act"])[0] - y_c) ** 2).mean()
        new_act, logp = before.actor(batch["obs"])
        if actor_uses_target_critics:
            critic_r, critic_c = before.reward_critic_target, before.cost_critic_target
        else:
            critic_r, critic_c = before.reward_critic, before.cost_critic
        expected_actor = (
            -critic_r(batch["obs"], new_act).min(0).values
            + lam * critic_c(batch["obs"], new_act)[0]
            + alpha * logp
        ).mean()
    torch.testing.assert_close(losses["loss/critic_reward"], expected_q_r)
    torch.testing.assert_close(losses["loss/critic_cost"], expected_q_c)
    torch.testing.assert_close(losses["loss/actor"], expected_actor)
    # Polyak: theta_bar <- (1 - tau) theta_bar + tau theta (critics did not move: lr 0)
    for p_t, p_t0, p in zip(
        agent.reward_critic_target.parameters(),
        before.reward_critic_target.parameters(),
        agent.reward_critic.parameters(),
        strict=True,
    ):
        torch.testing.assert_close(p_t, (1 - cfg.tau) * p_t0 + cfg.tau * p)


def test_auto_alpha_moves_towards_target_entropy() -> None:
    torch.manual_seed(0)
    agent = small_agent(auto_alpha=True, alpha_lr=0.1, target_entropy=100.0)
    alpha0 = float(agent.alpha)
    for _ in range(5):
        agent.update(random_batch(), 0.0)
    assert float(agent.alpha) > alpha0  # entropy far below target: alpha grows


def test_state_dict_round_trip_is_strict() -> None:
    a, b = small_agent(), small_agent()
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.actor.parameters(), b.actor.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    wider = SACLag(5, 2, small_config(), NetworkSizes([64, 64], SMALL.cost_hidden_sizes), CPU)
    with pytest.raises(RuntimeError, match="size mismatch"):
        wider.load_state_dict(a.state_dict())


def test_load_policy_rebuilds_the_actor_at_the_recorded_sizes(tmp_path: Path) -> None:
    """A finetuning checkpoint records the networks' sizes beside the learner's state, and
    reads back as the record that was written."""
    sizes = NetworkSizes([16], [8, 8], 3)
    learner, agent = make_learner(0, small_config(), sizes)
    record = FinetuningCheckpoint(
        task_spec={"name": "BallRun"},
        experiment="marvel",
        seed=0,
        dims=[agent.obs_dim, agent.act_dim],
        config_digest="digest",
        agent_config=plain_dict(agent.cfg),
        sizes=dataclasses.asdict(sizes),
        learner=learner.state(),
        rng=rng_state(),
        wandb_run_id=None,
        progress=FinetuneProgress({}, 0.0, {}, {}),
    )
    save_checkpoint(tmp_path / "last.pt", record)
    actor, meta = load_policy(tmp_path / "last.pt")
    obs = torch.randn(3, agent.obs_dim)
    assert meta == {
        "kind": "sac_lag",
        "task": "BallRun",
        "dims": record.dims,
        "experiment": "marvel",
        "seed": 0,
    }
    assert torch.equal(actor.act(obs, True), agent.actor.act(obs, True))
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded.learner.counters == record.learner.counters and loaded.sizes == record.sizes


def make_learner(
    seed: int, cfg: SACLagConfig, sizes: NetworkSizes = SMALL
) -> tuple[OnlineLearner, SACLag]:
    torch.manual_seed(seed)
    env = make_env("BallRun")
    obs_dim, act_dim = space_dims(env)
    agent = SACLag(obs_dim, act_dim, cfg, sizes, CPU)
    buffer = ReplayBuffer(obs_dim, act_dim, 100_000, CPU, seed)
    return OnlineLearner(agent, DualAscent(20.0, 1e-2), env, buffer, seed), agent


def test_same_seed_same_numbers() -> None:
    def rows(seed: int) -> list[dict]:
        cfg = small_config(episodes_per_iteration=1, updates_per_iteration=3)
        learner, _ = make_learner(seed, cfg)
        out = [learner.iteration_step() for _ in range(2)]
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in out]

    assert rows(7) == rows(7)
    assert rows(7) != rows(8)


def test_learns_on_ballrun() -> None:
    """FSRL-style learning test: a short SAC-Lag run (the collector's recipe, one episode then
    100 updates per iteration) clearly beats the untrained policy."""
    collect = CollectConfig()
    cfg = dataclasses.replace(collect.agent, updates_per_iteration=100)
    learner, agent = make_learner(0, cfg, collect.networks)
    task, eval_envs = task_spec("BallRun"), make_eval_envs("BallRun")
    before = evaluate(agent.actor, eval_envs, task, 2, 0, CPU)
    for _ in range(12):
        learner.iteration_step()
    after = evaluate(agent.actor, eval_envs, task, 2, 0, CPU)
    assert learner.updates == 1200 and learner.env_steps == 12 * 100
    assert after.reward > before.reward + 150, (before, after)


def test_kl_to_prior_keeps_the_actor_near_pi_0() -> None:
    """A large KL weight holds the policy at pi_0; without it the policy moves away."""

    def drift(kl_to_prior: float) -> float:
        torch.manual_seed(0)
        agent = small_agent(actor_lr=1e-2)
        baselines = make_baselines(BaselinesConfig(kl_to_prior=kl_to_prior))
        prior = copy.deepcopy(agent.actor)
        for _ in range(30):
            losses = agent.update(random_batch(), 0.0, baselines)
        assert ("train/kl_to_prior" in losses) == (kl_to_prior > 0)
        obs = random_batch()["obs"]
        return gaussian_kl(*agent.actor.distribution(obs), *prior.distribution(obs)).mean().item()

    assert drift(100.0) < 0.2 * drift(0.0)


def test_target_noise_changes_targets_only_when_on() -> None:
    def critic_loss(std: float) -> float:
        torch.manual_seed(0)
        agent = small_agent()
        baselines = make_baselines(BaselinesConfig(target_noise_std=std))
        torch.manual_seed(1)
        losses = agent.critic_update(random_batch(), 0.2, 0.0, baselines)
        return losses["loss/critic_reward"].item()

    assert critic_loss(0.0) == critic_loss(0.0)
    assert critic_loss(0.3) != critic_loss(0.0)


def filled_buffer(reward: float, size: int = 500, seed: int = 0) -> ReplayBuffer:
    """A buffer of ``size`` transitions whose rewards all equal ``reward`` (a source tag)."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(5, 2, size, CPU, seed)
    buffer.add(
        {
            "obs": rng.standard_normal((size, 5)),
            "act": rng.uniform(-1, 1, (size, 2)),
            "reward": np.full(size, reward),
            "cost": np.zeros(size),
            "next_obs": rng.standard_normal((size, 5)),
            "done": np.zeros(size),
            "timeout": np.zeros(size),
        }
    )
    return buffer


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5])
def test_hybrid_replay_batch_composition(fraction: float) -> None:
    """Every minibatch holds round(fraction * minibatch_size) offline transitions (tagged by
    reward -1) after its online ones (reward +1)."""
    cfg = small_config(batch_size=256, minibatch_size=64)
    baselines = make_baselines(
        BaselinesConfig(offline_fraction=fraction), offline=filled_buffer(-1.0, seed=1)
    )
    learner = OnlineLearner(
        SACLag(5, 2, cfg, SMALL, CPU),
        DualAscent(20.0, 1e-2),
        make_env("BallRun"),
        filled_buffer(1.0),
        seed=0,
        baselines=baselines,
    )
    batch = learner.sample_batch()
    assert all(v.shape[0] == 256 for v in batch.values())
    n_offline = round(fraction * 64)
    for block in batch["reward"].split(64):
        expected = [1.0] * (64 - n_offline) + [-1.0] * n_offline
        assert block.tolist() == expected


def test_fused_schedule_steps_once_on_the_samples_the_paper_schedule_splits() -> None:
    """``minibatch_size=256`` (the fused schedule, a labelled deviation) takes one gradient step
    per update on exactly the 256 samples that the paper's schedule (minibatch 64) splits into
    four consecutive steps, and that step is ``SACLag.update`` on the fixed batch, nothing else."""
    recorded: dict[int, list[dict[str, torch.Tensor]]] = {}
    learners = {}
    for minibatch in (64, 256):
        cfg = small_config(batch_size=256, minibatch_size=minibatch, updates_per_iteration=3)
        torch.manual_seed(0)
        agent = SACLag(5, 2, cfg, SMALL, CPU)
        learners[minibatch] = OnlineLearner(
            agent, DualAscent(20.0, 0.0), make_env("BallRun"), filled_buffer(1.0), seed=0
        )
        recorded[minibatch] = []
        step = agent.update

        def recording_update(batch, lam, baselines=(), step=step, log=recorded[minibatch]):
            log.append({k: v.clone() for k, v in batch.items()})
            return step(batch, lam, baselines)

        agent.update = recording_update
    for learner in learners.values():
        torch.manual_seed(1)  # the actor's reparameterization noise
        learner.improve(episode_cost=25.0)

    paper, fused = recorded[64], recorded[256]
    assert (len(paper), len(fused)) == (12, 3)
    for u, batch in enumerate(fused):
        for key, value in batch.items():
            assert torch.equal(torch.cat([mb[key] for mb in paper[4 * u : 4 * u + 4]]), value)

    torch.manual_seed(0)  # the reference: the same initial agent, SACLag.update on the batches
    reference = SACLag(5, 2, learners[256].agent.cfg, SMALL, CPU)
    torch.manual_seed(1)
    for batch in fused:
        reference.update(batch, 0.0)
    # networks, targets, optimizer moments and alpha, exactly
    torch.testing.assert_close(
        learners[256].agent.state_dict(), reference.state_dict(), rtol=0, atol=0
    )


def test_hybrid_replay_needs_the_offline_data() -> None:
    with pytest.raises(ValueError, match="needs the offline dataset"):
        make_baselines(BaselinesConfig(offline_fraction=0.5))


class ConstantPolicy:
    """Acts ``value`` on every coordinate: tells which policy of a JumpStart acted."""

    def __init__(self, value: float) -> None:
        self.value = value

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return torch.full((obs.shape[0], 2), self.value)


def test_jump_start_hands_over_after_the_guide_steps() -> None:
    policy = JumpStart(ConstantPolicy(1.0), ConstantPolicy(-1.0), guide_steps=3)
    actions = [policy.act(torch.zeros(1, 5))[0, 0].item() for _ in range(5)]
    assert actions == [1.0, 1.0, 1.0, -1.0, -1.0] and policy.guide_acted == 3


def test_jsrl_guide_fraction_follows_its_schedule() -> None:
    """The guide share falls linearly from 1 to 0 over the budget, and pi_0 acts for exactly
    round(share * episode length) steps of each episode."""
    cfg = small_config(episodes_per_iteration=2, updates_per_iteration=1)
    env = make_env("BallCircle")
    obs_dim, act_dim = space_dims(env)
    buffer = ReplayBuffer(obs_dim, act_dim, 10_000, CPU, 0)
    agent = SACLag(obs_dim, act_dim, cfg, SMALL, CPU)
    baselines = make_baselines(BaselinesConfig(jsrl_initial_fraction=1.0), total_iterations=4)
    learner = OnlineLearner(agent, DualAscent(20.0, 1e-2), env, buffer, 0, baselines)
    length = env.spec.max_episode_steps
    rows = [learner.iteration_step() for _ in range(4)]
    assert [r["jsrl/guide_fraction"] for r in rows] == [1.0, 0.75, 0.5, 0.25]
    assert [r["jsrl/guide_steps"] for r in rows] == [
        2 * round(f * length) for f in (1, 0.75, 0.5, 0.25)
    ]
    (jsrl,) = baselines
    assert isinstance(jsrl, JumpStartRL) and jsrl.guide_fraction(4) == 0.0  # budget spent


def test_prior_actor_travels_with_the_agent_state() -> None:
    """KL-to-prior and JSRL read pi_0: a resumed agent must get it back, not its own start."""
    torch.manual_seed(0)
    original = small_agent()
    torch.manual_seed(1)
    resumed = small_agent()
    resumed.load_state_dict(original.state_dict())
    obs = torch.randn(4, 5)
    assert torch.equal(resumed.prior_actor.act(obs, True), original.prior_actor.act(obs, True))


def test_pex_choice_probabilities_are_the_softmax_of_reward_values() -> None:
    """On a fixed state, PEX picks pi_0's action with probability
    exp(Q0 / T) / (exp(Q0 / T) + exp(Q1 / T)), Q = min over the reward heads."""
    torch.manual_seed(0)
    agent = small_agent()
    obs = torch.randn(1, 5)
    prior_act, act = torch.tensor([[0.5, -0.5]]), torch.tensor([[-0.2, 0.9]])
    expansion = PolicyExpansion(agent, temperature=0.5)
    with torch.no_grad():
        q0 = agent.reward_critic(obs, prior_act).min(0).values.item()
        q1 = agent.reward_critic(obs, act).min(0).values.item()
    expected = math.exp(q0 / 0.5) / (math.exp(q0 / 0.5) + math.exp(q1 / 0.5))
    probs = expansion.choice_probabilities(obs, prior_act, act)
    assert probs[0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert probs.sum().item() == pytest.approx(1.0)


def test_pex_acts_with_the_chosen_policy_and_counts_it() -> None:
    """Near-greedy (temperature 1e-6), PEX acts with whichever action Q_r values more."""
    torch.manual_seed(0)
    agent = small_agent()
    with torch.no_grad():  # pi moves away from pi_0, so the two propose different actions
        for param in agent.actor.parameters():
            param.add_(0.5 * torch.randn_like(param))
    expansion = PolicyExpansion(agent, temperature=1e-6)  # near-greedy on Q_r
    obs = torch.randn(200, 5)
    with torch.no_grad():
        prior_act, act = agent.prior_actor.act(obs, True), agent.actor.act(obs, True)
        p_prior = expansion.choice_probabilities(obs, prior_act, act)[:, 0]
    chosen = expansion.act(obs, deterministic=True)
    decisive = (p_prior > 0.999) | (p_prior < 0.001)
    assert decisive.sum() > 150
    expected = torch.where((p_prior > 0.5)[:, None], prior_act, act)
    assert torch.equal(chosen[decisive], expected[decisive])
    assert expansion.steps == 200
    assert expansion.prior_chosen == int((chosen == prior_act).all(-1).sum())


@pytest.mark.parametrize(
    ("every", "steps"), [("minibatch", 3 * 4), ("update", 3), ("iteration", 1)]
)
def test_lambda_cadence(every: str, steps: int) -> None:
    """The controller steps once per minibatch (the default: 4 per update of 256 in 64s), per
    update or per iteration: with SGD at lr 1 and J_c - d = 1, lambda counts its steps."""
    cfg = small_config(
        lambda_update_every=every, updates_per_iteration=3, batch_size=256, minibatch_size=64
    )
    learner = OnlineLearner(
        SACLag(5, 2, cfg, SMALL, CPU),
        DualAscent(0.0, lr=1.0, optimizer="sgd"),
        None,
        filled_buffer(0.0),
        0,
    )
    learner.improve(episode_cost=1.0)
    assert learner.controller.lam == steps
    assert SACLagConfig().lambda_update_every == "minibatch"


def test_rollout_diagnostics() -> None:
    """diag/* on a real rollout: returns-to-go, the critics' means, lambda Q_c, KL(pi || pi_0)
    zero at the start and positive after the actor moves; training's RNG stream untouched."""
    torch.manual_seed(0)
    learner, agent = make_learner(0, small_config(episodes_per_iteration=1, actor_lr=1e-2))
    episodes = learner.rollout(1)
    state = torch.get_rng_state()
    diag = rollout_diagnostics(agent, episodes, lam=2.0)
    assert torch.equal(torch.get_rng_state(), state)
    t = episodes[0].transitions
    discounts = agent.cfg.gamma ** np.arange(len(t["cost"]))
    assert diag["diag/mc_cost"] == pytest.approx(
        np.mean(
            [np.sum(discounts[: len(t["cost"]) - i] * t["cost"][i:]) for i in range(len(discounts))]
        )
    )
    obs, act = torch.as_tensor(t["obs"]), torch.as_tensor(t["act"])
    with torch.no_grad():
        q_c = agent.cost_critic(obs, act)[0].mean().item()
    assert diag["diag/q_cost"] == pytest.approx(q_c)
    assert diag["diag/lambda_q_cost"] == pytest.approx(2.0 * q_c)
    assert diag["diag/kl_to_pi0"] == 0.0 and diag["diag/entropy"] > 0
    learner.improve(0.0)
    assert rollout_diagnostics(agent, episodes, lam=0.0)["diag/kl_to_pi0"] > 0


def test_reset_critics_gives_fresh_critics_equal_to_their_targets() -> None:
    torch.manual_seed(0)
    agent = small_agent()
    before = copy.deepcopy(agent.cost_critic.state_dict())
    agent.update(random_batch(), 0.0)
    agent.reset_critics()
    for critic, target in (
        (agent.reward_critic, agent.reward_critic_target),
        (agent.cost_critic, agent.cost_critic_target),
    ):
        for p, q in zip(critic.parameters(), target.parameters(), strict=True):
            assert torch.equal(p, q)
    assert not all(torch.equal(before[k], v) for k, v in agent.cost_critic.state_dict().items())
    assert agent.cost_critic_optimizer.state == {}
