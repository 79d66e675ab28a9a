"""Longer end-to-end checks, outside the README's test command: ``pytest -m slow``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marvel.data.dsrl_files import load_dsrl_dataset
from marvel.data.hdf5_io import episode_returns
from tests.helpers import read_summary, run_cli

pytestmark = pytest.mark.slow


def test_main_command_runs_the_whole_pipeline(tmp_path: Path) -> None:
    """``python run.py`` (the README's main job): Marvel end to end at budget=default."""
    proc = run_cli("logger=none", f"hydra.run.dir={tmp_path}", timeout=900)
    summary = read_summary(tmp_path)
    assert summary["experiment"] == "marvel" and summary["dataset"]["source"] == "collect"
    assert summary["pretrained"]["algo"] == "cpq" and summary["vpa"]["iterations"] == 500
    assert summary["online"]["updates"] == 500 and summary["online"]["env_steps"] == 100_000
    final = summary["eval"]
    verdict = "AT THE LIMIT" if final["at_limit"] else "SAFE" if final["safe"] else "UNSAFE"
    result = [line for line in proc.stdout.splitlines() if line.startswith("[marvel] result:")]
    assert result == [f"[marvel] result: BallCircle marvel seed 0: {verdict} (cost limit 20)"]
    # pi_0 is a trained policy: it scores far above a random one (normalized reward ~0)
    assert summary["initial_eval"]["normalized_reward"] > 0.2


def test_from_scratch_learns(tmp_path: Path) -> None:
    """SAC-Lag from a random start improves within the default budget."""
    run_cli("experiment=from_scratch", "logger=none", f"hydra.run.dir={tmp_path}", timeout=600)
    summary = read_summary(tmp_path)
    assert summary["eval"]["normalized_reward"] > summary["initial_eval"]["normalized_reward"] + 0.2


def test_default_collection_spans_safe_and_unsafe_poor_and_good(tmp_path: Path) -> None:
    """DSRL-like coverage at budget=default: safe and unsafe episodes, low and high rewards."""
    run_cli(
        "stage=collect", "env=BallCircle", "logger=none", f"hydra.run.dir={tmp_path}", timeout=900
    )
    dataset = read_summary(tmp_path)["dataset"]
    data = load_dsrl_dataset(dataset["path"], "BallCircle")
    rewards, costs = episode_returns(data)
    assert len(rewards) == 300
    assert (costs <= 20).sum() >= 30 and (costs > 20).sum() >= 30
    assert rewards.max() > 0.7 * 881 and rewards.min() < 0.3 * 881
    meta = json.loads(Path(dataset["path"]).with_suffix(".json").read_text())
    assert meta["identity"]["sha256"] == dataset["sha256"]
