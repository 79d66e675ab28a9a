"""One run's curves, for reading why it went where it went (``python -m marvel.analysis RUN``).

Six panels against policy-gradient updates (``online/update``), from the run's local
``metrics.jsonl``: evaluation and training reward, cost with the limit, lambda beside a PID
controller's gains relative to their initial values (aPID's drop to their floor K0 / 10 when the
cost falls to about 0, and lambda then barely moves; METHOD.md section 5), the critics'
estimates on the rollouts beside those episodes' discounted returns (``diag/*``), the two sides
of the actor loss (min Q_r against lambda Q_c), and KL(pi || pi_0) with the policy entropy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# panel title -> (metrics key, label) lines; "limit" draws the normalized cost limit
PANELS: dict[str, tuple[tuple[str, str], ...]] = {
    "normalized reward": (("eval/normalized_reward", "evaluation (deterministic)"),),
    "normalized cost": (("eval/normalized_cost", "evaluation (deterministic)"),),
    "lambda; PID gains / their initial values (log, right axis)": (("lagrange/lambda", "lambda"),),
    "critics vs. returns on the rollouts": (
        ("diag/q_reward", "min Q_r"),
        ("diag/mc_reward", "discounted reward return (scaled)"),
        ("diag/q_cost", "Q_c"),
        ("diag/mc_cost", "discounted cost return"),
    ),
    "actor loss: reward against cost term": (
        ("diag/q_reward", "min Q_r"),
        ("diag/lambda_q_cost", "lambda Q_c"),
    ),
    "policy: KL to pi_0 (log scale), entropy (right axis)": (("diag/kl_to_pi0", "KL(pi || pi_0)"),),
}


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(updates, values) of the finetuning rows that hold ``key``."""
    points = [(r["online/update"], r[key]) for r in rows if key in r and "online/update" in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_gains(ax: Axes, rows: Sequence[Mapping[str, Any]]) -> None:
    """A PID controller's gains K / K0 on ``ax``'s right axis (nothing for dual ascent)."""
    gains = ax.twinx()
    for key, color in (("lagrange/kp", "tab:red"), ("lagrange/ki", "tab:green")):
        x, y = series(rows, key)
        if x and y[0] > 0:
            gains.plot(x, [v / y[0] for v in y], color=color, alpha=0.6, label=key.split("/")[1])
    if gains.lines:
        gains.set_yscale("log")
        gains.legend(fontsize="small", loc="lower right")
    else:
        gains.remove()


def plot_run(run_dir: Path, path: Path) -> Path:
    """Draw ``run_dir``'s curves into ``path`` (PNG); returns it."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = read_rows(run_dir)
    task = summary["task"]
    limit = float(task["cost_limit"])
    fig = Figure(figsize=(15, 8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    for ax, (title, lines) in zip(axes, PANELS.items(), strict=True):
        for key, label in lines:
            x, y = series(rows, key)
            if x:
                ax.plot(x, y, label=label, marker="." if len(x) < 40 else None)
        if title.startswith("policy"):
            ax.set_yscale("symlog", linthresh=1e-2)
            x, y = series(rows, "diag/entropy")
            if x:
                ax.twinx().plot(x, y, color="tab:orange", label="entropy")
        if title.startswith("lambda"):
            plot_gains(ax, rows)
        if title == "normalized cost":
            x, y = series(rows, "train/episode_cost")
            if x:
                denominator = limit if limit > 0 else 1.0
                ax.plot(x, [v / denominator for v in y], label="training episodes", alpha=0.6)
            ax.axhline(1.0, color="gray", linestyle="--", label="cost limit")
        ax.set_title(title)
        ax.set_xlabel("policy-gradient updates")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    final = summary.get("eval", {})
    verdict = "SAFE" if final.get("normalized_cost", float("inf")) <= 1 else "UNSAFE"
    fig.suptitle(
        f"{task['name']} | {summary['experiment']} | seed {summary['seed']} | final normalized "
        f"reward {final.get('normalized_reward', float('nan')):.2f}, cost "
        f"{final.get('normalized_cost', float('nan')):.2f} ({verdict})"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
