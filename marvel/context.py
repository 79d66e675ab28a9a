"""What every stage of a run shares: its config, dir, device, task, logger and resume point; the
device and seed rules; the run's messages; and the logger built from the config."""

from __future__ import annotations

import logging
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from marvel.checkpoint_records import FinetuningCheckpoint, PretrainingCheckpoint
from marvel.envs import TaskSpec
from marvel.errors import MarvelError
from marvel.logging import RunLogger, run_metadata
from marvel.resume import RunCheckpoint, resume_axis_step

Resumed = TypeVar("Resumed", PretrainingCheckpoint, FinetuningCheckpoint)

LOG = logging.getLogger("marvel")


def log(message: str) -> None:
    """A message to the console and the run dir's ``run.log`` (Hydra's job logging,
    conf/config.yaml), printed above any progress bar (``run`` redirects it through tqdm)."""
    LOG.info(message)


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


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    device: torch.device
    task: TaskSpec
    logger: RunLogger
    resume: RunCheckpoint | None = None  # the checkpoint a resumed run continues from
    timings: dict[str, float] = field(default_factory=dict)

    def resuming(self, kind: type[Resumed]) -> Resumed | None:
        """The run dir's checkpoint if the run resumes inside the stage that writes ``kind``
        (``PretrainingCheckpoint`` or ``FinetuningCheckpoint``), else None."""
        return self.resume if isinstance(self.resume, kind) else None


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` only where they
    exist (MarvelError naming what this machine has otherwise)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = "valid: auto, cpu, cuda, cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MarvelError(f"device={name} is not a device; {valid}") from None
    if device.type not in ("cpu", "cuda"):
        raise MarvelError(f"device={name}: marvel runs on cpu or cuda; {valid}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise MarvelError(
            f"device={name} is not available (this machine has {count} CUDA device(s)); use "
            "device=auto or device=cpu"
        )
    return device


def derived_seed(seed: int, name: str) -> int:
    """A seed for the random stream ``name`` of a run seeded ``seed``, independent of others."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def seed_everything(seed: int, stage: str = "") -> None:
    """Seed Python, NumPy and torch from (run seed, stage): each stage starts from the same
    random state whether or not an earlier stage ran in this process or came from the cache."""
    derived = derived_seed(seed, stage)
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)


def make_logger(
    cfg: DictConfig,
    task: TaskSpec,
    run_dir: Path,
    sweep: SweepInfo | None,
    resume: RunCheckpoint | None,
) -> RunLogger:
    """The run's logger. W&B: grouped by sweep launch (else by experiment), ``job_type`` =
    experiment, tagged with what an ablation compares, so the W&B UI groups them in a click.
    A resumed run keeps its W&B run id and its metrics rows up to the checkpoint."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    tags = [
        task.name,
        f"offline:{cfg.offline.algo}",
        f"vpa:{'on' if cfg.vpa.enabled else 'off'}",
        f"pid:{cfg.pid.name}",
        f"seed:{cfg.seed}",
        f"budget:{cfg.budget.name}",
        f"numerics:{cfg.numerics}",
        *([f"sweep:{cfg.sweep}"] if cfg.sweep else []),
        *cfg.logger.tags,
    ]
    default_group = sweep.group if sweep is not None else cfg.experiment
    return RunLogger(
        run_dir,
        {**container, "metadata": run_metadata()},
        backend=cfg.logger.backend,
        mode=cfg.logger.mode,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        wandb_dir=cfg.logger.dir,
        group=cfg.logger.group or default_group,
        name=f"{task.name}__{cfg.experiment}__s{cfg.seed}",
        tags=tags,
        job_type=cfg.experiment,
        run_id=None if resume is None else resume.wandb_run_id,
        resume_at=None if resume is None else resume_axis_step(resume),
    )
