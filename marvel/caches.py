"""The two caches under ``paths.cache_dir`` that let a sweep collect and pretrain once:
``datasets/`` (collected HDF5 files) and ``pretrained/`` (pi_0, Q_r, Q_c), each entry named by
the hash of everything that determines its content. A format number is bumped when a change of
code makes existing entries stale (the reasons: benchmarks/README.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from marvel import numerics
from marvel.checkpoint import load_checkpoint, save_checkpoint
from marvel.checkpoint_records import PretrainedEntry
from marvel.choices import plain_dict
from marvel.data.dsrl_files import DatasetIdentity
from marvel.envs import TaskSpec
from marvel.errors import CheckpointError, DatasetError, MarvelError
from marvel.fsutil import atomic_write_json, json_digest, sha256_file
from marvel.start import Pretrained

DATASET_FORMAT = 6
PRETRAINED_FORMAT = 9


def cache_dir(cfg: DictConfig, kind: str) -> Path:
    return Path(cfg.paths.cache_dir).expanduser() / kind


# ----------------------------------------------------------------------------- datasets


def collected_dataset_path(cfg: DictConfig, task: TaskSpec) -> Path:
    """Where the collected dataset of this (task, recipe, size, seed, numerics) is cached."""
    spec = {
        "format": DATASET_FORMAT,
        "numerics": numerics.identity(),
        "task": task.name,
        **({"env": [task.gym_id, task.max_episode_steps]} if task.custom else {}),
        "collect": asdict(OmegaConf.to_object(cfg.data.collect)),
        "episodes": cfg.budget.collect_episodes,
        "seed": cfg.data.seed,
    }
    return cache_dir(cfg, "datasets") / f"{task.name}-{json_digest(spec)[:16]}.hdf5"


def cached_dataset(path: Path) -> DatasetIdentity | None:
    """The cached collected dataset at ``path``, checked against the SHA-256 recorded when it
    was collected; None when it is not there."""
    if not path.is_file():
        return None
    fix = "delete it to collect it again"
    recorded = recorded_sha256(path, ("identity", "sha256"), DatasetError, fix)
    digest = sha256_file(path)
    if digest != recorded:
        raise DatasetError(
            f"{path} changed since it was collected (SHA-256 differs from its .json); {fix}"
        )
    return DatasetIdentity(path=str(path), sha256=digest, source="collect")


def recorded_sha256(path: Path, keys: tuple[str, ...], error: type[MarvelError], fix: str) -> str:
    """The SHA-256 that the sidecar ``<path stem>.json`` records for the cache entry ``path``
    under ``keys``; ``error`` with ``fix`` when the sidecar is missing or unreadable."""
    sidecar = path.with_suffix(".json")
    try:
        value: Any = json.loads(sidecar.read_text())
        for key in keys:
            value = value[key]
        if not isinstance(value, str):
            raise TypeError(value)
    except FileNotFoundError:
        raise error(f"{path} has no record of its content ({sidecar} is missing); {fix}") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise error(f"{path} has an unreadable record of its content ({sidecar}); {fix}") from None
    return value


# ----------------------------------------------------------------------------- pretrained


def pretrained_spec(cfg: DictConfig, task: TaskSpec, dataset_sha256: str) -> dict[str, Any]:
    """Everything that determines a pretrained model: the task, the algorithm, its config and
    steps, the network sizes, the cost limit, the dataset, the seed, the done flags and the
    numerics (marvel/numerics.py)."""
    algo = cfg.offline.algo
    return {
        "format": PRETRAINED_FORMAT,
        "numerics": numerics.identity(),
        "task": task.name,
        "algo": algo.value,
        "config": plain_dict(OmegaConf.to_object(cfg.offline[algo])),
        "steps": cfg.offline.steps,
        "sizes": asdict(OmegaConf.to_object(cfg.env.networks)),
        "cost_limit": task.cost_limit,
        "dataset_sha256": dataset_sha256,
        "seed": cfg.offline.seed,
        "bootstrap_through_time_limit": cfg.bootstrap_through_time_limit,
    }


def pretrained_path(cfg: DictConfig, task: TaskSpec, spec: dict[str, Any]) -> Path:
    name = f"{task.name}-{spec['algo']}-{json_digest(spec)[:16]}.pt"
    return cache_dir(cfg, "pretrained") / name


def load_pretrained(
    path: Path, spec: dict[str, Any], obs_dim: int, act_dim: int, device: torch.device
) -> Pretrained:
    """A cached pretrained model, refused with one clear line when its recorded settings
    (task, algorithm, sizes, dataset, ...) are not ``spec`` or its networks do not fit."""
    fix = "delete it to pretrain again"
    if sha256_file(path) != recorded_sha256(path, ("sha256",), CheckpointError, fix):
        raise CheckpointError(
            f"{path} changed since it was pretrained (SHA-256 differs from its .json); {fix}"
        )
    entry = load_checkpoint(path, (PretrainedEntry,), fix)
    recorded = entry.spec if isinstance(entry.spec, dict) else {}
    if recorded != spec:
        differ = sorted(k for k in spec if recorded.get(k) != spec[k])
        raise CheckpointError(
            f"{path} is not the pretrained model this run needs (its {', '.join(differ)} "
            f"differ); {fix}"
        )
    try:
        pretrained = Pretrained.from_state_dict(entry.pretrained, obs_dim, act_dim, device)
    except (KeyError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"{path} holds networks that do not fit ({first_line}); {fix}"
        ) from None
    nets = {
        "actor": pretrained.actor,
        "Q_r": pretrained.reward_critic,
        "Q_c": pretrained.cost_critic,
    }
    bad = [
        name for name, net in nets.items() if not all(p.isfinite().all() for p in net.parameters())
    ]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights ({', '.join(bad)}); {fix}")
    return pretrained


def save_pretrained(
    path: Path, spec: dict[str, Any], task: TaskSpec, dims: list[int], pretrained: Pretrained
) -> None:
    """The model and its record (``<stem>.json``: its SHA-256, checked by load_pretrained),
    the record first: a kill between the two leaves no model, so the entry is rebuilt."""

    def record(tmp: Path) -> None:
        atomic_write_json(path.with_suffix(".json"), {"sha256": sha256_file(tmp), "spec": spec})

    save_checkpoint(
        path,
        PretrainedEntry(
            task_spec=asdict(task), dims=dims, spec=spec, pretrained=pretrained.state_dict()
        ),
        before_rename=record,
    )
