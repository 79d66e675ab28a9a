"""Stage 5, evaluation: a policy's normalized reward and cost over ``budget.eval_episodes``
episodes, logged at step 0 (pi_0 after pretraining, or a saved policy: ``checkpoint=``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from marvel.checkpoint import load_policy
from marvel.context import RunContext, log
from marvel.evaluate import EvalResult, evaluate, make_eval_envs
from marvel.nets import SquashedGaussianActor


def evaluate_policy(ctx: RunContext, actor: SquashedGaussianActor, label: str) -> EvalResult:
    envs = make_eval_envs(ctx.task, ctx.cfg.eval_envs)
    result = evaluate(
        actor,
        envs,
        ctx.task,
        ctx.cfg.budget.eval_episodes,
        ctx.cfg.seed,
        ctx.device,
        progress=label,
    )
    envs.close()
    ctx.logger.log(result.metrics(), step=0)
    return result


def evaluate_checkpoint(ctx: RunContext) -> dict[str, Any]:
    """Evaluate a saved policy (checkpoint=<run dir or .pt>) on the task it was trained on."""
    actor, meta = load_policy(ctx.cfg.checkpoint, ctx.device)
    result = evaluate_policy(ctx, actor, "evaluate")
    log(
        f"{ctx.task.name}: reward {result.reward:.1f} (normalized {result.normalized_reward:.3f}), "
        f"cost {result.cost:.1f} (normalized {result.normalized_cost:.3f})"
    )
    return {"eval": asdict(result), "checkpoint": str(ctx.cfg.checkpoint), "source_run": meta}
