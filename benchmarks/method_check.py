"""Does it work? The paper's comparison on a few tasks, seeds and methods.

    python benchmarks/method_check.py --out benchmarks/results/method_check \\
        [--envs BallCircle CarRun] [--seeds 0 1 2] [--methods marvel warm_start ...] \\
        [--jobs 2] [--] [extra Hydra overrides, e.g. budget.offline_steps=10000 offline.seed=0]

Runs ``python run.py experiment=<method> env=<env> seed=<seed> budget=paper logger=none`` for
every combination (``--jobs`` at a time, one torch thread each; a run whose ``summary.json``
exists is kept and an unfinished one resumes from its last checkpoint, so rerunning the same
command continues an interrupted check), then reads each run's local
``metrics.jsonl``/``summary.json`` and prints, per env and method (mean +- std over seeds): the
normalized reward and cost of the deterministic policy at 0, 25, 50 and 100% of the finetuning
updates and its mean over the evaluations in the last third of the updates, the cumulative online
cost, the final lambda and the wall time. Writes ``table.md`` and ``results.json`` (with each
run's VPA losses and diagnostic) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "marvel",
    "warm_start",
    "from_scratch",
    "vpa_only",
    "apid_only",
    "vpa_pid",
    "target_noise",
    "kl_to_prior",
    "hybrid_replay",
    "jsrl",
    "pex",
)
FRACTIONS = (0.0, 0.25, 0.5, 1.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--envs", nargs="+", default=["BallCircle", "CarRun"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--budget", default="paper", help="budget= of every run (default paper)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (1 thread each)")
    parser.add_argument("--report-only", action="store_true", help="aggregate, run nothing")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    return parser.parse_args()


def run_one(
    run_dir: Path, env: str, method: str, seed: int, budget: str, overrides: list[str]
) -> None:
    """One run in its own process; its output goes to ``run_dir/stdout.txt``."""
    if (run_dir / "summary.json").is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)  # an unfinished run resumes from its checkpoint
    command = [
        sys.executable,
        "run.py",
        f"experiment={method}",
        f"env={env}",
        f"seed={seed}",
        f"budget={budget}",
        "logger=none",
        "torch_threads=1",
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    with (run_dir / "stdout.txt").open("a") as out:
        child = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    status = "ok" if child.returncode == 0 else f"FAILED ({child.returncode})"
    print(f"{env} {method} seed {seed}: {status}, {time.perf_counter() - start:.0f} s", flush=True)


def eval_curve(run_dir: Path) -> list[dict[str, float]]:
    """The evaluation rows of a finetuning run, in update order."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval/normalized_reward" in r and "online/update" in r]


def at_fraction(curve: list[dict[str, float]], fraction: float) -> dict[str, float]:
    """The evaluation row closest to ``fraction`` of the run's updates."""
    last = curve[-1]["online/update"]
    return min(curve, key=lambda r: abs(r["online/update"] - fraction * last))


def run_figures(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    curve = eval_curve(run_dir)
    figures: dict[str, Any] = {
        "updates": summary["online"]["updates"],
        "cumulative_cost": summary["online"]["cumulative_cost"],
        "final_lambda": summary["lagrange"]["lagrange/lambda"],
        "wall_s": summary["timings"]["total_s"],
        "timings": summary["timings"],
        "dataset": summary.get("dataset"),
    }
    for fraction in FRACTIONS:
        row = at_fraction(curve, fraction)
        figures[f"reward@{fraction:.0%}"] = row["eval/normalized_reward"]
        figures[f"cost@{fraction:.0%}"] = row["eval/normalized_cost"]
    last = curve[-1]["online/update"]
    figures["cost last third"] = float(
        np.mean([r["eval/normalized_cost"] for r in curve if r["online/update"] >= 2 * last / 3])
    )
    if "vpa" in summary:
        figures["vpa"] = summary["vpa"]
    return figures


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def report(out: Path, envs: list[str], methods: list[str], seeds: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    lines = []
    columns = [f"{name}@{f:.0%}" for f in FRACTIONS for name in ("reward", "cost")]
    columns.append("cost last third")
    header = ["env", "method", *columns, "cum. cost", "final λ", "wall s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for env in envs:
        for method in methods:
            runs = [out / env / method / f"seed{s}" for s in seeds]
            done = [r for r in runs if (r / "summary.json").is_file()]
            if not done:
                continue
            per_seed = [run_figures(r) for r in done]
            results.setdefault(env, {})[method] = per_seed
            cells = [mean_std([f[c] for f in per_seed]) for c in columns]
            cells += [
                f"{np.mean([f['cumulative_cost'] for f in per_seed]):.0f}",
                f"{np.mean([f['final_lambda'] for f in per_seed]):.3g}",
                f"{np.mean([f['wall_s'] for f in per_seed]):.0f}",
            ]
            seeds_note = "" if len(done) == len(runs) else f" ({len(done)}/{len(runs)} seeds)"
            lines.append(f"| {env} | {method}{seeds_note} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    args = parse_args()
    args.out = args.out.resolve()
    if not args.report_only:
        os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")
        jobs = [
            (
                args.out / env / method / f"seed{seed}",
                env,
                method,
                seed,
                args.budget,
                args.overrides,
            )
            for env in args.envs
            for seed in args.seeds
            for method in args.methods
        ]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda job: run_one(*job), jobs))
    report(args.out, args.envs, args.methods, args.seeds)


if __name__ == "__main__":
    main()
