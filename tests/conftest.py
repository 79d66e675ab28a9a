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


def assert_transfers_to_sac_lag(pretrained, obs, act) -> None:
    """A ``Pretrained`` survives a weights_only checkpoint round trip and becomes a SAC-Lag
    start through ``SACLag.load_pretrained`` (strict loads, the finetuning actor lr reset)."""
    import io

    import torch

    from marvel.offline.base import Pretrained
    from marvel.sac_lag import SACLag, SACLagConfig

    obs_dim, act_dim = obs.shape[1], act.shape[1]
    stream = io.BytesIO()  # through a checkpoint file's bytes, as the pipeline stores it
    torch.save(pretrained.state_dict(), stream)
    stream.seek(0)
    state = torch.load(stream, weights_only=True)
    restored = Pretrained.from_state_dict(state, obs_dim, act_dim, torch.device("cpu"))
    assert restored.algo == pretrained.algo and restored.config == pretrained.config
    assert restored.metrics == pretrained.metrics
    assert restored.lagrange_multiplier == pretrained.lagrange_multiplier

    sizes = pretrained.sizes
    cfg = SACLagConfig(
        hidden_sizes=sizes.hidden_sizes,
        cost_hidden_sizes=sizes.cost_hidden_sizes,
        num_reward_critics=sizes.num_reward_critics,
        actor_lr=1.234e-5,
    )
    agent = SACLag(obs_dim, act_dim, cfg, torch.device("cpu"))
    agent.load_pretrained(restored)
    assert all(g["lr"] == 1.234e-5 for g in agent.actor_optimizer.param_groups)
    with torch.no_grad():
        assert torch.equal(agent.actor.act(obs, True), pretrained.actor.act(obs, True))
        for name in ("reward_critic", "cost_critic"):
            ours, theirs = getattr(agent, name), getattr(pretrained, name)
            assert torch.equal(ours(obs, act), theirs(obs, act))
            assert torch.equal(getattr(agent, f"{name}_target")(obs, act), theirs(obs, act))
