"""The figures of ``python -m marvel.analysis`` (and of the report): normalized reward and cost
against updates, mean +- std per method, and the IQM with its confidence intervals."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from marvel.analysis.stats import IQM_METRICS


def draw_mean_std(
    axes: tuple[Any, Any], rows: Sequence[Mapping[str, Any]], label: str, color: str
) -> None:
    """One method's ``curve_stats`` rows on (reward, cost) axes: the mean, and +- std shaded."""
    x = [row["update"] for row in rows]
    for ax, name in zip(axes, ("reward", "cost"), strict=True):
        mean = np.array([row[f"{name}_mean"] for row in rows])
        std = np.array([row[f"{name}_std"] for row in rows], dtype=float)  # None: nan
        ax.plot(x, mean, color=color, label=label)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)


def plot_curves(env: str, rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Normalized reward and cost against updates, mean +- std per method, cost limit dashed."""
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax_reward, ax_cost = fig.subplots(1, 2)
    by_method: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    for i, (method, points) in enumerate(by_method.items()):
        draw_mean_std((ax_reward, ax_cost), points, method, f"C{i}")
    ax_cost.axhline(1.0, color="gray", linestyle="--", label="cost limit")
    for ax, name in ((ax_reward, "normalized reward"), (ax_cost, "normalized cost")):
        ax.set_xlabel("policy-gradient updates")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax_reward.legend(fontsize="small")
    ax_cost.legend(fontsize="small")
    fig.suptitle(f"{env} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def plot_iqm(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """One row per method: IQM (tick) and 95% CI (bar) of normalized reward and cost."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    fig = Figure(figsize=(10, 1.2 + 0.5 * len(methods)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, metric in zip(axes, IQM_METRICS, strict=True):
        for i, row in enumerate(r for r in rows if r["metric"] == metric):
            color = f"C{i}"
            ax.plot([row["ci_low"], row["ci_high"]], [i, i], color=color, linewidth=8, alpha=0.5)
            ax.plot([row["iqm"]], [i], color="black", marker="|", markersize=16)
        ax.set_xlabel(f"IQM of final {metric.replace('_', ' ')} (95% CI)")
        ax.grid(axis="x", alpha=0.3)
    axes[1].axvline(1.0, color="gray", linestyle="--", label="cost limit")
    axes[1].legend(fontsize="small")
    axes[0].set_yticks(range(len(methods)), methods)
    axes[0].set_ylim(-0.5, len(methods) - 0.5)
    fig.suptitle(
        f"Interquartile mean of the final scores over {rows[0]['n_envs']} env(s) x seeds "
        "(stratified-bootstrap 95% CI)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=150)
