"""Figures and tables for a paper from many marvel runs, local or on W&B.

``python -m marvel.analysis <multirun dir> [more dirs] --out A`` reads every finetuning run
(``summary.json`` with stage ``all`` or ``finetune``, found recursively) with its
``metrics.jsonl`` and resolved ``.hydra/config.yaml``;
``python -m marvel.analysis <one run dir> [--out A]`` draws that run's own curves instead
(``marvel.analysis.run_plot``: reward, cost with the limit, lambda, Q estimates against returns,
the actor loss's two sides, KL to pi_0 and entropy) into ``A/curves.png`` (default: the run dir);
``python -m marvel.analysis --wandb ENTITY/PROJECT --group G --out A`` reads the same data
through the W&B public API. Runs are grouped by (env, method); the method is the ``experiment``
plus ``key=value`` for each config leaf that varies among that experiment's runs on the env
(seeds, logging and paths aside). Standard deviations are numpy's (ddof=0). Written to ``A``:

- ``curves_<env>.png``: normalized reward and cost against policy-gradient updates
  (``online/update``), mean +- std over seeds, at the updates every seed evaluated; the cost
  panel has the cost limit (normalized cost 1). ``curves_<env>.csv``: env, method, update,
  n_seeds, reward_mean, reward_std, cost_mean, cost_std.
- ``results.csv``: one row per run: env, method, experiment, seed, normalized_reward,
  normalized_cost, reward, cost, safe, cumulative_cost, updates, run_dir (final evaluation).
- ``table.md``, ``table.tex``: final normalized reward and cost per method and env (mean +- std),
  unsafe entries (mean normalized cost > 1) marked with a dagger (Markdown) or gray (LaTeX), the
  best safe entry per env in bold; then the cumulative online cost. ``table.json``: the same
  numbers, env -> method -> {reward_mean, reward_std, cost_mean, cost_std,
  cumulative_cost_mean, cumulative_cost_std, n_seeds, safe, best}.
- ``iqm.csv``, ``iqm.png``: interquartile mean of the final normalized reward and cost over
  (seeds x envs) with rliable's stratified-bootstrap 95% confidence intervals, for the methods
  run on every env: metric, method, iqm, ci_low, ci_high, n_seeds, n_envs.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from marvel.analysis.run_plot import plot_run
from marvel.analysis.runs import (
    FINAL_KEYS,
    PROG,
    RUN_FILES,
    RunRecord,
    is_finetune_run,
    label_methods,
    load_local,
    load_wandb,
    method_order,
    warn,
)
from marvel.analysis.tables import latex_tables, markdown_tables
from marvel.errors import AnalysisError
from marvel.fsutil import unwritable_reason

IQM_METRICS = ("normalized_reward", "normalized_cost")


def group_runs(runs: Iterable[RunRecord]) -> dict[str, dict[str, list[RunRecord]]]:
    """env -> method -> its runs ordered by seed (envs sorted, methods in the paper's order)."""
    groups: dict[str, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r.env, method_order(r.method), r.seed, r.source)):
        groups[run.env][run.method].append(run)
    return {env: dict(methods) for env, methods in groups.items()}


def mean_std(values: Iterable[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the deviation is None for one value."""
    array = np.asarray(list(values), dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None


def curve_stats(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Mean and std over ``runs`` of normalized reward and cost at each update that every run
    evaluated."""
    updates = sorted(set.intersection(*(set(run.curve) for run in runs)))
    rows = []
    for update in updates:
        reward_mean, reward_std = mean_std(run.curve[update][0] for run in runs)
        cost_mean, cost_std = mean_std(run.curve[update][1] for run in runs)
        rows.append(
            {
                "update": update,
                "n_seeds": len(runs),
                "reward_mean": reward_mean,
                "reward_std": reward_std,
                "cost_mean": cost_mean,
                "cost_std": cost_std,
            }
        )
    return rows


def mark_safe_and_best(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """``table`` (env -> method -> aggregates) with ``safe`` (mean normalized cost <= 1) and
    ``best`` (the highest mean normalized reward among the env's safe entries) added."""
    marked: dict[str, dict[str, dict[str, Any]]] = {}
    for env, entries in table.items():
        safe = {method: entry["cost_mean"] <= 1.0 for method, entry in entries.items()}
        best = max(
            (entry["reward_mean"] for method, entry in entries.items() if safe[method]),
            default=None,
        )
        marked[env] = {
            method: {
                **entry,
                "safe": safe[method],
                "best": safe[method] and entry["reward_mean"] == best,
            }
            for method, entry in entries.items()
        }
    return marked


def aggregate(
    groups: Mapping[str, Mapping[str, Sequence[RunRecord]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """env -> method -> mean and std over seeds of the final normalized reward and cost and
    the cumulative online cost, the seed count, and the safe/best marks."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for env, methods in groups.items():
        table[env] = {}
        for method, runs in methods.items():
            entry: dict[str, Any] = {}
            for name, key in (
                ("reward", "normalized_reward"),
                ("cost", "normalized_cost"),
                ("cumulative_cost", "cumulative_cost"),
            ):
                entry[f"{name}_mean"], entry[f"{name}_std"] = mean_std(
                    run.final[key] for run in runs
                )
            entry["n_seeds"] = len(runs)
            table[env][method] = entry
    return mark_safe_and_best(table)


def iqm_estimates(
    groups: Mapping[str, Mapping[str, Sequence[RunRecord]]], reps: int, seed: int
) -> list[dict[str, Any]]:
    """IQM over (seeds x envs) of the final normalized reward and cost, with rliable's
    stratified-bootstrap 95% CIs (``reps`` resamples, RandomState(``seed``)), for the methods
    run on every env; a method with unequal seed counts across envs uses its smallest count
    (its first runs by seed)."""
    from rliable import library as rly
    from rliable import metrics

    envs = list(groups)
    all_methods = set().union(*(set(methods) for methods in groups.values()))
    common = set.intersection(*(set(methods) for methods in groups.values()))
    methods = sorted(common, key=method_order)
    if left_out := sorted(all_methods - common, key=method_order):
        warn(f"IQM leaves out methods not run on every env: {'; '.join(left_out)}")
    if not methods:
        return []
    scores: dict[str, dict[str, np.ndarray]] = {metric: {} for metric in IQM_METRICS}
    n_seeds = {}
    for method in methods:
        counts = [len(groups[env][method]) for env in envs]
        n = n_seeds[method] = min(counts)
        if len(set(counts)) > 1:
            warn(f"{method} has {n} to {max(counts)} seeds across envs; its IQM uses {n} per env")
        for metric in IQM_METRICS:
            scores[metric][method] = np.array(
                [[groups[env][method][i].final[metric] for env in envs] for i in range(n)],
                dtype=float,
            )
    rows = []
    for metric in IQM_METRICS:
        # arch (under rliable) draws from numpy's global generator whatever random_state says:
        # seed it for the call, and put the caller's state back
        global_state = np.random.get_state()
        np.random.seed(seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # arch: RandomState deprecated
                point, interval = rly.get_interval_estimates(
                    scores[metric],
                    lambda x: np.array([metrics.aggregate_iqm(x)]),
                    reps=reps,
                    random_state=np.random.RandomState(seed),
                )
        finally:
            np.random.set_state(global_state)
        rows += [
            {
                "metric": metric,
                "method": method,
                "iqm": float(point[method][0]),
                "ci_low": float(interval[method][0, 0]),
                "ci_high": float(interval[method][1, 0]),
                "n_seeds": n_seeds[method],
                "n_envs": len(envs),
            }
            for method in methods
        ]
    return rows


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


CURVE_COLUMNS = (
    "env",
    "method",
    "update",
    "n_seeds",
    "reward_mean",
    "reward_std",
    "cost_mean",
    "cost_std",
)


RESULT_COLUMNS = ("env", "method", "experiment", "seed", *FINAL_KEYS, "run_dir")


IQM_COLUMNS = ("metric", "method", "iqm", "ci_low", "ci_high", "n_seeds", "n_envs")


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def result_rows(runs: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """The rows of results.csv: one per run, by env, method and seed."""
    return [
        {
            "env": run.env,
            "method": run.method,
            "experiment": run.experiment,
            "seed": run.seed,
            **run.final,
            "run_dir": run.source,
        }
        for methods in group_runs(runs).values()
        for method_runs in methods.values()
        for run in method_runs
    ]


def write_outputs(
    runs: Sequence[RunRecord], out: Path, reps: int, seed: int
) -> tuple[list[Path], str]:
    """Every output file for the labelled ``runs`` in ``out``; returns them and the Markdown
    tables."""
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    written = []
    for env, methods in groups.items():
        rows = [
            {"env": env, "method": method, **row}
            for method, method_runs in methods.items()
            for row in curve_stats(method_runs)
        ]
        written.append(write_csv(out / f"curves_{env}.csv", CURVE_COLUMNS, rows))
        plot_curves(env, rows, out / f"curves_{env}.png")
        written.append(out / f"curves_{env}.png")
    written.append(write_csv(out / "results.csv", RESULT_COLUMNS, result_rows(runs)))
    table = aggregate(groups)
    markdown = markdown_tables(table)
    for name, text in (
        ("table.md", markdown),
        ("table.tex", latex_tables(table)),
        ("table.json", json.dumps(table, indent=2) + "\n"),
    ):
        (out / name).write_text(text)
        written.append(out / name)
    iqm_rows = iqm_estimates(groups, reps, seed)
    if iqm_rows:
        written.append(write_csv(out / "iqm.csv", IQM_COLUMNS, iqm_rows))
        plot_iqm(iqm_rows, out / "iqm.png")
        written.append(out / "iqm.png")
    return written, markdown


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Curves, tables and IQM confidence intervals from marvel runs "
        "(local Hydra multirun dirs, or a W&B project with --wandb).",
    )
    parser.add_argument("dirs", nargs="*", type=Path, help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="output directory (one run dir: default that dir)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B")
    parser.add_argument("--group", help="W&B run group (with --wandb)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed (0)")
    args = parser.parse_args(argv)
    if bool(args.dirs) == bool(args.wandb):
        parser.error("give run directories or --wandb ENTITY/PROJECT (one of them)")
    if args.out is None and not is_single_run(args.dirs):
        parser.error("--out is required unless the one directory given is a run dir")
    if args.group and not args.wandb:
        parser.error("--group needs --wandb")
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def is_single_run(dirs: Sequence[Path]) -> bool:
    """One directory that is itself a run dir (its own summary.json and metrics.jsonl)."""
    return len(dirs) == 1 and all((dirs[0] / name).is_file() for name in RUN_FILES)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.wandb and is_single_run(args.dirs):
        summary = json.loads((args.dirs[0] / "summary.json").read_text())
        if not is_finetune_run(summary, str(args.dirs[0])):
            print(f"{PROG}: error: {args.dirs[0]} is not a finetuning run", file=sys.stderr)
            return 2
        path = plot_run(args.dirs[0], (args.out or args.dirs[0]) / "curves.png")
        print(f"wrote {path}")
        return 0
    if args.wandb:
        where = f"W&B {args.wandb}" + (f" group {args.group}" if args.group else "")
    else:
        where = ", ".join(map(str, args.dirs))
    try:
        if (reason := unwritable_reason(args.out)) is not None:
            raise AnalysisError(f"cannot write to --out {args.out} ({reason})")
        runs = load_wandb(args.wandb, args.group) if args.wandb else load_local(args.dirs)
        if not runs:
            raise AnalysisError(
                f"no finetuning runs (summary.json with stage all/finetune) under {where}"
            )
        written, markdown = write_outputs(label_methods(runs), args.out, args.reps, args.seed)
    except AnalysisError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{PROG}: error: cannot write to --out {args.out} ({err})", file=sys.stderr)
        return 2
    print(markdown)
    print(f"{len(runs)} runs; wrote:")
    for path in written:
        print(f"  {path}")
    return 0
