"""Dataset collection in DSRL's HDF5 schema, DSRL's recipe at a smaller scale.

DSRL recorded TRPO-Lag training runs under a cost-limit curriculum; marvel records a SAC-Lag
training run (the agent of marvel.sac_lag) whose cost limit moves along a curriculum, with extra
per-episode action noise, so the data spans poor-to-good and safe-to-unsafe behaviour. A change
that alters what a given config produces bumps ``marvel.caches.DATASET_FORMAT``.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from marvel.config import CollectConfig
from marvel.data.buffer import ReplayBuffer
from marvel.data.dsrl_files import DatasetIdentity
from marvel.data.hdf5_io import episode_returns, save_cr_plot, write_dsrl_hdf5
from marvel.envs import TaskSpec, make_env, space_dims
from marvel.fsutil import atomic_write_json, sha256_file
from marvel.lagrange import DualAscent
from marvel.online import OnlineLearner
from marvel.rollout import Episode
from marvel.sac_lag import SACLag


def curriculum_cost_limit(cfg: CollectConfig, progress: float) -> float:
    """Linear cost-limit curriculum: start before ``curriculum_start``, end after ``_end``."""
    span = max(cfg.curriculum_end - cfg.curriculum_start, 1e-9)
    t = min(max((progress - cfg.curriculum_start) / span, 0.0), 1.0)
    return cfg.cost_limit_start + t * (cfg.cost_limit_end - cfg.cost_limit_start)


def _to_dsrl(episodes: list[Episode]) -> dict[str, np.ndarray]:
    cat = {k: np.concatenate([e.transitions[k] for e in episodes]) for k in episodes[0].transitions}
    return {
        "observations": cat["obs"],
        "next_observations": cat["next_obs"],
        "actions": cat["act"],
        "rewards": cat["reward"],
        "costs": cat["cost"],
        "terminals": cat["done"],
        "timeouts": cat["timeout"],
    }


def collect_dataset(
    task: TaskSpec,
    cfg: CollectConfig,
    num_episodes: int,
    seed: int,
    device: torch.device,
    path: Path,
) -> DatasetIdentity:
    """Train SAC-Lag under the curriculum for ``num_episodes`` episodes, record every episode,
    and write them to ``path`` (atomically) with a CR plot and a metadata sidecar beside it."""
    env = make_env(task)
    obs_dim, act_dim = space_dims(env)
    agent_cfg = cfg.agent
    agent = SACLag(obs_dim, act_dim, agent_cfg, cfg.networks, device)
    controller = DualAscent(cfg.cost_limit_start, lr=cfg.lambda_lr)
    capacity = min(agent_cfg.buffer_capacity, num_episodes * task.max_episode_steps)
    buffer = ReplayBuffer(
        obs_dim, act_dim, capacity, device, seed, bootstrap_through_time_limit=True
    )
    learner = OnlineLearner(agent, controller, env, buffer, seed)
    noise_rng = np.random.default_rng([seed, 1])

    episodes: list[Episode] = []
    with tqdm(total=num_episodes, desc=f"collect {task.name}", unit="ep") as bar:
        while len(episodes) < num_episodes:
            controller.cost_limit = curriculum_cost_limit(cfg, len(episodes) / num_episodes)
            count = min(agent_cfg.episodes_per_iteration, num_episodes - len(episodes))
            noise = float(noise_rng.uniform(0.0, cfg.action_noise_max))
            batch = learner.rollout(count, action_noise=noise)
            episodes += batch
            learner.improve(float(np.mean([e.cost for e in batch])))
            bar.update(count)
            bar.set_postfix(
                reward=f"{batch[-1].reward:.0f}",
                cost=f"{batch[-1].cost:.0f}",
                limit=f"{controller.cost_limit:.0f}",
            )
    env.close()

    # The HDF5 file takes its final name last: where it exists, its metadata and plot do too.
    data = _to_dsrl(episodes)
    staging = path.with_name(path.name + ".partial")
    write_dsrl_hdf5(staging, data)
    identity = DatasetIdentity(path=str(path), sha256=sha256_file(staging), source="collect")
    rewards, costs = episode_returns(data)
    save_cr_plot(
        costs,
        rewards,
        task.cost_limit,
        path.with_suffix(".crplot.png"),
        title=f"{task.name}: {len(rewards)} episodes, {len(data['rewards'])} transitions",
    )
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "identity": identity.to_dict(),
            "task": task.name,
            "episodes": len(rewards),
            "transitions": int(len(data["rewards"])),
            "seed": seed,
            "collect": asdict(cfg),
            "reward_return": {"min": float(rewards.min()), "max": float(rewards.max())},
            "cost_return": {"min": float(costs.min()), "max": float(costs.max())},
        },
    )
    os.replace(staging, path)
    return identity
