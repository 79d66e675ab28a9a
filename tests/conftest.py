"""Shared fixtures: an isolated cache, DSRL dir and W&B dir per test session; the CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolated_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never touch the user's ~/.cache/marvel, ~/.dsrl or W&B settings."""
    base = tmp_path_factory.mktemp("marvel-env")
    os.environ["MARVEL_CACHE"] = str(base / "cache")
    os.environ["DSRL_DATASET_DIR"] = str(base / "dsrl")
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["WANDB_DIR"] = str(base / "wandb")
    os.environ.pop("WANDB_API_KEY", None)


def run_cli(
    *overrides: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python run.py <overrides>`` in a subprocess, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
