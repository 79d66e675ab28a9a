"""Shared fixtures: an isolated cache, DSRL dir and W&B dir per test session; the smoke ablation
sweep; the offline algorithms' BallCircle data and replay buffer. Helpers: tests/helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import marvel  # noqa: F401  (before numpy and torch: it sets their CPU numerics, marvel/numerics.py)
from tests.helpers import run_cli, single_thread

if TYPE_CHECKING:
    import numpy as np

    from marvel.data.buffer import ReplayBuffer


# One torch thread in the tests and every run they start (before torch is imported): at these
# sizes a second thread gains little, and threads that outnumber free cores slow runs severalfold.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No test reaches huggingface.co (read at huggingface_hub's import): the DSRL download falls
# through at once; the Hugging Face path is tested against a loopback hub (test_data_files.py).
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def isolated_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never touch the user's ~/.cache/marvel, ~/.dsrl or W&B settings."""
    base = tmp_path_factory.mktemp("marvel-env")
    os.environ["MARVEL_CACHE"] = str(base / "cache")
    os.environ["DSRL_DATASET_DIR"] = str(base / "dsrl")
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    for name in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR"):
        os.environ.pop(name, None)  # a run's W&B files go to its run dir


@pytest.fixture(scope="session")
def ablation_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke ablation sweep (6 presets x 2 seeds, basic
    launcher); its run dirs also feed the analysis and dashboard tests."""
    sweep_dir, cache = tmp_path_factory.mktemp("ablation"), tmp_path_factory.mktemp("cache")
    run_cli(
        "-m",
        "+sweep=ablation",
        "env=BallCircle",
        "budget=smoke",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.cache_dir={cache}",  # its own: other tests then see a cold cache
    )
    return sweep_dir


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny networks: one intra-op thread is fastest, and immune to a busy second core.
    A test module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def ballcircle_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """4 BallCircle episodes collected by marvel (seed 0), loaded through dsrl; collected once
    per session for every offline test, on one thread (the data then do not depend on the
    machine's core count)."""
    import torch

    from marvel.config import CollectConfig
    from marvel.data.dsrl_files import load_dsrl_dataset
    from marvel.envs import task_spec
    from marvel.stages.collect import collect_dataset

    path = tmp_path_factory.mktemp("ballcircle") / "d.hdf5"
    with single_thread():
        collect_dataset(
            task_spec("BallCircle"),
            CollectConfig(),
            num_episodes=4,
            seed=0,
            device=torch.device("cpu"),
            path=path,
        )
    return load_dsrl_dataset(path, "BallCircle")


@pytest.fixture(scope="module")
def buffer(ballcircle_data: dict[str, np.ndarray]) -> ReplayBuffer:
    """The BallCircle data in a replay buffer, a fresh one (sampling seed 0) per test module."""
    import torch

    from marvel.data.buffer import ReplayBuffer

    return ReplayBuffer.from_dataset(ballcircle_data, torch.device("cpu"), seed=0)
