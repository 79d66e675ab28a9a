"""Stages wired from the config: data -> (pretraining) -> finetuning -> evaluation.

Each stage is a plain function over plain objects; this module builds them from the Hydra
config, caches what a later run can reuse (collected datasets), logs, and checkpoints.
"""

from __future__ import annotations

import json
import logging
import random
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from marvel.checkpoint import (
    LAST,
    checkpoint_task,
    load_checkpoint,
    load_policy,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
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
from marvel.envs import (
    TaskSpec,
    check_custom_env,
    make_env,
    space_dims,
    task_from_config,
    task_from_record,
)
from marvel.errors import CheckpointError, MarvelError, NumericalFault, check_finite
from marvel.evaluate import EvalResult, evaluate, make_eval_envs
from marvel.fsutil import (
    json_digest,
    locked,
    remove_partial_writes,
    sha256_file,
    unwritable_reason,
)
from marvel.lagrange import make_controller
from marvel.launch import SweepInfo
from marvel.logging import RunLogger, run_metadata
from marvel.offline.base import NetworkSizes, Pretrained, train_offline
from marvel.offline.bcql import BCQL
from marvel.offline.bearl import BEARL
from marvel.offline.cpq import CPQ
from marvel.placement import supports_placement
from marvel.sac_lag import OnlineLearner, SACLag
from marvel.vpa import ACTION_KINDS, align, critic_diagnostic, diagnostic_sample

OFFLINE_ALGORITHMS = {"cpq": CPQ, "bearl": BEARL, "bcql": BCQL}


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    device: torch.device
    task: TaskSpec
    logger: RunLogger
    resume: dict[str, Any] | None = None  # the checkpoint a resumed run continues from
    timings: dict[str, float] = field(default_factory=dict)

    def resuming(self, kind: str) -> dict[str, Any] | None:
        """The run dir's checkpoint if the run resumes inside the stage that writes ``kind``
        (``pretraining`` or ``sac_lag``), else None."""
        return self.resume if self.resume is not None and self.resume["kind"] == kind else None


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


LOG = logging.getLogger("marvel")


def log(message: str) -> None:
    """A message to the console and the run dir's ``run.log`` (Hydra's job logging,
    conf/config.yaml), printed above any progress bar (``run`` redirects it through tqdm)."""
    LOG.info(message)


# ----------------------------------------------------------------------------- data


def needs_dataset(cfg: DictConfig) -> bool:
    """Finetuning reads offline data only to pretrain, align or replay it (from scratch needs
    none); an explicit data.path is always checked and recorded."""
    return (
        cfg.data.path is not None
        or cfg.offline.algo != "none"
        or cfg.vpa.enabled
        or cfg.finetune.offline_fraction > 0
    )


def collected_dataset(ctx: RunContext) -> DatasetIdentity:
    """The cached collected dataset for this (task, recipe, size, seed), collecting on a miss.
    Parallel jobs needing the same dataset collect it once: the others wait on its lock."""
    cfg = ctx.cfg
    collect_cfg = OmegaConf.to_object(cfg.data.collect)
    episodes = cfg.budget.collect_episodes
    key = content_key(ctx.task, collect_cfg, episodes, cfg.data.seed)
    path = Path(cfg.paths.cache_dir).expanduser() / "datasets" / f"{ctx.task.name}-{key}.hdf5"
    with locked(path, on_wait=lambda: log(f"waiting for another job to collect {path}")):
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
        seed_everything(cfg.data.seed, "collect")
        start = time.perf_counter()
        identity = collect_dataset(ctx.task, collect_cfg, episodes, cfg.data.seed, ctx.device, path)
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
        data = load_dsrl_dataset(path, task)
        identity = DatasetIdentity(path=str(path), sha256=sha256_file(path), source="file")
    else:
        if source == "collect" or task.custom:  # DSRL has no file for your own env
            identity = collected_dataset(ctx)
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
                identity = collected_dataset(ctx)
        data = load_dsrl_dataset(identity.path, task)
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


# bump when a change makes cached pretrained models stale (the reasons: benchmarks/README.md)
PRETRAINED_FORMAT = 7


def network_sizes(cfg: DictConfig) -> NetworkSizes:
    return NetworkSizes(
        hidden_sizes=list(cfg.finetune.hidden_sizes),
        cost_hidden_sizes=list(cfg.finetune.cost_hidden_sizes),
        num_reward_critics=cfg.finetune.num_reward_critics,
    )


def offline_namespace(metrics: dict[str, float]) -> dict[str, float]:
    """Offline training rows under ``offline/`` (``loss/actor`` -> ``offline/loss/actor``), so
    they never share a key, or a W&B x-axis, with the online rows."""
    return {k if k.startswith("offline/") else f"offline/{k}": v for k, v in metrics.items()}


def load_pretrained_entry(
    path: Path, spec: dict[str, Any], obs_dim: int, act_dim: int, device: torch.device
) -> Pretrained:
    """A cached pretrained model, refused with one clear line when its recorded settings
    (task, algorithm, sizes, dataset, ...) are not ``spec`` or its networks do not fit."""
    state = load_checkpoint(path)
    recorded = state["spec"] if isinstance(state.get("spec"), dict) else {}
    fix = "delete it to pretrain again"
    if recorded != spec:
        differ = sorted(k for k in spec if recorded.get(k) != spec[k])
        raise CheckpointError(
            f"{path} is not the pretrained model this run needs (its {', '.join(differ)} "
            f"differ); {fix}"
        )
    try:
        return Pretrained.from_state_dict(state["pretrained"], obs_dim, act_dim, device)
    except (KeyError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"{path} holds networks that do not fit ({first_line}); {fix}"
        ) from None


def pretrained_start(
    ctx: RunContext, identity: DatasetIdentity, data: dict[str, np.ndarray]
) -> tuple[Pretrained, dict[str, Any]]:
    """pi_0, Q_r, Q_c from the configured offline algorithm, cached by (task, algorithm, its
    config, steps, network sizes, cost limit, dataset hash, seed): sweep members reuse it."""
    cfg, task, device = ctx.cfg, ctx.task, ctx.device
    algo = cfg.offline.algo
    algo_cfg = OmegaConf.to_object(cfg.offline[algo])
    sizes = network_sizes(cfg)
    obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
    spec = {
        "format": PRETRAINED_FORMAT,
        "task": task.name,
        "algo": algo,
        "config": asdict(algo_cfg),
        "steps": cfg.offline.steps,
        "sizes": asdict(sizes),
        "cost_limit": task.cost_limit,
        "dataset_sha256": identity.sha256,
        "seed": cfg.offline.seed,
        "bootstrap_through_time_limit": cfg.bootstrap_through_time_limit,
    }
    key = json_digest(spec)[:16]
    path = Path(cfg.paths.cache_dir).expanduser() / "pretrained" / f"{task.name}-{algo}-{key}.pt"
    with locked(path, on_wait=lambda: log(f"waiting for another job to pretrain {path}")):
        cached = path.is_file()
        if cached:
            log(f"reusing pretrained {algo} model {path}")
            pretrained = load_pretrained_entry(path, spec, obs_dim, act_dim, device)
        else:
            log(f"pretraining {algo} for {cfg.offline.steps} steps on {identity.path}")
            seed_everything(cfg.offline.seed, "pretrain")
            start = time.perf_counter()
            learner = OFFLINE_ALGORITHMS[algo](
                obs_dim, act_dim, sizes, algo_cfg, task.cost_limit, task.max_episode_steps, device
            )
            buffer = ReplayBuffer.from_dataset(
                data, device, cfg.offline.seed, cfg.bootstrap_through_time_limit
            )
            done, last = 0, None
            resume = ctx.resuming("pretraining")
            if resume is not None and resume["spec"] == spec:
                learner.load_state_dict(resume["learner"])
                buffer.generator.set_state(resume["sampler"])
                set_rng_state(resume["rng"])
                done, last = resume["step"], resume["last"]
                log(f"resuming pretraining at step {done} of {cfg.offline.steps}")
            with tqdm(total=cfg.offline.steps, initial=done, desc=f"pretrain {algo}") as bar:

                def log_and_checkpoint(metrics: dict[str, float], step: int) -> None:
                    ctx.logger.log(offline_namespace(metrics), step, step_metric="offline/step")
                    bar.update(step - bar.n)
                    save_checkpoint(
                        ctx.run_dir / "checkpoints" / LAST,
                        {
                            "kind": "pretraining",
                            "task": task.name,
                            "task_spec": asdict(task),
                            "dims": [obs_dim, act_dim],
                            "config_digest": config_digest(cfg),
                            "wandb_run_id": ctx.logger.run_id,
                            "spec": spec,
                            "step": step,
                            "learner": learner.state_dict(),
                            "sampler": buffer.generator.get_state(),
                            "rng": rng_state(),
                            "last": metrics,
                        },
                    )

                pretrained = train_offline(
                    learner,
                    buffer,
                    cfg.offline.steps,
                    algo_cfg.batch_size,
                    log=log_and_checkpoint,
                    log_every=min(cfg.offline.log_every, cfg.offline.steps),
                    done=done,
                    last=last,
                )
            ctx.timings["pretrain_s"] = time.perf_counter() - start
            save_checkpoint(
                path,
                {
                    "kind": "pretrained",
                    "task": task.name,
                    "task_spec": asdict(task),
                    "dims": [obs_dim, act_dim],
                    "spec": spec,
                    "pretrained": pretrained.state_dict(),
                },
            )
    info = {
        "path": str(path),
        "cached": cached,
        "algo": algo,
        "lagrange_multiplier": pretrained.lagrange_multiplier,
        "metrics": pretrained.metrics,
    }
    ctx.logger.update_config({"pretrained": {"path": str(path), "cached": cached}})
    return pretrained, info


def stage_pretrain(ctx: RunContext) -> dict[str, Any]:
    """Pretrain pi_0 offline (or reuse the cached model) and evaluate it (offline_only)."""
    identity, data = resolve_dataset(ctx)
    pretrained, info = pretrained_start(ctx, identity, data)
    envs = make_eval_envs(ctx.task, ctx.cfg.eval_envs)
    result = evaluate(
        pretrained.actor,
        envs,
        ctx.task,
        ctx.cfg.budget.eval_episodes,
        ctx.cfg.seed,
        ctx.device,
        progress="evaluate pi_0",
    )
    envs.close()
    ctx.logger.log(result.metrics(), step=0)
    return {"dataset": identity.to_dict(), "pretrained": info, "eval": asdict(result)}


def run_vpa(
    ctx: RunContext, agent: SACLag, data: dict[str, np.ndarray], env: gym.Env
) -> dict[str, Any]:
    """Value Pre-Alignment of the agent's critics under its (frozen) actor, from the pretrained
    critics or fresh ones (``vpa.start``), with the paper's diagnostic before and after
    (METHOD.md section 3)."""
    cfg = ctx.cfg
    vpa_cfg = OmegaConf.to_object(cfg.vpa)
    seed_everything(cfg.seed, "vpa")
    offline = ReplayBuffer.from_dataset(
        data, ctx.device, cfg.seed, cfg.bootstrap_through_time_limit
    )
    sample = None
    if vpa_cfg.diagnostic_states > 0 and supports_placement(ctx.task.name):
        start = time.perf_counter()
        sample = diagnostic_sample(agent, env, data, vpa_cfg, cfg.seed)
        before = critic_diagnostic(agent, sample)
        ctx.timings["vpa_diagnostic_s"] = time.perf_counter() - start
    elif vpa_cfg.diagnostic_states > 0:
        log(f"VPA: no diagnostic for {ctx.task.name} (its agent cannot be placed at a state)")
    if vpa_cfg.start == "fresh":
        agent.reset_critics()
    log(f"VPA: aligning the {vpa_cfg.start} critics for {vpa_cfg.iterations} iterations")
    start = time.perf_counter()
    with tqdm(total=vpa_cfg.iterations, desc="VPA", unit="it") as bar:

        def log_vpa(metrics: dict[str, float], iteration: int) -> None:
            ctx.logger.log(metrics, iteration, step_metric="vpa/iteration")
            bar.update(iteration - bar.n)

        losses = align(agent, offline, vpa_cfg, log=log_vpa)
    ctx.timings["vpa_s"] = time.perf_counter() - start
    summary: dict[str, Any] = {"iterations": vpa_cfg.iterations, "start": vpa_cfg.start, **losses}
    if sample is not None:
        after = critic_diagnostic(agent, sample)
        summary["diagnostic"] = {"states": len(sample.obs), "before": before, "after": after}
        finite = {
            f"vpa/{when}/{k}": v
            for when, values in (("before", before), ("after", after))
            for k, v in values.items()
            if v is not None
        }
        ctx.logger.log(finite, vpa_cfg.iterations, step_metric="vpa/iteration")
        for kind in ACTION_KINDS:
            parts = [
                f"Spearman(Q_{name[0]}, MC) {_fmt(before[f'spearman_{name}_{kind}'])} -> "
                f"{_fmt(after[f'spearman_{name}_{kind}'])}, mean Q_{name[0]} "
                f"{before[f'q_{name}_{kind}']:.2f} -> {after[f'q_{name}_{kind}']:.2f} "
                f"(MC {after[f'mc_{name}_{kind}']:.2f})"
                for name in ("reward", "cost")
            ]
            log(f"VPA diagnostic, {kind} actions: " + "; ".join(parts))
    return summary


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def prepare_start(
    ctx: RunContext, agent: SACLag, controller_cfg: Any, env: gym.Env
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """What finetuning starts from: the dataset (when needed), the pretrained pi_0, Q_r, Q_c
    (cached), VPA, and the resolved lambda_init; returns their summary entries and the data."""
    cfg = ctx.cfg
    summary: dict[str, Any] = {}
    data = None
    if needs_dataset(cfg):
        identity, data = resolve_dataset(ctx)
        summary["dataset"] = identity.to_dict()
    if cfg.offline.algo != "none":
        pretrained, summary["pretrained"] = pretrained_start(ctx, identity, data)
        agent.load_pretrained(pretrained)
        if controller_cfg.lambda_init == "offline":
            controller_cfg.lambda_init = pretrained.lagrange_multiplier
    if cfg.vpa.enabled:
        summary["vpa"] = run_vpa(ctx, agent, data, env)
    if controller_cfg.lambda_init == "figure2":
        controller_cfg.lambda_init = cfg.env.figure2_lambda_init
    return summary, data


def stage_finetune(ctx: RunContext) -> dict[str, Any]:
    """Online SAC-Lag (METHOD.md section 4) with periodic evaluation and checkpoints; from the
    run dir's last checkpoint when resuming."""
    cfg, task, device = ctx.cfg, ctx.task, ctx.device
    agent_cfg = OmegaConf.to_object(cfg.finetune)
    env, eval_envs = make_env(task), make_eval_envs(task, cfg.eval_envs)
    obs_dim, act_dim = space_dims(env)
    agent = SACLag(obs_dim, act_dim, agent_cfg, device)
    controller_cfg = OmegaConf.to_object(cfg.pid)
    resume = ctx.resuming("sac_lag")
    if resume is None:
        summary, data = prepare_start(ctx, agent, controller_cfg, env)
    else:  # everything before finetuning is in the checkpoint
        summary, data = resume["progress"]["summary"], None
        controller_cfg.lambda_init = resume["progress"]["lambda_init"]
    offline = None
    if agent_cfg.offline_fraction > 0:  # hybrid replay samples the offline data online
        data = data if data is not None else resolve_dataset(ctx)[1]
        offline = ReplayBuffer.from_dataset(
            data, device, derived_seed(cfg.seed, "replay"), cfg.bootstrap_through_time_limit
        )
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
    learner = OnlineLearner(
        agent, controller, env, buffer, cfg.seed, offline=offline, total_iterations=iterations
    )

    def run_eval() -> EvalResult:
        return evaluate(agent.actor, eval_envs, task, cfg.budget.eval_episodes, cfg.seed, device)

    start = time.perf_counter()
    if resume is None:
        initial = run_eval()  # the starting policy's score, at update 0
        ctx.logger.log({"online/env_steps": 0, **initial.metrics(), **controller.terms()}, step=0)
        result = initial
    else:
        learner.load_state_dict(resume["learner"])
        set_rng_state(resume["rng"])
        initial = EvalResult(**resume["progress"]["initial_eval"])
        result = EvalResult(**resume["progress"]["last_eval"])
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
                {
                    "kind": "sac_lag",
                    "task": task.name,
                    "task_spec": asdict(task),
                    "experiment": cfg.experiment,
                    "seed": cfg.seed,
                    "dims": [obs_dim, act_dim],
                    "config_digest": config_digest(cfg),
                    "agent_config": asdict(agent_cfg),
                    "learner": learner.state_dict(),
                    "rng": rng_state(),
                    "wandb_run_id": ctx.logger.run_id,
                    "progress": {
                        "summary": summary,
                        "lambda_init": float(controller_cfg.lambda_init),
                        "initial_eval": asdict(initial),
                        "last_eval": asdict(result),
                    },
                },
            )
    bar.close()
    ctx.timings["finetune_s"] = time.perf_counter() - start
    env.close()
    eval_envs.close()
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
        "checkpoint": str(ctx.run_dir / "checkpoints" / LAST),
        "resumed_from_iteration": resumed_from,
    }


def stage_evaluate(ctx: RunContext) -> dict[str, Any]:
    """Evaluate a saved policy (checkpoint=<run dir or .pt>) on the task it was trained on."""
    cfg, task = ctx.cfg, ctx.task
    actor, meta = load_policy(cfg.checkpoint, ctx.device)
    envs = make_eval_envs(task, cfg.eval_envs)
    result = evaluate(
        actor, envs, task, cfg.budget.eval_episodes, cfg.seed, ctx.device, progress="evaluate"
    )
    envs.close()
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
    "all": stage_finetune,  # data (when needed) -> pretraining -> VPA -> finetuning
}


# ----------------------------------------------------------------------------- run


# Settings that do not change a run's numbers: a resumed run may differ in them.
RESUME_IGNORES = ("resume", "logger", "paths", "eval_envs", "sweep")


def config_digest(cfg: DictConfig) -> str:
    """SHA-256 of the resolved config without ``RESUME_IGNORES``: a run dir's checkpoint is
    resumed only by the config that wrote it."""
    container = OmegaConf.to_container(cfg, resolve=True)
    kept = {k: v for k, v in container.items() if k not in RESUME_IGNORES}
    return json_digest(kept)


RESUMABLE_STAGES = ("pretrain", "finetune", "all")


def resume_point(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint a rerun in ``run_dir`` continues from (``resume=auto`` and a pretraining
    or finetuning checkpoint there), or None to start over."""
    path = run_dir / "checkpoints" / LAST
    if cfg.resume == "never" or cfg.stage not in RESUMABLE_STAGES or not path.is_file():
        return None
    state = load_checkpoint(path)
    if state.get("config_digest") != config_digest(cfg):
        raise MarvelError(
            f"{run_dir} holds a run of another config (its checkpoint was written with other "
            "settings); rerun with that run's settings to resume it, with resume=never to start "
            "over in this dir (its metrics and checkpoint are replaced), or in another "
            "hydra.run.dir"
        )
    return state


def finished(cfg: DictConfig, resume: dict[str, Any] | None) -> bool:
    """Whether the finetuning checkpoint ``resume`` is at the end of ``cfg``'s budget."""
    if resume is None or resume["kind"] != "sac_lag":
        return False
    return resume["learner"]["counters"]["iteration"] >= cfg.budget.online_iterations


def resume_axis_step(checkpoint: dict[str, Any]) -> tuple[str, int]:
    """The x-axis and step a checkpoint was taken at (its metrics rows end there)."""
    if checkpoint["kind"] == "pretraining":
        return "offline/step", checkpoint["step"]
    return "online/update", checkpoint["learner"]["counters"]["updates"]


def make_logger(
    cfg: DictConfig,
    task: TaskSpec,
    run_dir: Path,
    sweep: SweepInfo | None,
    resume: dict[str, Any] | None,
) -> RunLogger:
    """The run's logger. W&B: grouped by sweep launch (else by experiment), ``job_type`` =
    experiment, tagged with what an ablation compares, so the W&B UI groups them in a click.
    A resumed run keeps its W&B run id and its metrics rows up to the checkpoint."""
    container = OmegaConf.to_container(cfg, resolve=True)
    tags = [
        task.name,
        f"offline:{cfg.offline.algo}",
        f"vpa:{'on' if cfg.vpa.enabled else 'off'}",
        f"pid:{cfg.pid.name}",
        f"seed:{cfg.seed}",
        f"budget:{cfg.budget.name}",
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
        run_id=None if resume is None else resume["wandb_run_id"],
        resume_at=None if resume is None else resume_axis_step(resume),
    )


def preflight(
    cfg: DictConfig, run_dir: Path
) -> tuple[torch.device, TaskSpec, dict[str, Any] | None]:
    """Every check that can refuse a command, and writes nothing: the config, the device, the
    task (stage=evaluate: the one the checkpoint was trained on) and whether ``run_dir``
    resumes. Returns the device, the task and the checkpoint to resume from (or None)."""
    validate(cfg)
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
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary.get("status") == "ok":  # nothing to do: its results stand as written
            log(f"{run_dir} holds this run, finished; resume=never starts it over")
            for line in verdict(summary, run_dir):
                log(line)
            return summary
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
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
            summary = STAGES[cfg.stage](ctx)
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
    """The run's result in words: the final policy's score, SAFE or UNSAFE, the starting
    policy's score where finetuning ran, and where the run's files are."""

    raw = summary["task"].get("reward_min") is None  # your own env without reference returns

    def score(result: dict[str, Any]) -> str:
        reward = "" if raw else f"normalized reward {result['normalized_reward']:.2f}, "
        return (
            f"reward {result['reward']:.1f}, cost {result['cost']:.1f} ({reward}normalized cost "
            f"{result['normalized_cost']:.2f})"
        )

    result = summary["eval"]
    lines = [
        f"result: {summary['task']['name']} {summary['experiment']} seed {summary['seed']}: "
        f"{'SAFE' if result['safe'] else 'UNSAFE'} (cost limit {result['cost_limit']:g}"
        f"{'; rewards raw: no reference returns' if raw else ''})",
        f"  final policy:    {score(result)}",
    ]
    if "initial_eval" in summary:
        lines.append(f"  starting policy: {score(summary['initial_eval'])}")
    lines.append(f"  metrics:    {run_dir / 'metrics.jsonl'}")
    checkpoint = summary.get("checkpoint") or (summary.get("pretrained") or {}).get("path")
    if checkpoint:
        lines.append(f"  checkpoint: {checkpoint}")
    if "online" in summary:
        lines.append(f"  curves:     python -m marvel.analysis {run_dir}")
    return lines
