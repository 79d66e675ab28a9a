"""Statistics over seeds and envs of finished runs: the runs grouped by env and method, mean and
sample std, a run's scores over the last third of its updates, the mean curve over seeds, the
results table's aggregates with the safe and best marks, and the interquartile mean with
rliable's stratified-bootstrap confidence intervals."""

from __future__ import annotations

import math
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from marvel.analysis.runs import RunRecord, method_order, warn

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


def last_third(record: RunRecord) -> tuple[float, float]:
    """Mean normalized reward and cost of the run's evaluations after two thirds of its updates
    (NaN where none falls there): the report's late scores and the tuner's objective."""
    updates = record.final["updates"]
    points = [v for update, v in sorted(record.curve.items()) if 3 * update > 2 * updates]
    if not points:
        return math.nan, math.nan
    return float(np.mean([p[0] for p in points])), float(np.mean([p[1] for p in points]))


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


def _method_seed(seed: int, method: str) -> int:
    """The bootstrap seed of one method: ``seed`` and the method's name, so that its interval
    does not depend on which other methods are in the table."""
    return zlib.crc32(f"{seed}:{method}".encode())


def _iqm_interval(scores: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    """IQM of a (seeds x envs) score matrix and its stratified-bootstrap 95% CI, drawn from
    RandomState(``seed``)."""
    from rliable import library as rly
    from rliable import metrics

    # arch (under rliable) draws from numpy's global generator whatever random_state says:
    # seed it for the call, and put the caller's state back
    global_state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arch: RandomState deprecated
            point, interval = rly.get_interval_estimates(
                {"m": scores},
                lambda x: np.array([metrics.aggregate_iqm(x)]),
                reps=reps,
                random_state=np.random.RandomState(seed),
            )
    finally:
        np.random.set_state(global_state)
    return float(point["m"][0]), float(interval["m"][0, 0]), float(interval["m"][1, 0])


def iqm_estimates(
    groups: Mapping[str, Mapping[str, Sequence[RunRecord]]], reps: int, seed: int
) -> list[dict[str, Any]]:
    """IQM over (seeds x envs) of the final normalized reward and cost, with rliable's
    stratified-bootstrap 95% CIs (``reps`` resamples; each method's own RandomState, from
    ``seed`` and its name), for the methods run on every env; a method with unequal seed counts
    across envs uses its smallest count (its first runs by seed)."""
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
        for method in methods:
            method_seed = _method_seed(seed, method)
            point, low, high = _iqm_interval(scores[metric][method], reps, method_seed)
            rows.append(
                {
                    "metric": metric,
                    "method": method,
                    "iqm": point,
                    "ci_low": low,
                    "ci_high": high,
                    "n_seeds": n_seeds[method],
                    "n_envs": len(envs),
                }
            )
    return rows
