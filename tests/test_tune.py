"""Tuning a task (``python run.py -m +sweep=tune``, marvel/tune/): the search space follows the
task and the preset; a search's trials are ordinary runs whose scores the study holds and its
outputs report; a killed search resumes without repeating a trial; a failing trial is recorded
and the search goes on; without Optuna, one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from marvel.tune.space import search_space
from tests.helpers import (
    ROOT,
    assert_clean_error,
    compose_config,
    compose_with_hydra,
    job_dirs,
    kill_when,
    read_metrics,
    read_summary,
    run_cli,
)

# from scratch: no dataset and no pretraining; BallRun's dual ascent reads env.finetune.lambda_lr
SEARCH = ("-m", "+sweep=tune", "env=BallRun", "experiment=from_scratch", "budget=smoke")
SEARCHED = [f"env.finetune.{k}" for k in ("actor_lr", "critic_reward_lr", "critic_cost_lr")]
SEARCHED += ["env.finetune.alpha", "env.finetune.lambda_lr"]


def search(sweep_dir: Path, *overrides: str) -> tuple[str, ...]:
    """A 3-trial search of from_scratch on BallRun in ``sweep_dir``."""
    return (
        *SEARCH,
        "logger=none",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    )


def trials(sweep_dir: Path) -> list[FrozenTrial]:
    storage = f"sqlite:///{sweep_dir / 'study.db'}"
    return optuna.load_study(study_name="BallRun_from_scratch", storage=storage).trials


def last_third_from_metrics(run_dir: Path) -> tuple[float, float]:
    """The run's mean normalized reward and cost over the evaluations after two thirds of its
    updates, read from metrics.jsonl."""
    updates = read_summary(run_dir)["online"]["updates"]
    rows = [
        row
        for row in read_metrics(run_dir)
        if "eval/normalized_reward" in row and 3 * row["online/update"] > 2 * updates
    ]
    assert rows
    return (
        float(np.mean([row["eval/normalized_reward"] for row in rows])),
        float(np.mean([row["eval/normalized_cost"] for row in rows])),
    )


def snapshot(run_dirs: list[Path]) -> dict[Path, tuple[int, int]]:
    """Every file under ``run_dirs`` with its modification time and size."""
    return {
        path: (path.stat().st_mtime_ns, path.stat().st_size)
        for run_dir in run_dirs
        for path in run_dir.rglob("*")
        if path.is_file() and path.name != ".owner"
    }


@pytest.mark.parametrize(
    ("env", "experiment", "left_out"),
    [
        ("CarRun", "marvel", ["env.finetune.lambda_lr"]),
        ("CarRun", "warm_start", ["pid.kp", "pid.ki", "pid.kd"]),
        ("BallRun", "from_scratch", ["pid.kp", "pid.ki", "pid.kd"]),
    ],
)
def test_the_space_follows_the_task_and_the_preset(
    env: str, experiment: str, left_out: list[str]
) -> None:
    """Each range is the sweep file's factors times the tuned config's value, and a
    controller's own settings are searched only for a preset with that controller."""
    overrides = ("+sweep=tune", f"env={env}", f"experiment={experiment}")
    settings = compose_with_hydra(*overrides).hydra.sweeper
    assert settings.study_name == f"{env}_{experiment}"
    assert settings.n_trials == 30 and list(settings.seeds) == [0, 1]
    config = compose_config(*overrides)
    dimensions, dropped = search_space(OmegaConf.to_container(settings.space), config)
    assert dropped == left_out
    assert len(dimensions) == 8 - len(left_out)
    for dimension in dimensions:
        value = OmegaConf.select(config, dimension.key)
        assert (dimension.low, dimension.high) == pytest.approx((0.2 * value, 5.0 * value))


def test_a_search(tmp_path: Path) -> None:
    """3 trials of 2 seeds: 6 ordinary runs holding the trials' values; the study's scores are
    the runs' last-third means; best.txt, best.yaml and trials.md report the study's best."""
    proc = run_cli(*search(tmp_path))
    study = trials(tmp_path)
    assert [t.state for t in study] == [TrialState.COMPLETE] * 3
    runs = job_dirs(tmp_path)
    assert [d.name for d in runs] == [f"{n}_BallRun_from_scratch_s{n % 2}" for n in range(6)]
    for trial in study:
        run_dirs = runs[2 * trial.number : 2 * trial.number + 2]
        assert trial.user_attrs["run_dirs"] == [d.name for d in run_dirs]
        assert trial.user_attrs["jobs"] == [2 * trial.number, 2 * trial.number + 1]
        assert list(trial.params) == SEARCHED
        for run_dir in run_dirs:
            assert read_summary(run_dir)["status"] == "ok"
            config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
            assert {key: OmegaConf.select(config, key) for key in SEARCHED} == trial.params
        scores = [last_third_from_metrics(d) for d in run_dirs]
        reward, cost = np.mean(scores, axis=0)
        assert trial.value == pytest.approx(reward, abs=1e-12)
        assert trial.user_attrs["cost"] == pytest.approx(cost, abs=1e-12)
        assert list(trial.constraints.values()) == pytest.approx([cost - 1.0], abs=1e-12)
        assert f"(#{trial.number}): reward {trial.value:.3f}" in proc.stderr
    assert "[marvel] trial 3 of 3 (#2)" in proc.stderr

    best = optuna.load_study(
        study_name="BallRun_from_scratch", storage=f"sqlite:///{tmp_path / 'study.db'}"
    ).best_trial
    best_txt = (tmp_path / "best.txt").read_text().splitlines()
    assert f"# Best feasible trial #{best.number} " in best_txt[0]
    assert "experiment=from_scratch on BallRun, budget=smoke, seeds 0 1" in best_txt[1]
    assert best_txt[-1] == " ".join(f"{key}={best.params[key]!r}" for key in SEARCHED)
    best_yaml = (tmp_path / "best.yaml").read_text()
    assert "# conf/env/BallRun.yaml" in best_yaml
    assert list(yaml.safe_load_all(best_yaml)) == [
        {"finetune": {key.removeprefix("env.finetune."): best.params[key] for key in SEARCHED}}
    ]
    table = (tmp_path / "trials.md").read_text()
    assert "| trial | state | " + " | ".join(SEARCHED) in table
    for trial in study:
        assert f"| #{trial.number} | COMPLETE | " in table
        assert ", ".join(trial.user_attrs["run_dirs"]) in table
    assert "Left out of the space: pid.kp, pid.ki, pid.kd" in table
    assert (tmp_path / "history.png").stat().st_size > 0
    assert (tmp_path / "importances.png").stat().st_size > 0


def test_a_killed_search_resumes(tmp_path: Path) -> None:
    """Killed once its first trial is told, the same command finishes the other two trials
    without running the first again: its runs stay as they were, and no trial repeats its
    values (a trial the kill interrupted is retried in its own run dirs)."""
    command = search(tmp_path, "hydra.sweeper.seeds=[0]")
    kill_when(command, tmp_path, lambda out: "trial 1 of 3" in out, tmp_path.parent / "kill.out")
    first = trials(tmp_path)[0]
    assert first.state == TrialState.COMPLETE
    first_runs = [tmp_path / name for name in first.user_attrs["run_dirs"]]
    before = snapshot(first_runs)

    proc = run_cli(*command, f"hydra.run.dir={tmp_path}")
    study = trials(tmp_path)
    complete = [t for t in study if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and complete[0].number == 0
    assert complete[0].params == first.params and complete[0].value == first.value
    assert snapshot(first_runs) == before
    assert len(job_dirs(tmp_path)) == 3  # one run per trial; a retried trial reuses its dir
    assert len({tuple(t.params.values()) for t in complete}) == 3
    for retry in (t for t in study if "resumes" in t.user_attrs):
        interrupted = study[retry.user_attrs["resumes"]]
        assert interrupted.state == TrialState.FAIL and "failure" not in interrupted.user_attrs
        assert (retry.params, retry.user_attrs["jobs"]) == (
            interrupted.params,
            interrupted.user_attrs["jobs"],
        )
    assert "(#0):" not in proc.stderr and "trial 3 of 3" in proc.stderr


def test_a_failing_trial_is_recorded(tmp_path: Path) -> None:
    """A trial whose sampled target-network rate exceeds 1 fails (its run is refused); it is
    recorded FAIL with its run's reason and the search completes the other trials. Sampler
    seed 3 draws tau = 1.55, 0.71, 0.79."""
    proc = run_cli(
        *search(
            tmp_path,
            "hydra.sweeper.seeds=[0]",
            "hydra.sweeper.sampler_seed=3",
            "+hydra.sweeper.space.finetune.tau={low: 100, high: 400}",  # 0.5 to 2
        ),
        check=False,
    )
    assert proc.returncode == 1  # the sweep names its failed jobs (marvel.launch.LaunchChecks)
    study = trials(tmp_path)
    assert len(study) == 3
    failed = [t for t in study if t.state == TrialState.FAIL]
    assert failed and len(failed) < 3
    for trial in study:
        over = trial.params["finetune.tau"] > 1
        assert trial.state == (TrialState.FAIL if over else TrialState.COMPLETE)
    table = (tmp_path / "trials.md").read_text()
    for trial in failed:
        reason = trial.user_attrs["failure"]
        assert "finetune.tau: must be in (0, 1]" in reason
        assert f"(#{trial.number}): failed (" in proc.stderr
        assert f"| #{trial.number} | FAIL: {reason}" in table
    assert "Traceback" not in proc.stderr


def test_without_optuna_one_line(tmp_path: Path) -> None:
    """The search without the tune extra: one line naming it, exit 2, no sweep dir."""
    sweep_dir = tmp_path / "sweep"
    argv = ["run.py", *search(sweep_dir)]
    code = (
        "import runpy, sys\n"
        "sys.modules['optuna'] = None  # as if the extra were not installed\n"
        f"sys.argv = {argv!r}\n"
        "runpy.run_path('run.py', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert_clean_error(proc, 'the search needs Optuna: pip install -e ".[tune]"')
    assert proc.stderr.strip().splitlines() == [
        'marvel: error: the search needs Optuna: pip install -e ".[tune]"'
    ]
    assert not sweep_dir.exists()
