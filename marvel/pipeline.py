"""Stages wired from the config: data -> (pretraining) -> finetuning -> evaluation.

Each stage is a plain function over plain objects; this module builds them from the Hydra
config, caches what a later run can reuse (collected datasets), logs, and checkpoints.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from marvel.checkpoint import load_checkpoint, load_policy, rng_state, save_checkpoint
from marvel.config import validate
from marvel.data.buffer import ReplayBuffer
from marvel.data.collect import collect_dataset, content_key
from marvel.data.dsrl_files import (
    DatasetError,
    DatasetIdentity,
    DatasetUnavailableError,
    dsrl_dataset_dir,
    dsrl_file_name,
    fetch_dsrl_dataset,
    load_dsrl_dataset,
)
from marvel.envs import TaskSpec, make_env, space_dims, task_spec
from marvel.errors import NotAvailableError
from marvel.evaluate import EvalResult, evaluate
from marvel.fsutil import sha256_file
from marvel.lagrange import make_controller
from marvel.logging import RunLogger, run_metadata
from marvel.sac_lag import OnlineLearner, SACLag


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    device: torch.device
    task: TaskSpec
    logger: RunLogger
    timings: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log(message: str) -> None:
    tqdm.write(f"[marvel] {message}")


# ----------------------------------------------------------------------------- data


def needs_dataset(cfg: DictConfig) -> bool:
    """Only stages that read offline data resolve one (from scratch needs none)."""
    return (
        cfg.stage == "collect"
        or cfg.data.path is not None
        or cfg.offline.algo != "none"
        or cfg.vpa.enabled
    )


def collected_dataset(ctx: RunContext) -> DatasetIdentity:
    """The cached collected dataset for this (task, recipe, size, seed), collecting on a miss."""
    cfg = ctx.cfg
    collect_cfg = OmegaConf.to_object(cfg.data.collect)
    episodes = cfg.budget.collect_episodes
    key = content_key(ctx.task, collect_cfg, episodes, cfg.seed)
    path = Path(cfg.paths.cache_dir).expanduser() / "datasets" / f"{ctx.task.name}-{key}.hdf5"
    if path.is_file():
        digest = sha256_file(path)
        recorded = json.loads(path.with_suffix(".json").read_text())["identity"]["sha256"]
        if digest != recorded:
            raise DatasetError(
                f"{path} changed since it was collected (SHA-256 differs from its .json); "
                "delete it to collect it again"
            )
        log(f"reusing collected dataset {path}")
        return DatasetIdentity(path=str(path), sha256=digest, source="collect")
    log(f"collecting {episodes} episodes of {ctx.task.name} into {path}")
    start = time.perf_counter()
    identity = collect_dataset(ctx.task, collect_cfg, episodes, cfg.seed, ctx.device, path)
    ctx.timings["collect_s"] = time.perf_counter() - start
    return identity


def resolve_dataset(
    ctx: RunContext, source: str | None = None
) -> tuple[DatasetIdentity, dict[str, np.ndarray]]:
    """data.path, else the DSRL file (data=dsrl), else a collected one (data=collect);
    data=auto tries DSRL first. The data is always read through dsrl's ``get_dataset``."""
    cfg, task = ctx.cfg, ctx.task
    source = source or cfg.data.source
    if cfg.data.path is not None:
        path = Path(cfg.data.path).expanduser().resolve()
        data = load_dsrl_dataset(path, task.name)
        identity = DatasetIdentity(path=str(path), sha256=sha256_file(path), source="file")
    else:
        if source == "collect":
            identity = collected_dataset(ctx)
        else:
            try:
                identity = fetch_dsrl_dataset(
                    task.name, tuple(cfg.data.mirrors), cfg.data.download_timeout_s
                )
            except DatasetUnavailableError:
                if source == "dsrl":
                    raise
                log(
                    f"data=auto: DSRL file {dsrl_file_name(task.name)} is not in "
                    f"{dsrl_dataset_dir()} and no mirror answered; using a collected dataset"
                )
                identity = collected_dataset(ctx)
        data = load_dsrl_dataset(identity.path, task.name)
    log(f"dataset: {identity.source} {identity.path} (sha256 {identity.sha256[:12]}...)")
    ctx.logger.update_config({"dataset": identity.to_dict()})
    return identity, data


# ----------------------------------------------------------------------------- stages


def stage_collect(ctx: RunContext) -> dict[str, Any]:
    """Prepare the offline dataset: collect one (data=auto|collect; reused when cached),
    download DSRL's (data=dsrl), or check and record data.path."""
    source = "dsrl" if ctx.cfg.data.source == "dsrl" else "collect"
    identity, data = resolve_dataset(ctx, source=source)
    return {"dataset": {**identity.to_dict(), "transitions": int(len(data["rewards"]))}}


def stage_pretrain(ctx: RunContext) -> dict[str, Any]:
    raise NotAvailableError(
        "stage=pretrain is not available yet: offline pretraining (offline=cpq|bearl|bcql) "
        "arrives with issue 3. Available now: stage=collect|finetune|evaluate|all with "
        "offline=none (from scratch)"
    )


def check_available(cfg: DictConfig) -> None:
    if cfg.offline.algo != "none":
        raise NotAvailableError(
            f"offline={cfg.offline.algo} is not available yet (offline pretraining arrives "
            "with issue 3); use offline=none"
        )
    if cfg.vpa.enabled:
        raise NotAvailableError("vpa.enabled=true is not available yet (VPA arrives with issue 3)")


def stage_finetune(ctx: RunContext) -> dict[str, Any]:
    """Online SAC-Lag (METHOD.md section 4) with periodic evaluation and checkpoints."""
    cfg, task, device = ctx.cfg, ctx.task, ctx.device
    check_available(cfg)
    summary: dict[str, Any] = {}
    if needs_dataset(cfg):
        identity, _ = resolve_dataset(ctx)
        summary["dataset"] = identity.to_dict()

    agent_cfg = OmegaConf.to_object(cfg.finetune)
    env, eval_env = make_env(task.name), make_env(task.name)
    obs_dim, act_dim = space_dims(env)
    agent = SACLag(obs_dim, act_dim, agent_cfg, device)
    controller = make_controller(OmegaConf.to_object(cfg.pid), task.cost_limit)
    iterations = cfg.budget.online_iterations
    capacity = min(
        agent_cfg.buffer_capacity,
        iterations * agent_cfg.episodes_per_iteration * task.max_episode_steps,
    )
    buffer = ReplayBuffer(obs_dim, act_dim, capacity, device, seed=cfg.seed)
    learner = OnlineLearner(agent, controller, env, buffer, seed=cfg.seed)

    def run_eval() -> EvalResult:
        return evaluate(agent.actor, eval_env, task, cfg.budget.eval_episodes, cfg.seed, device)

    start = time.perf_counter()
    initial = run_eval()  # the starting policy's score, at update 0
    ctx.logger.log({"online/env_steps": 0, **initial.metrics(), **controller.terms()}, step=0)
    result = initial
    bar = tqdm(range(iterations), desc=f"finetune {task.name}", unit="it")
    for i in bar:
        row = learner.iteration_step()
        last = i + 1 == iterations
        if (i + 1) % cfg.budget.eval_every == 0 or last:
            result = run_eval()
            row.update(result.metrics())
        ctx.logger.log(row, step=learner.updates)
        bar.set_postfix(
            reward=f"{row['train/episode_reward']:.0f}",
            cost=f"{row['train/episode_cost']:.1f}",
            lam=f"{controller.lam:.3g}",
        )
        if (i + 1) % cfg.budget.checkpoint_every == 0 or last:
            save_checkpoint(
                ctx.run_dir / "checkpoints" / "last.pt",
                {
                    "kind": "sac_lag",
                    "task": task.name,
                    "experiment": cfg.experiment,
                    "seed": cfg.seed,
                    "dims": [obs_dim, act_dim],
                    "agent_config": asdict(agent_cfg),
                    "learner": learner.state_dict(),
                    "rng": rng_state(),
                    "wandb_run_id": ctx.logger.run_id,
                },
            )
    ctx.timings["finetune_s"] = time.perf_counter() - start
    env.close()
    eval_env.close()
    return {
        **summary,
        "eval": asdict(result),
        "initial_eval": asdict(initial),
        "online": {
            "iterations": learner.iteration,
            "updates": learner.updates,
            "env_steps": learner.env_steps,
            "episodes": learner.episodes,
            "cumulative_cost": learner.cumulative_cost,
        },
        "lagrange": controller.terms(),
        "checkpoint": str(ctx.run_dir / "checkpoints" / "last.pt"),
    }


def stage_evaluate(ctx: RunContext) -> dict[str, Any]:
    """Evaluate a saved policy (checkpoint=<run dir or .pt>) on the task it was trained on."""
    cfg, task = ctx.cfg, ctx.task
    actor, meta = load_policy(cfg.checkpoint, ctx.device)
    env = make_env(task.name)
    result = evaluate(actor, env, task, cfg.budget.eval_episodes, cfg.seed, ctx.device)
    env.close()
    ctx.logger.log(result.metrics(), step=0)
    log(
        f"{task.name}: reward {result.reward:.1f} (normalized {result.normalized_reward:.3f}), "
        f"cost {result.cost:.1f} (normalized {result.normalized_cost:.3f})"
    )
    return {"eval": asdict(result), "checkpoint": str(cfg.checkpoint), "source_run": meta}


STAGES = {
    "collect": stage_collect,
    "pretrain": stage_pretrain,
    "finetune": stage_finetune,
    "evaluate": stage_evaluate,
    "all": stage_finetune,  # with offline=none, "all" is data (when needed) + finetuning
}


# ----------------------------------------------------------------------------- run


def make_logger(cfg: DictConfig, task: TaskSpec, run_dir: Path) -> RunLogger:
    container = OmegaConf.to_container(cfg, resolve=True)
    tags = [
        task.name,
        f"offline:{cfg.offline.algo}",
        f"vpa:{'on' if cfg.vpa.enabled else 'off'}",
        f"pid:{cfg.pid.name}",
        f"seed:{cfg.seed}",
        f"budget:{cfg.budget.name}",
        *cfg.logger.tags,
    ]
    return RunLogger(
        run_dir,
        {**container, "metadata": run_metadata()},
        backend=cfg.logger.backend,
        mode=cfg.logger.mode,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group or cfg.experiment,
        name=f"{task.name}__{cfg.experiment}__s{cfg.seed}",
        tags=tags,
        job_type=cfg.experiment,
    )


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run ``cfg.stage`` in ``run_dir``; writes metrics.jsonl, summary.json, checkpoints/."""
    validate(cfg)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    # stage=evaluate runs on the task the checkpoint was trained on
    task_name = load_checkpoint(cfg.checkpoint)["task"] if cfg.stage == "evaluate" else cfg.env.name
    task = task_spec(task_name, cfg.env.cost_limit)
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"{cfg.experiment} | stage={cfg.stage} | {task.name} | seed {cfg.seed} | {device}")
    log(f"run dir: {run_dir}")
    start = time.perf_counter()
    with make_logger(cfg, task, run_dir) as logger:
        ctx = RunContext(cfg, run_dir, device, task, logger)
        summary = STAGES[cfg.stage](ctx)
        ctx.timings["total_s"] = time.perf_counter() - start
        summary = {
            "status": "ok",
            "experiment": cfg.experiment,
            "stage": cfg.stage,
            "seed": cfg.seed,
            "device": str(device),
            "task": asdict(task),
            "budget": OmegaConf.to_container(cfg.budget, resolve=True),
            "dataset": None,
            **summary,
            "timings": ctx.timings,
            "metadata": run_metadata(),
        }
        logger.write_summary(summary)
    log(f"summary: {run_dir / 'summary.json'}")
    return summary
