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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from marvel.analysis.command import fail, run_command
from marvel.analysis.figures import plot_curves, plot_iqm
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
)
from marvel.analysis.stats import aggregate, curve_stats, group_runs, iqm_estimates
from marvel.analysis.tables import latex_tables, markdown_tables
from marvel.errors import AnalysisError
from marvel.fsutil import unwritable_reason

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


def analyse(args: argparse.Namespace) -> str:
    """Every output file of the runs ``args`` names, in ``args.out``; returns the Markdown tables
    and the list of files written."""
    if args.wandb:
        where = f"W&B {args.wandb}" + (f" group {args.group}" if args.group else "")
    else:
        where = ", ".join(map(str, args.dirs))
    if (reason := unwritable_reason(args.out)) is not None:
        raise AnalysisError(f"cannot write to --out {args.out} ({reason})")
    runs = load_wandb(args.wandb, args.group) if args.wandb else load_local(args.dirs)
    if not runs:
        raise AnalysisError(
            f"no finetuning runs (summary.json with stage all/finetune) under {where}"
        )
    written, markdown = write_outputs(label_methods(runs), args.out, args.reps, args.seed)
    return "\n".join([markdown, f"{len(runs)} runs; wrote:", *(f"  {path}" for path in written)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.wandb and is_single_run(args.dirs):
        summary = json.loads((args.dirs[0] / "summary.json").read_text())
        if not is_finetune_run(summary, str(args.dirs[0])):
            return fail(PROG, f"{args.dirs[0]} is not a finetuning run")
        path = plot_run(args.dirs[0], (args.out or args.dirs[0]) / "curves.png")
        print(f"wrote {path}")
        return 0
    return run_command(PROG, f"to --out {args.out}", lambda: analyse(args))
