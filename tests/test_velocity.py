"""The velocity tasks: Safety-Gymnasium's constraint on gymnasium's MuJoCo envs, the
missing-extra message, collection and loading in DSRL's schema, and runs at smoke budget. The env
checks common to every task (spaces, reset/step, DSRL lengths, history-free resets) are
tests/test_envs.py's, parametrized over all tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from marvel import envs
from marvel.data.dsrl_files import dsrl_file_name, load_dsrl_dataset, validate_dataset
from marvel.envs import VELOCITY_TASKS, make_env
from marvel.errors import DatasetError, MissingExtraError
from marvel.velocity import VELOCITY_CONSTRAINTS
from tests.helpers import ROOT, read_metrics, read_summary, run_cli

SMOKE = ("budget=smoke",)


def step_velocity(env: gym.Env, name: str, action: np.ndarray) -> tuple[float, dict]:
    """Step ``env``; return the velocity the constraint is about, measured on the simulator (the
    root's x displacement, for Ant the torso's planar displacement, over dt), and the info."""
    world = env.unwrapped

    def position() -> np.ndarray:
        return (
            world.get_body_com("torso")[:2].copy()
            if name == "AntVelocity"
            else world.data.qpos[:1].copy()
        )

    before = position()
    *_, info = env.step(action)
    displacement = position() - before
    if name == "AntVelocity":
        return float(np.linalg.norm(displacement)) / world.dt, info
    return float(displacement[0]) / world.dt, info


@pytest.mark.parametrize("name", VELOCITY_TASKS)
def test_cost_rises_exactly_when_the_velocity_passes_the_threshold(name: str) -> None:
    """From rest the agent is slow (cost 0); launched forward at 10x the threshold it is fast
    (cost 1); on random steps in between, cost == (velocity > threshold) at every step."""
    env = make_env(name, seed=0)
    world, threshold = env.unwrapped, VELOCITY_CONSTRAINTS[name].threshold
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    velocity, info = step_velocity(env, name, zero)
    assert velocity < threshold and info["cost"] == 0.0

    qvel = world.data.qvel.copy()
    qvel[0] = 10 * threshold  # the root's forward (x) velocity
    world.set_state(world.data.qpos.copy(), qvel)
    velocity, info = step_velocity(env, name, zero)
    assert velocity > threshold and info["cost"] == 1.0

    env.action_space.seed(0)
    for _ in range(100):
        velocity, info = step_velocity(env, name, env.action_space.sample())
        assert velocity == pytest.approx(VELOCITY_CONSTRAINTS[name].velocity(info), abs=1e-9)
        assert info["cost"] == float(velocity > threshold)
    env.close()


def test_missing_mujoco_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envs, "MUJOCO_MODULES", ("mujoco", "a_module_that_is_not_installed"))
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[mujoco\]"'):
        envs.task_spec("HopperVelocity")
    envs.task_spec("BallRun")  # the Bullet tasks do not need it


def test_missing_extra_is_one_line_from_the_command_line(tmp_path: Path) -> None:
    """run.py as a user runs it, in a Python where the extra's imageio is missing."""
    hide_imageio = (
        "import sys, runpy, marvel.envs; marvel.envs.MUJOCO_MODULES = ('mujoco', 'no_imageio'); "
        f"sys.argv = ['run.py', 'env=HopperVelocity', 'budget=smoke', 'hydra.run.dir={tmp_path}']; "
        "runpy.run_path('run.py', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", hide_imageio], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert 'no_imageio is not installed; install the MuJoCo extra: pip install -e ".[mujoco]"' in (
        proc.stderr
    )


def test_dsrl_file_names() -> None:
    assert dsrl_file_name("SwimmerVelocity") == "SafetySwimmerVelocityGymnasium-v1-200-1686.hdf5"


@pytest.fixture(scope="module")
def hopper_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("collect-hopper")
    run_cli("stage=collect", "env=HopperVelocity", *SMOKE, f"hydra.run.dir={run_dir}")
    return Path(read_summary(run_dir)["dataset"]["path"])


def test_collected_velocity_dataset_passes_the_checks_and_loads(hopper_dataset: Path) -> None:
    validate_dataset(hopper_dataset, "HopperVelocity")
    data = load_dsrl_dataset(hopper_dataset, "HopperVelocity")  # through dsrl's get_dataset
    n = len(data["rewards"])
    assert data["observations"].shape == (n, 11) and data["actions"].shape == (n, 3)
    assert set(np.unique(data["costs"])) <= {0.0, 1.0}
    episodes = data["terminals"].sum() + data["timeouts"].sum()
    assert episodes == 4  # budget=smoke collects 4 episodes (Hopper's end when it falls)


def test_another_tasks_file_is_refused(hopper_dataset: Path) -> None:
    with pytest.raises(DatasetError, match="another task"):
        validate_dataset(hopper_dataset, "SwimmerVelocity")


def test_from_scratch_contract_on_swimmer(tmp_path: Path) -> None:
    run_cli("experiment=from_scratch", "env=SwimmerVelocity", *SMOKE, f"hydra.run.dir={tmp_path}")
    summary = read_summary(tmp_path)
    assert summary["task"]["name"] == "SwimmerVelocity"
    for key in ("reward", "cost", "normalized_reward", "normalized_cost"):
        assert isinstance(summary["eval"][key], float)
    assert summary["online"]["iterations"] == 2 and read_metrics(tmp_path)


def test_marvel_pipeline_on_hopper(hopper_dataset: Path, tmp_path: Path) -> None:
    """Offline CPQ on the collected file, VPA and aPID finetuning, as on a Bullet task."""
    run_cli("env=HopperVelocity", "data=collect", *SMOKE, f"hydra.run.dir={tmp_path}")
    summary = read_summary(tmp_path)
    assert summary["experiment"] == "marvel" and summary["pretrained"]["algo"] == "cpq"
    assert summary["dataset"]["sha256"] and Path(summary["dataset"]["path"]) == hopper_dataset
    assert "spearman_reward_dataset" in summary["vpa"]["diagnostic"]["after"]
    rows = [r for r in read_metrics(tmp_path) if "train/episode_cost" in r]
    assert rows and all("lagrange/kp" in r for r in rows)
