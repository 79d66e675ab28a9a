"""The online loop of METHOD.md section 4: rollouts, SAC-Lag updates and the multiplier's
controller, iteration by iteration, with the O2O baselines plugged into its hooks."""

from __future__ import annotations

import time
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from marvel.baselines import Baseline
from marvel.checkpoint_records import LearnerState, OnlineCounters
from marvel.data.buffer import Batch, ReplayBuffer
from marvel.diagnostics import rollout_diagnostics
from marvel.lagrange import LagrangeController
from marvel.losses import MetricWindow
from marvel.rollout import Episode, episode_seed, run_episode
from marvel.sac_lag import LambdaUpdateEvery, SACLag


class OnlineLearner:
    """The online loop of METHOD.md section 4: each iteration rolls out E episodes with the
    stochastic policy, then takes U updates, feeding the controller the mean episode cost J_c."""

    def __init__(
        self,
        agent: SACLag,
        controller: LagrangeController,
        env: gym.Env,
        buffer: ReplayBuffer,
        seed: int,
        baselines: Sequence[Baseline] = (),
    ) -> None:
        """``baselines``: the O2O baselines plugged into the loop (``marvel.baselines``; none:
        Marvel)."""
        self.agent, self.controller, self.env, self.buffer = agent, controller, env, buffer
        self.baselines = list(baselines)
        self.seed = seed
        self.noise_rng = np.random.default_rng(seed)
        self.iteration = 0
        self.updates = 0
        self.episodes = 0
        self.env_steps = 0
        self.cumulative_cost = 0.0

    def rollout(self, num_episodes: int, action_noise: float = 0.0) -> list[Episode]:
        """Roll out ``num_episodes`` stochastic episodes, each with the policy the baselines
        choose (pi without them), and add them to the replay buffer."""
        episodes = []
        for baseline in self.baselines:
            baseline.begin_rollout(self.agent, self.iteration)
        for _ in range(num_episodes):
            policy = self.agent.actor
            for baseline in self.baselines:  # JSRL, PEX
                policy = baseline.episode_policy(policy, self.env.spec.max_episode_steps)
            episode = run_episode(
                self.env,
                policy,
                self.agent.device,
                seed=episode_seed(self.seed, self.episodes),
                action_noise=action_noise,
                rng=self.noise_rng,
            )
            self.buffer.add(episode.transitions)
            self.episodes += 1
            self.env_steps += episode.length
            self.cumulative_cost += episode.cost
            episodes.append(episode)
        return episodes

    def improve(self, episode_cost: float) -> dict[str, float]:
        """U updates, each of batch_size samples split into minibatch_size gradient steps."""
        cfg, every = self.agent.cfg, self.agent.cfg.lambda_update_every
        if every == LambdaUpdateEvery.iteration:
            self.controller.update(episode_cost)
        window = MetricWindow()
        for _ in range(cfg.updates_per_iteration):
            if every == LambdaUpdateEvery.update:
                self.controller.update(episode_cost)
            batch = self.sample_batch()
            for start in range(0, cfg.batch_size, cfg.minibatch_size):
                if every == LambdaUpdateEvery.minibatch:
                    self.controller.update(episode_cost)
                minibatch = {k: v[start : start + cfg.minibatch_size] for k, v in batch.items()}
                window.add(self.agent.update(minibatch, self.controller.lam, self.baselines))
            self.updates += 1
        return window.flush()

    def sample_batch(self) -> Batch:
        """One update's ``batch_size`` transitions: a baseline's (hybrid replay), else uniform
        from the online buffer."""
        cfg = self.agent.cfg
        for baseline in self.baselines:
            batch = baseline.sample_batch(self.buffer, cfg.batch_size, cfg.minibatch_size)
            if batch is not None:
                return batch
        return self.buffer.sample(cfg.batch_size)

    def iteration_step(self) -> dict[str, float]:
        """One iteration; returns its metrics row (METHOD.md section 4; metric names as in the
        docs/USAGE.md's metrics section)."""
        cfg = self.agent.cfg
        start = time.perf_counter()
        episodes = self.rollout(cfg.episodes_per_iteration)
        rollout_s = time.perf_counter() - start
        baseline_metrics = {k: v for b in self.baselines for k, v in b.rollout_metrics().items()}
        episode_cost = float(np.mean([e.cost for e in episodes]))
        diagnostics = rollout_diagnostics(self.agent, episodes, self.controller.lam)
        start = time.perf_counter()
        losses = self.improve(episode_cost)
        update_s = time.perf_counter() - start
        self.iteration += 1
        return {
            "online/iteration": self.iteration,
            "online/env_steps": self.env_steps,
            "train/episode_reward": float(np.mean([e.reward for e in episodes])),
            "train/episode_cost": episode_cost,
            "train/cumulative_cost": self.cumulative_cost,
            "train/alpha": float(self.agent.alpha),
            **losses,
            **diagnostics,
            **self.controller.terms(),
            **baseline_metrics,
            "perf/env_steps_per_s": sum(e.length for e in episodes) / max(rollout_s, 1e-9),
            "perf/updates_per_s": cfg.updates_per_iteration / max(update_s, 1e-9),
        }

    def state(self) -> LearnerState:
        """Everything a resumed loop needs to continue exactly (METHOD.md section 4)."""
        return LearnerState(
            agent=self.agent.state_dict(),
            controller=self.controller.state_dict(),
            buffer=self.buffer.state_dict(),
            baselines=[baseline.state_dict() for baseline in self.baselines],
            noise_rng=self.noise_rng.bit_generator.state,
            counters=OnlineCounters(
                iteration=self.iteration,
                updates=self.updates,
                episodes=self.episodes,
                env_steps=self.env_steps,
                cumulative_cost=self.cumulative_cost,
            ),
        )

    def load_state(self, state: LearnerState) -> None:
        """Continue from ``state`` (strict: every part must fit this loop)."""
        self.agent.load_state_dict(state.agent)
        self.controller.load_state_dict(state.controller)
        self.buffer.load_state_dict(state.buffer)
        for baseline, saved in zip(self.baselines, state.baselines, strict=True):
            baseline.load_state_dict(saved)
        self.noise_rng.bit_generator.state = state.noise_rng
        counters = state.counters
        self.iteration, self.updates = counters.iteration, counters.updates
        self.episodes, self.env_steps = counters.episodes, counters.env_steps
        self.cumulative_cost = counters.cumulative_cost
