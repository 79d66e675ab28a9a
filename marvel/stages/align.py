"""Stage 3, the aligned start: the finetuning agent loaded with pi_0, Q_r and Q_c, its critics
re-aligned by Value Pre-Alignment, with the paper's diagnostic before and after (METHOD.md
section 3), and the multiplier's starting value."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from marvel.context import RunContext, log, seed_everything
from marvel.data.buffer import ReplayBuffer
from marvel.placement import supports_placement
from marvel.sac_lag import SACLag
from marvel.stages.dataset import Dataset
from marvel.start import Pretrained
from marvel.vpa import ACTION_KINDS, align, critic_diagnostic, diagnostic_sample


def run_vpa(ctx: RunContext, agent: SACLag, dataset: Dataset, env: gym.Env) -> dict[str, Any]:
    """Value Pre-Alignment of the agent's critics under its (frozen) actor, from the pretrained
    critics or fresh ones (``vpa.start``), with the paper's diagnostic before and after."""
    cfg = ctx.cfg
    vpa_cfg = OmegaConf.to_object(cfg.vpa)
    seed_everything(cfg.seed, "vpa")
    offline = ReplayBuffer.from_dataset(
        dataset.arrays, ctx.device, cfg.seed, cfg.bootstrap_through_time_limit
    )
    sample = None
    if vpa_cfg.diagnostic_states > 0 and supports_placement(ctx.task.name):
        start = time.perf_counter()
        sample = diagnostic_sample(agent, env, dataset.arrays, vpa_cfg, cfg.seed)
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
    summary: dict[str, Any] = {
        "iterations": vpa_cfg.iterations,
        "start": vpa_cfg.start.value,
        **losses,
    }
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


def lambda_init(cfg: DictConfig, pretrained: Pretrained | None) -> float:
    """lambda_0: a number, the offline algorithm's multiplier (``offline``; config_checks.validate
    requires an offline algorithm) or the paper's Figure 2 value for the task (``figure2``)."""
    value = cfg.pid.lambda_init
    if value == "offline":
        return pretrained.lagrange_multiplier
    if value == "figure2":
        return cfg.env.figure2_lambda_init
    return float(value)


def aligned_start(
    ctx: RunContext,
    agent: SACLag,
    pretrained: Pretrained | None,
    dataset: Dataset | None,
    env: gym.Env,
) -> dict[str, Any]:
    """Load pi_0, Q_r, Q_c into ``agent`` (warm start) and run VPA on it (``vpa.enabled``);
    returns VPA's summary entry, if it ran."""
    if pretrained is not None:
        agent.load_pretrained(pretrained)
    return {"vpa": run_vpa(ctx, agent, dataset, env)} if ctx.cfg.vpa.enabled else {}
