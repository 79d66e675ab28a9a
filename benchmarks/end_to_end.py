"""End-to-end cost: seconds per 100k collected transitions of the pipeline's default collection,
and the wall time and peak memory of ``python run.py`` (and, with ``--paper``, of
``budget=paper``) as a child process with an empty cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from marvel.config import CollectConfig
from marvel.envs import TaskSpec
from marvel.stages.collect import collect_dataset
from suite import ROOT, SEED, Sizes


def bench_collect(task: TaskSpec, device: torch.device, sizes: Sizes) -> dict[str, float]:
    """Seconds per 100k transitions of ``collect_dataset`` with the pipeline's default recipe."""
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: first HDF5 write and CR plot (matplotlib's font cache), first updates
        collect_dataset(task, CollectConfig(), 2, SEED, device, Path(tmp) / "warmup.hdf5")
        start = time.perf_counter()
        collect_dataset(
            task, CollectConfig(), sizes.collect_episodes, SEED, device, Path(tmp) / "b.hdf5"
        )
        elapsed = time.perf_counter() - start
        transitions = json.loads((Path(tmp) / "b.json").read_text())["transitions"]
    return {
        "s_per_100k_transitions": elapsed / transitions * 1e5,
        "episodes": sizes.collect_episodes,
        "transitions": transitions,
    }


def bench_command(overrides: list[str]) -> dict[str, Any]:
    """``python run.py logger=none <overrides>`` as a child process with an empty cache: its
    wall time, its own peak RSS (``wait4``) and the stage times of its ``summary.json``."""
    with tempfile.TemporaryDirectory() as tmp, open(f"{tmp}/log", "w+") as log:
        command = [sys.executable, "run.py", "logger=none", f"hydra.run.dir={tmp}/run", *overrides]
        start = time.perf_counter()
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "MARVEL_CACHE": f"{tmp}/cache"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{log.read()[-3000:]}")
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    # ru_maxrss: KiB on Linux
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "stages_s": summary["timings"]}


def bench_main_command(sizes: Sizes) -> dict[str, Any]:
    """The README's main command, ``python run.py`` (W&B off), in this process's numerics."""
    if not sizes.main_command:
        return {"wall_s": None, "peak_rss_mb": None}
    return bench_command([])
