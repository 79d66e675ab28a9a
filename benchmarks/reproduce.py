"""The runs behind docs/RESULTS.md, made a session at a time and kept in the repository.

    python benchmarks/reproduce.py --runs <scratch dir> [--until 03:20] [--jobs 2] \\
        [--suites default paper] [--tasks BallRun AntRun] [--presets ...] [--seeds ...] \\
        [--archive docs/results/runs] [--dry-run]

Runs every run of the report's suites (docs/REPRODUCING.md, "More tasks") that the archive
(``docs/results/runs/``) does not hold yet, ``--jobs`` at a time with one torch thread each, as
single runs ``python run.py experiment=<preset> env=<task> seed=<seed> <suite overrides>
hydra.run.dir=<scratch dir>/<suite>/<task>/<name>``. A finished run's evidence goes into the
archive at once (``marvel.report.archive``, same relative path), so a session's end loses at most
the runs in flight, and the next session, on any machine, starts where this one stopped. The
``smoke`` suite (``budget=smoke``, run only when named) checks the commands.

``--until HH:MM`` (UTC) starts no run that would end after it, judged by the wall time of the
same suite, task and method already in the archive, less the collection and pretraining (shared
by a task's runs, cached after the first). Each start and end is appended to the
archive's ``attempts.log``: the campaign's CPU time, interrupted attempts included.

The tasks of a suite run two by two, their runs interleaved, so that two jobs pretrain two tasks
side by side instead of one waiting on the other's pi_0 (``offline.seed=0``: one per task).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marvel.envs import BULLET_TASKS  # noqa: E402
from marvel.report.archive import archive  # noqa: E402

ARCHIVE = ROOT / "docs" / "results" / "runs"
ATTEMPTS = "attempts.log"  # in the archive
SEEDS = (0, 1, 2)
PRESETS = ("marvel", "warm_start", "from_scratch")
ABLATION = ("vpa_pid", "vpa_only", "apid_only")
# BallCircle and CarRun, then the two tasks the first look shows informative (docs/REPRODUCING.md)
ABLATION_TASKS = ("BallCircle", "CarRun", "BallRun", "DroneRun")
COMPAT_TASK = "BallCircle"
COMPAT_ALGOS = ("bearl", "bcql")
COMMON = ("logger=none", "torch_threads=1")
SUITES = {  # name -> the overrides of its every run
    "default": ("budget=default",),
    "paper": ("budget=paper", "budget.offline_steps=10000", "offline.seed=0"),
    "smoke": ("budget=smoke",),
}
REPORTED = ("default", "paper")
SHARED_STAGES = ("collect_s", "pretrain_s")  # summary.json's timings of a task's dataset and pi_0


@dataclass(frozen=True)
class Run:
    suite: str
    task: str
    preset: str
    seed: int
    offline: str = "cpq"

    @property
    def method(self) -> str:
        return self.preset if self.offline == "cpq" else f"{self.preset}_{self.offline}"

    @property
    def name(self) -> str:
        return f"{self.method}_s{self.seed}"

    @property
    def where(self) -> str:
        return f"{self.suite}/{self.task}/{self.name}"

    def command(self, run_dir: Path) -> list[str]:
        algo = [] if self.offline == "cpq" else [f"offline={self.offline}"]
        return [
            sys.executable,
            "run.py",
            f"experiment={self.preset}",
            f"env={self.task}",
            f"seed={self.seed}",
            *SUITES[self.suite],
            *algo,
            *COMMON,
            f"hydra.run.dir={run_dir}",
        ]


def task_runs(suite: str, task: str, seeds: list[int]) -> list[Run]:
    """One task's runs of a suite: the three presets, the ablation on its four tasks and the
    compatibility study on its one, at the paper's budget. The study's algorithms alternate, so
    that two jobs pretrain two of them side by side instead of one waiting on the other."""
    presets = PRESETS + (ABLATION if suite == "paper" and task in ABLATION_TASKS else ())
    runs = [Run(suite, task, preset, seed) for seed in seeds for preset in presets]
    if suite == "paper" and task == COMPAT_TASK:
        runs += [
            Run(suite, task, preset, seed, algo)
            for seed in seeds
            for preset in ("marvel", "warm_start")
            for algo in COMPAT_ALGOS
        ]
    return runs


def interleave(first: list[Run], second: list[Run]) -> Iterator[Run]:
    for i in range(max(len(first), len(second))):
        yield from (runs[i] for runs in (first, second) if i < len(runs))


def campaign(
    suites: list[str], tasks: list[str], presets: list[str], seeds: list[int]
) -> list[Run]:
    """Every run of those presets and seeds, in the order they start: suite by suite, two tasks
    at a time, their runs interleaved."""
    order = []
    for suite in suites:
        for i in range(0, len(tasks), 2):
            pair = [
                [run for run in task_runs(suite, task, seeds) if run.preset in presets]
                for task in tasks[i : i + 2]
            ]
            order += interleave(pair[0], pair[1] if len(pair) > 1 else [])
    return order


def archived(run: Run, archive_dir: Path) -> bool:
    return (archive_dir / run.where / "summary.json").is_file()


def expected_wall_s(run: Run, archive_dir: Path) -> float | None:
    """The median wall time of the archived runs of the same suite, task and method, less the
    collection and pretraining: a task's runs share those, made by its first run in a session
    and cached for the others."""
    times = []
    for path in (archive_dir / run.suite / run.task).glob(f"{run.method}_s*/summary.json"):
        timings = json.loads(path.read_text())["timings"]
        times.append(timings["total_s"] - sum(timings.get(k, 0.0) for k in SHARED_STAGES))
    return statistics.median(times) if times else None


def log_attempt(archive_dir: Path, lock: threading.Lock, run: Run, event: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with lock, (archive_dir / ATTEMPTS).open("a") as log:
        log.write(f"{stamp} {event} {run.where}\n")


def execute(
    run: Run, scratch: Path, archive_dir: Path, until: dt.datetime | None, lock: threading.Lock
) -> str:
    """Run one run unless it would end after ``until``; archive it."""
    expected = expected_wall_s(run, archive_dir)
    if until is not None and expected is not None:
        if dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expected) > until:
            return f"{run.where}: not started (about {expected:.0f} s, past --until)"
    run_dir = scratch / run.where
    run_dir.mkdir(parents=True, exist_ok=True)
    log_attempt(archive_dir, lock, run, "start")
    start = time.perf_counter()
    with (run_dir / "stdout.txt").open("a") as out:
        child = subprocess.run(run.command(run_dir), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    log_attempt(archive_dir, lock, run, f"end rc={child.returncode} wall_s={wall:.0f}")
    if child.returncode != 0:
        return f"{run.where}: FAILED ({child.returncode}, {run_dir / 'stdout.txt'}), {wall:.0f} s"
    with lock:
        archive(run_dir, archive_dir / run.where)
    return f"{run.where}: ok, {wall:.0f} s"


def parse_until(text: str | None) -> dt.datetime | None:
    """HH:MM UTC, today or, when that has passed, tomorrow."""
    if text is None:
        return None
    now = dt.datetime.now(dt.UTC)
    hour, minute = map(int, text.split(":"))
    until = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return until if until > now else until + dt.timedelta(days=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="scratch dir of the run dirs")
    parser.add_argument("--until", help="HH:MM UTC: start no run expected to end later")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (1 thread each)")
    parser.add_argument("--suites", nargs="+", choices=list(SUITES), default=list(REPORTED))
    parser.add_argument("--tasks", nargs="+", choices=BULLET_TASKS, default=list(BULLET_TASKS))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS + ABLATION))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help=f"default {ARCHIVE}")
    parser.add_argument("--dry-run", action="store_true", help="list the runs still to make")
    args = parser.parse_args()
    runs = campaign(args.suites, args.tasks, args.presets, args.seeds)
    todo = [run for run in runs if not archived(run, args.archive)]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs archived in {args.archive}", flush=True)
    scratch = args.runs.resolve()
    if args.dry_run:
        for run in todo:
            print(" ".join(run.command(scratch / run.where)[1:]))
        return
    os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")
    args.archive.mkdir(parents=True, exist_ok=True)
    until, lock = parse_until(args.until), threading.Lock()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        started = [pool.submit(execute, run, scratch, args.archive, until, lock) for run in todo]
        for done in as_completed(started):
            print(done.result(), flush=True)


if __name__ == "__main__":
    main()
