"""Stage 2, pretraining: pi_0, Q_r and Q_c from the configured offline algorithm (METHOD.md
section 2), cached, so sweep members that share it pretrain once; checkpointed as it trains."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from marvel.caches import load_pretrained, pretrained_path, pretrained_spec, save_pretrained
from marvel.checkpoint import LAST, rng_state, save_checkpoint, set_rng_state
from marvel.checkpoint_records import PretrainingCheckpoint
from marvel.context import RunContext, log, seed_everything
from marvel.data.buffer import ReplayBuffer
from marvel.errors import MarvelError
from marvel.fsutil import locked
from marvel.offline import OFFLINE_ALGORITHMS
from marvel.offline.base import train_offline
from marvel.resume import config_digest
from marvel.stages.dataset import Dataset
from marvel.start import Pretrained


def offline_namespace(metrics: dict[str, float]) -> dict[str, float]:
    """Offline training rows under ``offline/`` (``loss/actor`` -> ``offline/loss/actor``), so
    they never share a key, or a W&B x-axis, with the online rows."""
    return {k if k.startswith("offline/") else f"offline/{k}": v for k, v in metrics.items()}


def pretrain(
    ctx: RunContext, dataset: Dataset, spec: dict[str, Any], dims: list[int]
) -> Pretrained:
    """Train the offline algorithm for ``offline.steps`` steps, checkpointing the run dir as it
    goes (from that checkpoint when the run resumes inside pretraining)."""
    cfg, task = ctx.cfg, ctx.task
    algo = cfg.offline.algo
    algo_cfg = OmegaConf.to_object(cfg.offline[algo])
    seed_everything(cfg.offline.seed, "pretrain")
    learner = OFFLINE_ALGORITHMS[algo](
        *dims,
        OmegaConf.to_object(cfg.env.networks),
        algo_cfg,
        task.cost_limit,
        task.max_episode_steps,
        ctx.device,
    )
    buffer = ReplayBuffer.from_dataset(
        dataset.arrays, ctx.device, cfg.offline.seed, cfg.bootstrap_through_time_limit
    )
    done, last = 0, None
    resume = ctx.resuming(PretrainingCheckpoint)
    if resume is not None and resume.spec == spec:
        learner.load_state_dict(resume.learner)
        buffer.generator.set_state(resume.sampler)
        set_rng_state(resume.rng)
        done, last = resume.step, resume.last
        log(f"resuming pretraining at step {done} of {cfg.offline.steps}")
    with tqdm(total=cfg.offline.steps, initial=done, desc=f"pretrain {algo}") as bar:

        def log_and_checkpoint(metrics: dict[str, float], step: int) -> None:
            ctx.logger.log(offline_namespace(metrics), step, step_metric="offline/step")
            bar.update(step - bar.n)
            save_checkpoint(
                ctx.run_dir / "checkpoints" / LAST,
                PretrainingCheckpoint(
                    task_spec=asdict(task),
                    dims=dims,
                    config_digest=config_digest(cfg),
                    wandb_run_id=ctx.logger.run_id,
                    spec=spec,
                    step=step,
                    learner=learner.state_dict(),
                    sampler=buffer.generator.get_state(),
                    rng=rng_state(),
                    last=metrics,
                ),
            )

        return train_offline(
            learner,
            buffer,
            cfg.offline.steps,
            algo_cfg.batch_size,
            log=log_and_checkpoint,
            log_every=min(cfg.offline.log_every, cfg.offline.steps),
            done=done,
            last=last,
        )


def pretrained_start(
    ctx: RunContext, dataset: Dataset, build: bool = True
) -> tuple[Pretrained, dict[str, Any]]:
    """pi_0, Q_r, Q_c from the cache, or pretrained on a miss when ``build`` (else refused);
    returns them and their summary entry."""
    cfg, task = ctx.cfg, ctx.task
    algo = cfg.offline.algo
    spec = pretrained_spec(cfg, task, dataset.identity.sha256)
    dims = [dataset.arrays["observations"].shape[1], dataset.arrays["actions"].shape[1]]
    path = pretrained_path(cfg, task, spec)
    with locked(path, on_wait=lambda: log(f"waiting for another job to pretrain {path}")):
        cached = path.is_file()
        if cached:
            log(f"reusing pretrained {algo} model {path}")
            pretrained = load_pretrained(path, spec, *dims, ctx.device)
        elif not build:
            raise MarvelError(
                f"stage={cfg.stage} starts from the cached pretrained {algo} model and {path} is "
                "not there: run stage=pretrain (or stage=all) with these settings first"
            )
        else:
            log(f"pretraining {algo} for {cfg.offline.steps} steps on {dataset.identity.path}")
            start = time.perf_counter()
            pretrained = pretrain(ctx, dataset, spec, dims)
            ctx.timings["pretrain_s"] = time.perf_counter() - start
            save_pretrained(path, spec, task, dims, pretrained)
    info = {
        "path": str(path),
        "cached": cached,
        "algo": algo.value,
        "lagrange_multiplier": pretrained.lagrange_multiplier,
        "metrics": pretrained.metrics,
    }
    ctx.logger.update_config({"pretrained": {"path": str(path), "cached": cached}})
    return pretrained, info
