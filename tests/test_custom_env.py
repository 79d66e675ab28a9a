"""Your own env (``env=custom``): a gymnasium id or ``module:Class`` with its cost in
``info["cost"]``, checked at start, normalized against optional reference returns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from marvel.envs import check_custom_env, custom_task, make_env
from marvel.errors import ConfigError, MarvelError
from marvel.pipeline import preflight
from tests.helpers import assert_clean_error, compose_config, read_summary, run_cli
from tests.test_cli import SMOKE

POINT = ("env=custom", "env.name=HazardPoint", "env.gym_id=tests.hazard_point:HazardPoint")


def test_the_documented_example_runs_marvel_on_ball_gather(tmp_path: Path) -> None:
    """Collection, pretraining, VPA and finetuning on Bullet Safety Gym's Gather, which DSRL
    does not cover; no reference returns, so the rewards are raw and the verdict says so."""
    proc = run_cli(
        "env=custom",
        "env.name=BallGather",
        "env.gym_id=SafetyBallGather-v0",
        "env.max_episode_steps=100",  # docs/USAGE.md's 250, shortened for the test's budget
        "env.cost_limit=10",
        *SMOKE,
        f"hydra.run.dir={tmp_path}",
    )
    summary = read_summary(tmp_path)
    assert summary["task"]["custom"] and summary["task"]["reward_min"] is None
    assert summary["dataset"]["source"] == "collect" and summary["pretrained"]["algo"] == "cpq"
    assert summary["eval"]["normalized_reward"] == summary["eval"]["reward"]  # raw
    assert "rewards raw: no reference returns" in proc.stderr + proc.stdout
    assert "VPA: no diagnostic for BallGather" in proc.stderr + proc.stdout


def test_an_entry_point_with_reference_returns_normalizes(tmp_path: Path) -> None:
    run_cli(
        *POINT,
        "env.max_episode_steps=20",
        "env.reward_min=-1",
        "env.reward_max=1",
        "experiment=from_scratch",
        *SMOKE,
        f"hydra.run.dir={tmp_path}",
    )
    result = read_summary(tmp_path)["eval"]
    assert result["normalized_reward"] == pytest.approx((result["reward"] + 1) / 2)
    evaluated = tmp_path / "evaluated"
    run_cli("stage=evaluate", f"checkpoint={tmp_path}", *SMOKE, f"hydra.run.dir={evaluated}")
    assert read_summary(evaluated)["eval"] == result  # the same task, rebuilt from the checkpoint


@pytest.mark.parametrize(
    ("gym_id", "fragment"),
    [
        ("SafetyBallReach-v0", "fails gymnasium's env checker: Using `env.reset(seed=123)`"),
        ("Pendulum-v1", "acts in [-1, 1]"),
        ("Foo-v0", "not a registered gymnasium id"),
        ("no_such_module:Env", "cannot import no_such_module"),
        ("tests.hazard_point:Nothing", "has no Nothing"),
    ],
)
def test_an_env_that_does_not_fit_is_refused_in_one_line(gym_id: str, fragment: str) -> None:
    """Bullet's Reach resets depend on the previous episode (its goal alternates), so the
    checker's determinism test refuses it."""
    with pytest.raises(MarvelError, match="env.gym_id=") as refused:
        check_custom_env(custom_task("mine", gym_id, 50, 10.0))
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


def test_env_custom_without_an_id_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("env=custom", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert_clean_error(proc, "env=custom needs env.gym_id=")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (("env=custom", "env.gym_id=Pendulum-v1"), "env.max_episode_steps must be >= 1"),
        ((*POINT, "env.max_episode_steps=9", "env.reward_min=1"), "give both"),
        ((*POINT, "env.max_episode_steps=9", "data=dsrl"), "DSRL has no dataset for your env"),
        (("env=custom", "env.name=BallRun", "env.gym_id=x:y"), "one of the paper's tasks"),
    ],
)
def test_a_custom_env_config_error_names_the_setting(overrides, fragment: str) -> None:
    with pytest.raises((MarvelError, ConfigError), match=re.escape(fragment)):
        preflight(compose_config(*overrides), Path("unused"))


def test_a_custom_env_is_made_with_its_episode_length() -> None:
    task = custom_task("mine", "tests.hazard_point:HazardPoint", 7, 1.0)
    env = make_env(task, seed=0)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample() * 0)
        steps, done = steps + 1, terminated or truncated
    assert steps == 7 and truncated and info["cost"] == 0.0
    assert task.normalize(3.0, 1.0) == (3.0, 1.0)  # the raw reward; C / d
