"""marvel's normalized scores equal dsrl's own ``get_normalized_score`` (METHOD.md section 7)."""

from __future__ import annotations

import dsrl.offline_bullet_safety_gym  # noqa: F401  (registers Offline*-v0)
import gymnasium as gym
import pytest
from dsrl import infos
from dsrl.offline_env import OfflineEnv

from marvel.envs import BULLET_TASKS, TASKS, real_std_streams, task_spec


def dsrl_offline_env(name: str) -> OfflineEnv:
    """dsrl's scorer for ``name``: its registered Offline*-v0 env for a Bullet task; for a
    velocity task (registered by a dsrl module that needs safety-gymnasium) an ``OfflineEnv``
    given the same ``dsrl.infos`` references as that module's registration."""
    if name in BULLET_TASKS:
        with real_std_streams():
            return gym.make(f"Offline{name}-v0").unwrapped
    return OfflineEnv(
        max_episode_reward=infos.MAX_EPISODE_REWARD[name],
        min_episode_reward=infos.MIN_EPISODE_REWARD[name],
    )


@pytest.mark.parametrize("name", TASKS)
def test_matches_dsrl(name: str) -> None:
    offline_env = dsrl_offline_env(name)
    for cost_limit in (0.0, 10.0, 20.0):
        offline_env.set_target_cost(cost_limit)
        spec = task_spec(name, cost_limit)
        for reward, cost in [(0.0, 0.0), (123.4, 7.0), (900.0, 35.5)]:
            expected = offline_env.get_normalized_score(reward, cost)
            assert spec.normalize(reward, cost) == pytest.approx(expected, rel=1e-12)
    offline_env.close()


def test_safe_iff_normalized_cost_at_most_one() -> None:
    spec = task_spec("BallCircle", 20.0)
    assert spec.normalize(0.0, 20.0)[1] == 1.0
    assert spec.normalize(0.0, 21.0)[1] > 1.0
