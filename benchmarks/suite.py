"""What the sections of the speed suite (``benchmarks/run.py``) share: the repository root, the
seed, the sizes of a full and a quick run, how a measurement is timed (rounds in which marvel and
its reference alternate; throughputs the best round, ratios the median of per-round ratios) and
random replay data."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
BUFFER_SIZE = 100_000  # transitions in the replay buffer the updates sample from


@dataclass(frozen=True)
class Sizes:
    """How much work each section does; --quick shrinks it."""

    episodes: int  # per timed rollout / evaluation round
    repeats: int  # timed rounds of each measurement (see ``compare``) but those below
    # Timed rounds of the update schedules and the GEMM shapes (as many, so that both best-ofs
    # draw alike). An update round is short (20 steps, ~0.2 s at B = 256): 8 of them span ~3 s,
    # which one episode of load from outside the VM can cover; 24 span ~10 s.
    update_repeats: int
    improves: int  # OnlineLearner.improve calls per timed update round (5 updates each)
    collect_episodes: int
    offline_steps: int  # per timed round of each offline algorithm
    main_command: bool


FULL = Sizes(
    episodes=10,
    repeats=8,
    update_repeats=24,
    improves=4,
    collect_episodes=60,
    offline_steps=20,
    main_command=True,
)
QUICK = Sizes(  # the suite's plumbing check: every section runs, its figures are not kept
    episodes=2,
    repeats=2,
    update_repeats=2,
    improves=1,
    collect_episodes=4,
    offline_steps=3,
    main_command=False,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rates(
    works: dict[str, Callable[[], float]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Units/s of each ``work`` (which returns the units it did) in each of ``repeats`` rounds;
    the works alternate within a round, so that load from elsewhere hits them alike."""
    rates: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            sync(device)
            start = time.perf_counter()
            units = work()
            sync(device)
            rates[name].append(units / (time.perf_counter() - start))
    return rates


def compare(
    marvel: Callable[[], float],
    reference: Callable[[], float],
    repeats: int,
    device: torch.device,
) -> tuple[float, float, float]:
    """(marvel's best units/s, the reference's best, the median of per-round ratios).

    Best-of for throughputs: load from elsewhere only ever slows a round down. The ratio pairs
    the two windows of each round, which share the machine's state, so load that comes and goes
    cancels out of it instead of favouring whichever side happened to catch a quiet moment.
    """
    rates = timed_rates({"marvel": marvel, "reference": reference}, repeats, device)
    ratios = [m / r for m, r in zip(rates["marvel"], rates["reference"], strict=True)]
    return max(rates["marvel"]), max(rates["reference"]), float(np.median(ratios))


def random_transitions(obs_dim: int, act_dim: int, size: int) -> dict[str, np.ndarray]:
    """Replay data for timing: values do not matter to dense matmuls, shapes do."""
    rng = np.random.default_rng(SEED)
    return {
        "obs": rng.standard_normal((size, obs_dim), dtype=np.float32),
        "act": rng.uniform(-1, 1, (size, act_dim)).astype(np.float32),
        "reward": rng.standard_normal(size, dtype=np.float32),
        "cost": rng.integers(0, 2, size).astype(np.float32),
        "next_obs": rng.standard_normal((size, obs_dim), dtype=np.float32),
        "done": np.zeros(size, dtype=np.float32),
        "timeout": np.zeros(size, dtype=np.float32),
    }
