"""Issue 6: a run killed mid-finetuning and rerun with the same command resumes from its last
checkpoint and ends with exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from marvel.logging import keep_rows_until
from tests.conftest import ROOT, read_metrics, read_summary, run_cli

# The whole Marvel pipeline at smoke budget, long enough to be killed between checkpoints.
RUN = (
    "env=BallCircle",
    "budget=smoke",
    "budget.online_iterations=16",
    "budget.checkpoint_every=2",
    "budget.eval_every=4",
)


def run_rows(run_dir: Path) -> list[dict]:
    """Metrics rows without timings and without pretraining rows (only the first run of a
    config pretrains; later ones take pi_0 from the cache)."""
    return [
        {k: v for k, v in row.items() if not k.startswith("perf/")}
        for row in read_metrics(run_dir)
        if "offline/step" not in row
    ]


def killed_mid_finetuning(run_dir: Path) -> None:
    """Start the run and SIGKILL it once a checkpoint exists and the metrics have gone past it."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *RUN, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    metrics, checkpoint = run_dir / "metrics.jsonl", run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        rows = metrics.read_text().count("\n") if metrics.is_file() else 0
        if checkpoint.is_file() and rows >= 4:  # initial eval + 3 iterations: past iteration 2
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -9, "the run ended before it could be killed"
    assert not (run_dir / "summary.json").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_cli(*RUN, f"hydra.run.dir={run_dir}")
    return run_dir


def test_killed_run_resumes_to_the_same_numbers(uninterrupted: Path, tmp_path: Path) -> None:
    killed_mid_finetuning(tmp_path)
    run_cli(*RUN, f"hydra.run.dir={tmp_path}")  # the same command again
    resumed, reference = read_summary(tmp_path), read_summary(uninterrupted)
    assert 2 <= resumed["resumed_from_iteration"] < 16
    assert reference["resumed_from_iteration"] is None
    for key in ("eval", "initial_eval", "online", "lagrange", "vpa", "dataset"):
        assert resumed[key] == reference[key], key
    # no duplicated or missing rows: the rows logged after the checkpoint were dropped
    assert run_rows(tmp_path) == run_rows(uninterrupted)
    # the resumed run logs into the same W&B run: two offline run dirs, one run id
    wandb_runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2
    assert len({path.name.rsplit("-", 1)[1] for path in wandb_runs}) == 1


def test_resume_never_starts_over(uninterrupted: Path, tmp_path: Path) -> None:
    killed_mid_finetuning(tmp_path)
    run_cli(*RUN, f"hydra.run.dir={tmp_path}", "resume=never")
    summary = read_summary(tmp_path)
    assert summary["resumed_from_iteration"] is None
    assert summary["eval"] == read_summary(uninterrupted)["eval"]
    assert run_rows(tmp_path) == run_rows(uninterrupted)


def test_another_config_does_not_resume(uninterrupted: Path) -> None:
    """A run dir's checkpoint is resumed only by the config that wrote it, and marvel's files
    there are left as they were (Hydra itself rewrites .hydra/ before marvel starts)."""

    def files() -> dict[Path, bytes]:
        return {
            p: p.read_bytes()
            for p in uninterrupted.rglob("*")
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
        }

    before = files()
    proc = run_cli(*RUN, "seed=1", f"hydra.run.dir={uninterrupted}", check=False)
    assert proc.returncode == 2
    assert "holds a run of another config" in proc.stderr and "resume=never" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert files() == before


def test_keep_rows_until_drops_later_rows_and_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"offline/step": 100, "loss": 1.0}, {"online/update": 0}, {"online/update": 5}]
    later = {"online/update": 10}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, later]) + '{"online/upd')
    keep_rows_until(path, "online/update", 5)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
