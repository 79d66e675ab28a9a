"""The replay buffer's done flag (METHOD.md section 4, "Done flags"): terminals and time limits
end the bootstrap by default, terminals alone with ``bootstrap_through_time_limit``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marvel.data.buffer import ReplayBuffer
from marvel.envs import make_env, space_dims
from marvel.nets import SquashedGaussianActor
from marvel.rollout import run_episode

CPU = torch.device("cpu")
TERMINAL = np.array([0, 1, 0, 0], dtype=np.float32)
TIMEOUT = np.array([0, 0, 0, 1], dtype=np.float32)


def block() -> dict[str, np.ndarray]:
    n = len(TERMINAL)
    return {
        "obs": np.zeros((n, 3)),
        "act": np.zeros((n, 2)),
        "reward": np.arange(n, dtype=np.float32),
        "cost": np.zeros(n),
        "next_obs": np.zeros((n, 3)),
        "done": TERMINAL,
        "timeout": TIMEOUT,
    }


@pytest.mark.parametrize(("through", "expected"), [(False, [0, 1, 0, 1]), (True, [0, 1, 0, 0])])
def test_done_at_terminals_and_time_limits(through: bool, expected: list[int]) -> None:
    buffer = ReplayBuffer(3, 2, 10, CPU, bootstrap_through_time_limit=through)
    buffer.add(block())
    assert buffer.storage["done"][:4].tolist() == expected
    data = {
        "observations": np.zeros((4, 3)),
        "next_observations": np.zeros((4, 3)),
        "actions": np.zeros((4, 2)),
        "rewards": np.zeros(4),
        "costs": np.zeros(4),
        "terminals": TERMINAL,
        "timeouts": TIMEOUT,
    }
    offline = ReplayBuffer.from_dataset(data, CPU, bootstrap_through_time_limit=through)
    assert offline.storage["done"].tolist() == expected


def test_an_online_episode_ends_its_bootstrap_at_the_time_limit() -> None:
    """A BallRun episode runs to DSRL's time limit: its last transition is a timeout, which the
    default buffer stores as done (and no other step)."""
    env = make_env("BallRun")
    obs_dim, act_dim = space_dims(env)
    torch.manual_seed(0)
    episode = run_episode(env, SquashedGaussianActor(obs_dim, act_dim, [8]), CPU, seed=0)
    t = episode.transitions
    assert t["done"].sum() == 0 and t["timeout"][-1] == 1 and t["timeout"].sum() == 1
    for through, last in ((False, 1.0), (True, 0.0)):
        buffer = ReplayBuffer(obs_dim, act_dim, 1000, CPU, bootstrap_through_time_limit=through)
        buffer.add(t)
        done = buffer.storage["done"][: episode.length]
        assert done[-1].item() == last and done[:-1].sum().item() == 0
