"""RunLogger with real W&B in offline mode: the local JSONL always, W&B runs that never merge."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import wandb

from marvel.logging import RunLogger, git_state, redact, run_metadata
from tests.helpers import compose_config, run_cli


@pytest.fixture(autouse=True)
def quiet_offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No API key anywhere, offline by default, W&B settings kept inside the test's tmp dir."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def offline_run_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_offline_run_writes_jsonl_and_wandb_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    logger = RunLogger(run_dir, {"seed": 0, "algo": {"lr": 3e-4}}, backend="wandb", mode="offline")
    logger.log({"online/return": np.float32(1.5), "online/cost": torch.tensor(2.0)}, step=1)
    logger.log({"online/return": 3.0}, step=2)
    assert wandb.run is not None and wandb.run.id == logger.run_id
    logger.finish()
    logger.finish()  # idempotent

    assert wandb.run is None
    assert read_rows(run_dir) == [
        {"online/return": 1.5, "online/cost": 2.0, "online/update": 1},
        {"online/return": 3.0, "online/update": 2},
    ]
    (wandb_dir,) = offline_run_dirs(run_dir)
    assert logger.wandb_dir == wandb_dir
    assert wandb_dir.name.endswith(logger.run_id)
    assert (wandb_dir / f"run-{logger.run_id}.wandb").is_file()
    assert not (tmp_path / "elsewhere").exists()  # dir= wins over WANDB_DIR


def test_each_stage_logs_against_its_own_step_metric(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Offline and VPA rows carry their own x-axis in the JSONL and in W&B's metric bindings."""
    bindings: dict[str, str | None] = {}
    real_init = wandb.init

    def spying_init(*args, **kwargs):
        run = real_init(*args, **kwargs)
        real_define = run.define_metric

        def define_metric(name, step_metric=None, **kw):
            bindings[name] = step_metric
            return real_define(name, step_metric=step_metric, **kw)

        monkeypatch.setattr(run, "define_metric", define_metric)
        return run

    monkeypatch.setattr(wandb, "init", spying_init)
    with RunLogger(tmp_path, {}) as logger:
        logger.log({"offline/loss/actor": 1.0}, 100, step_metric="offline/step")
        logger.log({"vpa/critic_loss": 2.0}, 5, step_metric="vpa/iteration")
        logger.log({"loss/actor": 3.0}, 1)
        logger.log({"loss/actor": 4.0, "eval/cost": 1.0}, 2)

    assert read_rows(tmp_path) == [
        {"offline/loss/actor": 1.0, "offline/step": 100},
        {"vpa/critic_loss": 2.0, "vpa/iteration": 5},
        {"loss/actor": 3.0, "online/update": 1},
        {"loss/actor": 4.0, "eval/cost": 1.0, "online/update": 2},
    ]
    assert bindings["offline/loss/actor"] == "offline/step"
    assert bindings["vpa/critic_loss"] == "vpa/iteration"
    assert bindings["loss/actor"] == bindings["eval/cost"] == "online/update"
    assert {"offline/step", "vpa/iteration", "online/update"} <= set(bindings)


def test_sequential_runs_never_merge(tmp_path: Path) -> None:
    ids = []
    for i in range(2):
        with RunLogger(tmp_path / f"job{i}", {"seed": i}) as logger:
            logger.log({"x": i}, step=i)
            ids.append(logger.run_id)
        assert wandb.run is None
    assert ids[0] != ids[1]
    assert [len(offline_run_dirs(tmp_path / f"job{i}")) for i in range(2)] == [1, 1]


def test_unknown_backend_or_mode_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown LoggerBackend 'tensorboard'; valid: wandb, none"):
        RunLogger(tmp_path / "run", {}, backend="tensorboard")
    with pytest.raises(ValueError, match="unknown WandbMode 'dryrun'; valid: offline, online"):
        RunLogger(tmp_path / "run", {}, mode="dryrun")
    assert not (tmp_path / "run").exists()


def test_context_manager_marks_failure_and_reattaches_by_id(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), RunLogger(tmp_path / "run", {}, run_id="fixedid1") as logger:
        logger.log({"x": 1.0}, step=1)
        raise RuntimeError("boom")
    assert wandb.run is None and logger.run_id == "fixedid1"
    with RunLogger(
        tmp_path / "run", {}, run_id="fixedid1", resume_at=("online/update", 1)
    ) as resumed:
        resumed.log({"x": 2.0}, step=2)
    assert resumed.run_id == "fixedid1"
    assert [row["x"] for row in read_rows(tmp_path / "run")] == [1.0, 2.0]


def test_a_fresh_start_replaces_old_rows(tmp_path: Path) -> None:
    """Without resume_at (resume=never, or no checkpoint to resume) the rows start afresh."""
    for value in (1.0, 2.0):
        with RunLogger(tmp_path, {}, backend="none") as logger:
            logger.log({"x": value}, step=1)
    assert read_rows(tmp_path) == [{"x": 2.0, "online/update": 1}]


def test_backend_none_writes_only_jsonl(tmp_path: Path) -> None:
    with RunLogger(tmp_path, {"seed": 0}, backend="none") as logger:
        logger.log({"x": 1.0}, step=7)
        logger.update_config({"dataset": "d"})
    assert read_rows(tmp_path) == [{"x": 1.0, "online/update": 7}]
    assert logger.wandb_dir is None and logger.run_id is None
    assert not (tmp_path / "wandb").exists()


def test_online_without_key_falls_back_to_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    with pytest.warns(UserWarning, match="online init failed"):
        logger = RunLogger(tmp_path, {}, mode="online")
    with logger:
        logger.log({"x": 1.0}, step=1)
    assert read_rows(tmp_path) == [{"x": 1.0, "online/update": 1}]
    assert len(offline_run_dirs(tmp_path)) == 1


def test_wandb_failures_never_stop_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken_init(**kwargs: object) -> None:
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(UserWarning, match="offline init failed"):
        logger = RunLogger(tmp_path / "a", {})
    with logger:
        logger.log({"x": 1.0}, step=1)
        logger.write_summary({"ok": True})
    assert logger.wandb_dir is None
    assert read_rows(tmp_path / "a") == [{"x": 1.0, "online/update": 1}]

    monkeypatch.undo()
    with RunLogger(tmp_path / "b", {}) as logger:
        run = logger._run
        monkeypatch.setattr(run, "log", broken_init)
        with pytest.warns(UserWarning, match="W&B log failed"):
            logger.log({"x": 1.0}, step=1)
        logger.log({"x": 2.0}, step=2)  # W&B dropped, the local file goes on
    run.finish()
    assert [row["x"] for row in read_rows(tmp_path / "b")] == [1.0, 2.0]


def test_redact_removes_secrets_at_any_depth() -> None:
    config = {
        "WANDB_API_KEY": "x",
        "seed": 1,
        "wandb": {"project": "p", "Token": "t", "nested": [{"db_password": "p", "ok": 2}]},
        "auth": {"client_secret": "s", "apiKey": "k"},
        "monkey": 3,  # a word that merely contains "key" stays
    }
    assert redact(config) == {
        "seed": 1,
        "wandb": {"project": "p", "nested": [{"ok": 2}]},
        "auth": {},
        "monkey": 3,
    }


def test_summary_and_config_are_redacted(tmp_path: Path) -> None:
    with RunLogger(tmp_path, {"seed": 0, "api_key": "secret"}) as logger:
        logger.update_config({"dataset": {"name": "d", "hf_token": "t"}})
        path = logger.write_summary(
            {"return": np.float64(10.0), "cost": 3, "curve": [1, 2], "password": "pw"}
        )
        run = wandb.run
        assert dict(run.config) == {"seed": 0, "dataset": {"name": "d"}}
        assert run.summary["return"] == 10.0 and "curve" not in run.summary.keys()
    assert path == tmp_path / "summary.json"
    assert json.loads(path.read_text()) == {"return": 10.0, "cost": 3, "curve": [1, 2]}


def test_run_metadata() -> None:
    meta = run_metadata()
    assert set(meta["packages"]) >= {"torch", "numpy", "wandb", "hydra-core", "omegaconf", "h5py"}
    assert meta["packages"]["wandb"] == wandb.__version__
    assert "git_commit" in meta and "git_dirty" in meta
    assert isinstance(meta["cuda_available"], bool)
    json.dumps(meta)


def test_git_state_dirty_only_for_tracked_changes(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "summary.json").write_text("{}")
    state = git_state(tmp_path)
    assert len(state["git_commit"]) == 40 and state["git_dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["git_dirty"] is True
    outside = tmp_path.parent / f"{tmp_path.name}-no-repo"
    outside.mkdir()
    assert git_state(outside) == {"git_commit": None, "git_dirty": None}


@pytest.mark.parametrize(
    ("environ", "overrides", "expected"),
    [
        ({}, (), ("offline", "marvel", None, None)),
        (
            {
                "WANDB_MODE": "disabled",
                "WANDB_PROJECT": "p",
                "WANDB_ENTITY": "e",
                "WANDB_DIR": "/w",
            },
            (),
            ("disabled", "p", "e", "/w"),
        ),
        (  # the command line wins over the environment
            {"WANDB_MODE": "disabled", "WANDB_PROJECT": "p"},
            ("logger.mode=online", "logger.project=q"),
            ("online", "q", None, None),
        ),
    ],
)
def test_wandb_environment_variables_set_the_defaults(
    monkeypatch: pytest.MonkeyPatch, environ: dict, overrides: tuple, expected: tuple
) -> None:
    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    logger = compose_config(*overrides).logger
    assert (logger.mode, logger.project, logger.entity, logger.dir) == expected


def test_wandb_dir_and_disabled_mode_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As a cluster job sets them: WANDB_DIR holds the W&B files; WANDB_MODE=disabled writes
    none (metrics.jsonl either way)."""
    smoke = ("experiment=from_scratch", "env=BallRun", "budget=smoke", "budget.online_iterations=1")
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("WANDB_DIR", str(elsewhere))
    run_cli(*smoke, f"hydra.run.dir={tmp_path / 'a'}")
    assert len(list((elsewhere / "wandb").glob("offline-run-*/*.wandb"))) == 1
    assert not (tmp_path / "a" / "wandb").exists()

    monkeypatch.delenv("WANDB_DIR")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_cli(*smoke, f"hydra.run.dir={tmp_path / 'b'}")
    assert not (tmp_path / "b" / "wandb").exists()
    assert (tmp_path / "b" / "metrics.jsonl").is_file()
