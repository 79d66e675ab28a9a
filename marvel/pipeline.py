"""A run, stage by stage: dataset -> pretrained start -> aligned start -> finetuned agent ->
evaluation (``stage=`` stops after a prefix, or evaluates a saved policy), with the checks that
can refuse a command before anything is written, and the run's result in words at the end.

Where each stage lives: ``marvel/stages/`` (dataset, collect, pretrain, align, finetune,
evaluate); the caches: ``marvel/caches.py``; the run context: ``marvel/context.py``; resume:
``marvel/resume.py``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm

from marvel import numerics
from marvel.checkpoint import LAST, checkpoint_task
from marvel.checkpoint_records import FinetuningCheckpoint
from marvel.config_checks import validate
from marvel.context import (
    RunContext,
    SweepInfo,
    log,
    make_logger,
    resolve_device,
    seed_everything,
)
from marvel.envs import TaskSpec, check_custom_env, make_env, task_from_config, task_from_record
from marvel.errors import MarvelError, NumericalFault
from marvel.fsutil import remove_partial_writes, unwritable_reason
from marvel.logging import run_metadata
from marvel.resume import finished, resume_point
from marvel.stages.align import aligned_start, lambda_init
from marvel.stages.dataset import dataset_summary, needs_dataset, prepare_dataset
from marvel.stages.evaluate import evaluate_checkpoint, evaluate_policy
from marvel.stages.finetune import finetune, new_agent
from marvel.stages.pretrain import pretrained_start


def run_stages(ctx: RunContext) -> dict[str, Any]:
    """The stages in order, up to ``stage``: collect (the dataset), pretrain (and evaluate
    pi_0), finetune or all (the aligned start, finetuning); evaluate: a saved policy."""
    stage = ctx.cfg.stage
    if stage == "evaluate":
        return evaluate_checkpoint(ctx)
    if stage == "collect":
        source = "dsrl" if ctx.cfg.data.source == "dsrl" else "collect"
        return {"dataset": dataset_summary(prepare_dataset(ctx, source=source))}
    if stage == "pretrain":
        dataset = prepare_dataset(ctx)
        pretrained, info = pretrained_start(ctx, dataset)
        result = evaluate_policy(ctx, pretrained.actor, "evaluate pi_0")
        return {"dataset": dataset.identity.to_dict(), "pretrained": info, "eval": asdict(result)}
    return finetune_stages(ctx, build=stage == "all")


def finetune_stages(ctx: RunContext, build: bool) -> dict[str, Any]:
    """Dataset (when needed) -> pretrained start -> aligned start -> finetuning. ``build``
    (stage=all): collect and pretrain on a cache miss; stage=finetune takes them from the cache.
    A resumed run takes its start from its checkpoint."""
    cfg = ctx.cfg
    env = make_env(ctx.task)
    agent = new_agent(ctx, env)
    dataset = None
    resume = ctx.resuming(FinetuningCheckpoint)
    if resume is None:
        summary: dict[str, Any] = {}
        if needs_dataset(ctx):
            dataset = prepare_dataset(ctx, build=build)
            summary["dataset"] = dataset.identity.to_dict()
        pretrained = None
        if cfg.offline.algo != "none":
            pretrained, summary["pretrained"] = pretrained_start(ctx, dataset, build)
        summary |= aligned_start(ctx, agent, pretrained, dataset, env)
        lambda_0 = lambda_init(cfg, pretrained)
    else:  # everything before finetuning is in the checkpoint
        summary, lambda_0 = resume.progress.summary, resume.progress.lambda_init
    replay = None
    if cfg.baselines.offline_fraction > 0:  # hybrid replay samples the offline data online
        replay = dataset if dataset is not None else prepare_dataset(ctx, build=build)
    result = finetune(ctx, agent, env, lambda_0, summary, replay)
    env.close()
    return result


def preflight(
    cfg: DictConfig, run_dir: Path
) -> tuple[torch.device, TaskSpec, dict[str, Any] | None]:
    """Every check that can refuse a command, and writes nothing: the config, the device, the
    task (stage=evaluate: the one the checkpoint was trained on) and whether ``run_dir``
    resumes. Returns the device, the task and the checkpoint to resume from (or None)."""
    validate(cfg)
    numerics.require(cfg.numerics)
    reason = unwritable_reason(cfg.paths.cache_dir) if cfg.stage != "evaluate" else None
    if reason is not None:
        raise MarvelError(
            f"paths.cache_dir={cfg.paths.cache_dir} cannot hold marvel's cache ({reason}); pass "
            "paths.cache_dir=<a writable dir> or set MARVEL_CACHE"
        )
    device = resolve_device(cfg.device)
    if cfg.stage == "evaluate":
        task = task_from_record(checkpoint_task(cfg.checkpoint), cfg.env.cost_limit)
    else:
        task = task_from_config(cfg.env)
    if task.custom:
        check_custom_env(task)
    return device, task, resume_point(cfg, run_dir)


def run(cfg: DictConfig, run_dir: Path, sweep: SweepInfo | None = None) -> dict[str, Any]:
    """Run ``cfg.stage`` in ``run_dir`` (a job of ``sweep``, if given); writes metrics.jsonl,
    summary.json, checkpoints/. With ``resume=auto`` a run dir that holds a pretraining or
    finetuning checkpoint of the same config is resumed from it."""
    device, task, resume = preflight(cfg, run_dir)
    if finished(cfg, resume) and (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except json.JSONDecodeError:
            log(f"{run_dir}/summary.json is unreadable: writing it again from the run's checkpoint")
            summary = {}
        if summary.get("status") == "ok":  # nothing to do: its results stand as written
            log(f"{run_dir} holds this run, finished; resume=never starts it over")
            for line in verdict(summary, run_dir):
                log(line)
            return summary
    threads = numerics.torch_threads(cfg.numerics, cfg.torch_threads)
    if threads > 0:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(run_dir / "checkpoints" / LAST)
    log(f"{cfg.experiment} | stage={cfg.stage} | {task.name} | seed {cfg.seed} | {device}")
    log(f"run dir: {run_dir}")
    if task.custom:
        scale = (
            f"normalized against env.reward_min={task.reward_min:g}, reward_max={task.reward_max:g}"
            if task.has_reference_returns
            else "raw: no reference returns (env.reward_min, env.reward_max)"
        )
        log(f"your env {task.gym_id} (passes gymnasium's env checker); its rewards are {scale}")
    start = time.perf_counter()
    with logging_redirect_tqdm(), make_logger(cfg, task, run_dir, sweep, resume) as logger:
        ctx = RunContext(cfg, run_dir, device, task, logger, resume)
        try:
            summary = run_stages(ctx)
        except NumericalFault as fault:  # recorded, then reported as one line by run.py
            fault_info = {"stage": fault.stage, "step": fault.step, "keys": fault.keys}
            logger.write_summary({"status": "failed", "fault": fault_info, "seed": cfg.seed})
            raise
        ctx.timings["total_s"] = time.perf_counter() - start
        summary = {
            "status": "ok",
            "experiment": cfg.experiment,
            "stage": cfg.stage,
            "seed": cfg.seed,
            "device": str(device),
            "numerics": cfg.numerics,
            "torch_threads": torch.get_num_threads(),
            "sweep": None if sweep is None else {"name": sweep.name, "dir": str(sweep.dir)},
            "task": asdict(task),
            "budget": OmegaConf.to_container(cfg.budget, resolve=True),
            "dataset": None,
            **summary,
            "timings": ctx.timings,
            "metadata": run_metadata(),
        }
        logger.write_summary(summary)
    log(f"summary: {run_dir / 'summary.json'}")
    if "eval" in summary:
        for line in verdict(summary, run_dir):
            log(line)
    return summary


def verdict(summary: dict[str, Any], run_dir: Path) -> list[str]:
    """The run's result in words: the final policy's score with the standard error of its cost,
    SAFE, UNSAFE, or AT THE LIMIT where the limit lies within that error, the starting policy's
    score where finetuning ran, and where the run's files are."""

    raw = summary["task"].get("reward_min") is None  # your own env without reference returns

    def score(result: dict[str, Any]) -> str:
        reward = "" if raw else f"normalized reward {result['normalized_reward']:.2f}, "
        return (
            f"reward {result['reward']:.1f}, cost {result['cost']:.1f} ± {result['cost_se']:.1f} "
            f"({reward}normalized cost {result['normalized_cost']:.2f} ± "
            f"{result['normalized_cost_se']:.2f})"
        )

    result = summary["eval"]
    label = "SAFE" if result["safe"] else "UNSAFE"
    lines = [
        f"result: {summary['task']['name']} {summary['experiment']} seed {summary['seed']}: "
        f"{'AT THE LIMIT' if result['at_limit'] else label} (cost limit "
        f"{result['cost_limit']:g}{'; rewards raw: no reference returns' if raw else ''})",
        f"  final policy:    {score(result)}",
    ]
    if "initial_eval" in summary:
        lines.append(f"  starting policy: {score(summary['initial_eval'])}")
    lines.append(f"  ± one standard error over {result['episodes']} evaluation episodes")
    if result["at_limit"]:
        lines.append(
            f"  the limit lies within it: the mean cost is {'under' if result['safe'] else 'over'}"
            " the limit, but this evaluation cannot tell SAFE from UNSAFE (more episodes: "
            "budget.eval_episodes)"
        )
    lines.append(f"  metrics:    {run_dir / 'metrics.jsonl'}")
    checkpoint = summary.get("checkpoint") or (summary.get("pretrained") or {}).get("path")
    if checkpoint:
        lines.append(f"  checkpoint: {checkpoint}")
    if "online" in summary:
        lines.append(f"  curves:     python -m marvel.analysis {run_dir}")
    return lines
