"""Stage 4, finetuning: online SAC-Lag from the aligned start (METHOD.md section 4), with periodic
evaluation and checkpoints, from the run dir's last checkpoint when the run resumes."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from typing import Any

import gymnasium as gym
from omegaconf import OmegaConf
from tqdm import tqdm

from marvel.baselines import make_baselines
from marvel.checkpoint import LAST, rng_state, save_checkpoint, set_rng_state
from marvel.checkpoint_records import FinetuneProgress, FinetuningCheckpoint
from marvel.choices import plain_dict
from marvel.context import RunContext, derived_seed, log, seed_everything
from marvel.data.buffer import ReplayBuffer
from marvel.envs import space_dims
from marvel.errors import check_finite
from marvel.evaluate import EvalResult, evaluate, make_eval_envs
from marvel.lagrange import make_controller
from marvel.online import OnlineLearner
from marvel.resume import config_digest
from marvel.sac_lag import SACLag
from marvel.stages.dataset import Dataset


def new_agent(ctx: RunContext, env: gym.Env) -> SACLag:
    """SAC-Lag with freshly initialised networks, from the run seed (the same weights whatever
    ran before it in this process)."""
    seed_everything(ctx.cfg.seed)
    cfg = ctx.cfg
    agent_cfg, sizes = OmegaConf.to_object(cfg.finetune), OmegaConf.to_object(cfg.env.networks)
    return SACLag(*space_dims(env), agent_cfg, sizes, ctx.device)


def finetune(
    ctx: RunContext,
    agent: SACLag,
    env: gym.Env,
    lambda_init: float,
    start_summary: dict[str, Any],
    offline_data: Dataset | None,
) -> dict[str, Any]:
    """Finetune ``agent`` for ``budget.online_iterations`` iterations with lambda starting at
    ``lambda_init``; ``offline_data`` feeds hybrid replay (``baselines.offline_fraction``).
    Returns the run's summary entries, ``start_summary`` (what the start came from) first."""
    cfg, task, device = ctx.cfg, ctx.task, ctx.device
    agent_cfg = agent.cfg
    obs_dim, act_dim = agent.obs_dim, agent.act_dim
    eval_envs = make_eval_envs(task, cfg.eval_envs)
    offline = None
    if offline_data is not None:
        offline = ReplayBuffer.from_dataset(
            offline_data.arrays,
            device,
            derived_seed(cfg.seed, "replay"),
            cfg.bootstrap_through_time_limit,
        )
    controller_cfg = dataclasses.replace(OmegaConf.to_object(cfg.pid), lambda_init=lambda_init)
    controller = make_controller(controller_cfg, task.cost_limit)
    seed_everything(cfg.seed, "finetune")
    iterations = cfg.budget.online_iterations
    capacity = min(
        agent_cfg.buffer_capacity,
        iterations * agent_cfg.episodes_per_iteration * task.max_episode_steps,
    )
    buffer = ReplayBuffer(
        obs_dim, act_dim, capacity, device, cfg.seed, cfg.bootstrap_through_time_limit
    )
    baselines = make_baselines(OmegaConf.to_object(cfg.baselines), offline, iterations)
    learner = OnlineLearner(agent, controller, env, buffer, cfg.seed, baselines)

    def run_eval() -> EvalResult:
        return evaluate(agent.actor, eval_envs, task, cfg.budget.eval_episodes, cfg.seed, device)

    start = time.perf_counter()
    resume = ctx.resuming(FinetuningCheckpoint)
    if resume is None:
        initial = run_eval()  # the starting policy's score, at update 0
        ctx.logger.log({"online/env_steps": 0, **initial.metrics(), **controller.terms()}, step=0)
        result = initial
    else:
        learner.load_state(resume.learner)
        set_rng_state(resume.rng)
        initial = EvalResult(**resume.progress.initial_eval)
        result = EvalResult(**resume.progress.last_eval)
        log(f"resuming at iteration {learner.iteration} of {iterations} from {LAST}")
    resumed_from = learner.iteration if resume is not None else None
    bar = tqdm(total=iterations, initial=learner.iteration, desc=f"finetune {task.name}", unit="it")
    for i in range(learner.iteration, iterations):
        row = learner.iteration_step()
        check_finite(row, "finetuning", learner.updates)  # before saving: keep the last good one
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
        bar.update()
        if (i + 1) % cfg.budget.checkpoint_every == 0 or last:
            save_checkpoint(
                ctx.run_dir / "checkpoints" / LAST,
                FinetuningCheckpoint(
                    task_spec=asdict(task),
                    experiment=cfg.experiment,
                    seed=cfg.seed,
                    dims=[obs_dim, act_dim],
                    config_digest=config_digest(cfg),
                    agent_config=plain_dict(agent_cfg),
                    sizes=asdict(agent.sizes),
                    learner=learner.state(),
                    rng=rng_state(),
                    wandb_run_id=ctx.logger.run_id,
                    progress=FinetuneProgress(
                        summary=start_summary,
                        lambda_init=float(lambda_init),
                        initial_eval=asdict(initial),
                        last_eval=asdict(result),
                    ),
                ),
            )
    bar.close()
    ctx.timings["finetune_s"] = time.perf_counter() - start
    eval_envs.close()
    return {
        **start_summary,
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
        "checkpoint": str(ctx.run_dir / "checkpoints" / LAST),
        "resumed_from_iteration": resumed_from,
    }
