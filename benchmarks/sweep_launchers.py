"""Wall time of the smoke ablation sweep under the basic and the joblib launcher.

    python benchmarks/sweep_launchers.py [--json OUT] [--n-jobs 2] [--env BallCircle]
        [--budget smoke] [-- more overrides, e.g. experiment=from_scratch seed=0,1,2,3]

Runs ``python run.py -m +sweep=ablation env=<env> budget=<budget> <overrides>`` (at smoke: 6
presets x 2 seeds) once per launcher, each with a fresh cache (so each pays for one dataset
collection and one pretraining per seed, computed once under the cache lock) and W&B offline, as
a user runs it; prints the wall times and the joblib speed-up. Launchers run one after the
other, never at once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def time_sweep(overrides: list[str], work: Path) -> tuple[float, int]:
    """Seconds for one ablation sweep with ``overrides``, in a fresh cache; and its job count."""
    sweep_dir = work / "sweep"
    environ = {
        **os.environ,
        "MARVEL_CACHE": str(work / "cache"),
        "DSRL_DATASET_DIR": str(work / "dsrl"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "+sweep=ablation",
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=environ, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    jobs = [d for d in sweep_dir.iterdir() if d.is_dir() and d.name.split("_")[0].isdigit()]
    missing = [d for d in jobs if not (d / "summary.json").is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(jobs)} jobs wrote no summary in {sweep_dir}")
    return seconds, len(jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--env", default="BallCircle")
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides (after --)")
    args = parser.parse_args(argv)
    common = [f"env={args.env}", f"budget={args.budget}", *args.overrides]
    launchers = {
        "basic": [],
        "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
    }
    wall: dict[str, float] = {}
    for name, launcher in launchers.items():
        with tempfile.TemporaryDirectory(prefix=f"marvel-sweep-{name}-") as work:
            wall[name], jobs = time_sweep([*common, *launcher], Path(work))
        print(f"{name:>7}: {wall[name]:6.1f} s for {jobs} jobs", flush=True)
    speedup = wall["basic"] / wall["joblib"]
    print(f"joblib speed-up over basic: {speedup:.2f}x (n_jobs={args.n_jobs})")
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "overrides": common,
        "jobs": jobs,
        "n_jobs": args.n_jobs,
        "wall_s": wall,
        "joblib_speedup": speedup,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
