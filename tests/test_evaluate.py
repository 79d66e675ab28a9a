"""Evaluation: DSRL-normalized scores of the deterministic policy, the same for any number of
parallel envs (marvel/evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marvel.envs import make_env, space_dims, task_spec
from marvel.evaluate import EVAL_SEED_OFFSET, evaluate, make_eval_envs, vector_step_costs
from marvel.nets import SquashedGaussianActor
from marvel.rollout import episode_seed, run_episode

CPU = torch.device("cpu")
SEED, EPISODES = 3, 3


def random_actor(task_name: str) -> SquashedGaussianActor:
    obs_dim, act_dim = space_dims(make_env(task_name))
    torch.manual_seed(1)  # an actor that pays costs on DroneRun
    return SquashedGaussianActor(obs_dim, act_dim, [32, 32])


def sequential_returns(task_name: str, actor: SquashedGaussianActor) -> list[tuple[float, float]]:
    """The reference: one episode after the other through ``run_episode`` in a single env."""
    env = make_env(task_name)
    episodes = [
        run_episode(
            env, actor, CPU, seed=episode_seed(SEED + EVAL_SEED_OFFSET, i), deterministic=True
        )
        for i in range(EPISODES)
    ]
    env.close()
    return [(e.reward, e.cost) for e in episodes]


# DroneRun's random policy pays costs, so the cost path (final_info on the last step) is covered.
@pytest.mark.parametrize("task_name", ["BallCircle", "DroneRun"])
@pytest.mark.parametrize("num_envs", [1, 2])
def test_scores_equal_the_sequential_loop(task_name: str, num_envs: int) -> None:
    """Exactly the sequential episodes, in one env or in worker processes (with a surplus env
    in the last wave when num_envs does not divide the episode count)."""
    task, actor = task_spec(task_name), random_actor(task_name)
    reference = sequential_returns(task_name, actor)
    envs = make_eval_envs(task_name, num_envs)
    result = evaluate(actor, envs, task, EPISODES, SEED, CPU)
    envs.close()
    rewards, costs = zip(*reference, strict=True)
    assert result.reward == float(np.mean(rewards))
    assert result.cost == float(np.mean(costs))
    assert result.reward_std == float(np.std(rewards))
    assert result.episodes == EPISODES
    assert (result.normalized_reward, result.normalized_cost) == task.normalize(
        result.reward, result.cost
    )
    assert result.safe == (result.normalized_cost <= 1.0)
    # the mean cost's standard error: sample std / sqrt(episodes), in both units
    se = float(np.std(costs, ddof=1) / np.sqrt(EPISODES))
    assert result.cost_se == se
    assert result.normalized_cost_se == pytest.approx(se / task.cost_limit)
    assert result.at_limit == (abs(result.normalized_cost - 1) <= result.normalized_cost_se)
    if task_name == "DroneRun":
        assert result.cost > 0


def test_vector_step_costs_reads_final_info_and_masks() -> None:
    """Bullet omits a zero cost; an ended env's last info sits in final_info."""
    info = {
        "cost": np.array([0.0, 1.0, 0.0]),
        "_cost": np.array([False, True, False]),
        "final_info": np.array([None, None, {"cost": 1.0}], dtype=object),
    }
    ended = np.array([False, False, True])
    np.testing.assert_array_equal(vector_step_costs(info, ended), [0.0, 1.0, 1.0])


def test_eval_envs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="eval_envs must be >= 1"):
        make_eval_envs("BallCircle", 0)
