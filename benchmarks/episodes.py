"""Rollout and evaluation speed: env steps/s of marvel's ``run_episode`` and ``evaluate`` (in one
env, and in worker processes) against a bare ``obs -> torch -> actor.act -> numpy -> env.step``
loop on the same env, actor and reset seeds."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from marvel.envs import TaskSpec
from marvel.evaluate import EVAL_SEED_OFFSET, evaluate, make_eval_envs
from marvel.launch import available_cpus
from marvel.nets import SquashedGaussianActor
from marvel.rollout import episode_seed, run_episode
from suite import SEED, Sizes, compare


class StepCounter(gym.Wrapper):
    """Counts ``env.step`` calls (``evaluate`` returns no step count); both loops pay for it."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, action: np.ndarray) -> tuple:
        self.steps += 1
        return self.env.step(action)


def bare_episodes(
    env: gym.Env,
    actor: SquashedGaussianActor,
    device: torch.device,
    episodes: int,
    seed: int,
    deterministic: bool,
) -> None:
    """The reference loop: obs -> torch -> actor.act -> numpy -> env.step, nothing stored."""
    for i in range(episodes):
        obs, _ = env.reset(seed=episode_seed(seed, i))
        done = False
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
            action = actor.act(obs_t, deterministic)[0].cpu().numpy()
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated


def bench_episodes(
    marvel_episodes: Callable[[], None],
    env: StepCounter,
    actor: SquashedGaussianActor,
    device: torch.device,
    sizes: Sizes,
    seed: int,
    deterministic: bool,
) -> dict[str, float]:
    """env steps/s of ``marvel_episodes`` against the bare loop on the same reset seeds."""

    def marvel() -> float:
        start = env.steps
        marvel_episodes()
        return env.steps - start

    def bare() -> float:
        start = env.steps
        bare_episodes(env, actor, device, sizes.episodes, seed, deterministic)
        return env.steps - start

    marvel()  # warm-up
    bare()
    rate, bare_rate, ratio = compare(marvel, bare, sizes.repeats, device)
    return {
        "env_steps_per_s": rate,
        "bare_env_steps_per_s": bare_rate,
        "ratio_to_bare_env": ratio,
        "episodes": sizes.episodes,
    }


def bench_rollout(
    env: StepCounter, actor: SquashedGaussianActor, device: torch.device, sizes: Sizes
) -> dict[str, float]:
    """Stochastic episodes: marvel's ``run_episode`` against the bare loop."""

    def episodes() -> None:
        for i in range(sizes.episodes):
            run_episode(env, actor, device, seed=episode_seed(SEED, i))

    return bench_episodes(episodes, env, actor, device, sizes, SEED, deterministic=False)


def bench_eval(
    env: StepCounter,
    actor: SquashedGaussianActor,
    task: TaskSpec,
    device: torch.device,
    sizes: Sizes,
) -> dict[str, float]:
    """Deterministic episodes: marvel's ``evaluate`` against the bare loop, same reset seeds;
    in one in-process env (the default, ``eval_envs=1``), then in min(episodes, CPUs) worker
    processes (``eval_envs > 1``, when there are 2 CPUs or more)."""

    def episodes() -> None:
        evaluate(actor, env, task, sizes.episodes, SEED, device)

    seed = SEED + EVAL_SEED_OFFSET
    results = bench_episodes(episodes, env, actor, device, sizes, seed, deterministic=True)
    workers = min(sizes.episodes, available_cpus())
    if workers < 2:
        return results

    def bare() -> float:
        start = env.steps
        bare_episodes(env, actor, device, sizes.episodes, seed, deterministic=True)
        return env.steps - start

    steps = bare()  # the worker envs run exactly these episodes (tests/test_evaluate.py)
    parallel_envs = make_eval_envs(task.name, workers)

    def parallel() -> float:
        evaluate(actor, parallel_envs, task, sizes.episodes, SEED, device)
        return steps

    parallel()  # warm-up (the workers are up already)
    rate, _, ratio = compare(parallel, bare, sizes.repeats, device)
    parallel_envs.close()
    return {
        **results,
        "parallel_envs": workers,
        "parallel_env_steps_per_s": rate,
        "parallel_ratio_to_bare_env": ratio,
    }
