"""What a job needs to know about how Hydra launched it: its sweep, and its share of the CPUs.

The only module besides ``run.py`` that reads Hydra's runtime config; the pipeline gets plain
values from it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def torch_threads_for_job(launcher: Any, cpus: int | None = None) -> int:
    """torch threads for one job under ``launcher`` (Hydra's ``hydra.launcher`` node), or 0 to
    keep torch's default.

    Parallel jobs must not each take every core (on 2 cores two 2-thread jobs run several times
    slower than two 1-thread jobs): joblib gets ``cpus // n_jobs`` (at least 1); submitit jobs
    get the CPUs they asked for (``cpus_per_task``), which torch would not read from a Slurm
    allocation by itself. The basic launcher runs one job at a time: torch's default.
    """
    cpus = cpus or available_cpus()
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or -1)
        parallel = cpus if n_jobs < 1 else min(n_jobs, cpus)
        return max(1, cpus // parallel)
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    return 0


@dataclass(frozen=True)
class SweepInfo:
    """The multirun a job belongs to: its sweep file's name (``+sweep=``) and directory."""

    name: str | None
    dir: Path

    @property
    def group(self) -> str:
        """The W&B group of the sweep's runs: unique per launch, readable in the UI
        (``ablation:2026-11-24/15-42-07-123456``)."""
        return f"{self.name or 'multirun'}:{'/'.join(self.dir.parts[-2:])}"


def check_writable_dir(path: str | os.PathLike, override: str) -> None:
    """Create ``path`` and a file in it, or exit with one line naming the problem and
    ``override``, the setting that fixes it (before Hydra's own attempt ends in a traceback)."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        print(
            f"marvel: error: cannot write to the output dir {path} ({reason}); "
            f"pass {override}=<a writable dir>",
            file=sys.stderr,
        )
        sys.exit(2)


class OutputDirCheck(Callback):
    """Hydra callback (conf/config.yaml): the run or sweep dir must be writable."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable_dir(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable_dir(config.hydra.sweep.dir, "hydra.sweep.dir")
