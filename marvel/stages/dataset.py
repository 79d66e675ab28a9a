"""Stage 1, the offline dataset: ``data.path``, else DSRL's file, else one collected here (cached).
The data is always read through dsrl's ``get_dataset``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from marvel.caches import cached_dataset, collected_dataset_path
from marvel.context import RunContext, log, seed_everything
from marvel.data.dsrl_files import (
    DatasetIdentity,
    dsrl_dataset_dir,
    dsrl_file_name,
    fetch_dsrl_dataset,
    load_dsrl_dataset,
)
from marvel.errors import DatasetUnavailableError, MarvelError
from marvel.fsutil import locked, sha256_file
from marvel.stages.collect import collect_dataset


@dataclass
class Dataset:
    """An offline dataset: where it came from and its arrays (DSRL's keys)."""

    identity: DatasetIdentity
    arrays: dict[str, np.ndarray]


def collected_dataset(ctx: RunContext, build: bool) -> DatasetIdentity:
    """The cached collected dataset for this (task, recipe, size, seed); on a miss, collected
    when ``build``, else refused. Parallel jobs needing it collect it once: the others wait on
    its lock."""
    cfg = ctx.cfg
    path = collected_dataset_path(cfg, ctx.task)
    with locked(path, on_wait=lambda: log(f"waiting for another job to collect {path}")):
        identity = cached_dataset(path)
        if identity is not None:
            log(f"reusing collected dataset {path}")
            return identity
        if not build:
            raise MarvelError(
                f"stage={cfg.stage} reads the collected dataset from the cache and {path} is not "
                "there: run stage=collect (or stage=all) with these settings first"
            )
        episodes = cfg.budget.collect_episodes
        log(f"collecting {episodes} episodes of {ctx.task.name} into {path}")
        seed_everything(cfg.data.seed, "collect")
        start = time.perf_counter()
        collect_cfg = OmegaConf.to_object(cfg.data.collect)
        identity = collect_dataset(ctx.task, collect_cfg, episodes, cfg.data.seed, ctx.device, path)
        ctx.timings["collect_s"] = time.perf_counter() - start
    return identity


def prepare_dataset(ctx: RunContext, source: str | None = None, build: bool = True) -> Dataset:
    """data.path, else the DSRL file (data=dsrl), else a collected one (data=collect);
    data=auto tries DSRL first. Collects only when ``build``."""
    cfg, task = ctx.cfg, ctx.task
    source = source or cfg.data.source
    if cfg.data.path is not None:
        path = Path(cfg.data.path).expanduser().resolve()
        arrays = load_dsrl_dataset(path, task)
        identity = DatasetIdentity(path=str(path), sha256=sha256_file(path), source="file")
    else:
        if source == "collect" or task.custom:  # DSRL has no file for your own env
            identity = collected_dataset(ctx, build)
        else:
            try:
                identity = fetch_dsrl_dataset(
                    task.name,
                    tuple(cfg.data.mirrors),
                    cfg.data.download_timeout_s,
                    cfg.data.hf_repo,
                )
            except DatasetUnavailableError:
                if source == "dsrl":
                    raise
                log(
                    f"data=auto: DSRL file {dsrl_file_name(task.name)} is not in "
                    f"{dsrl_dataset_dir()} and no source served it; using a collected dataset"
                )
                identity = collected_dataset(ctx, build)
        arrays = load_dsrl_dataset(identity.path, task)
    log(f"dataset: {identity.source} {identity.path} (sha256 {identity.sha256[:12]}...)")
    ctx.logger.update_config({"dataset": identity.to_dict()})
    return Dataset(identity, arrays)


def needs_dataset(ctx: RunContext) -> bool:
    """Finetuning reads offline data only to pretrain, align or replay it (from scratch needs
    none); an explicit data.path is always checked and recorded."""
    cfg = ctx.cfg
    return (
        cfg.data.path is not None
        or cfg.offline.algo != "none"
        or cfg.vpa.enabled
        or cfg.baselines.offline_fraction > 0
    )


def dataset_summary(dataset: Dataset) -> dict[str, object]:
    return {**dataset.identity.to_dict(), "transitions": int(len(dataset.arrays["rewards"]))}
