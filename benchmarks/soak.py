"""Soak test of issue 6's promises: a joblib sweep whose jobs are SIGKILLed at random and rerun.

    python benchmarks/soak.py [--json OUT] [--kills 8] [--n-jobs 2] [--seed 0]

Runs the smoke ablation sweep on BallCircle and CarRun with 3 seeds (6 presets x 2 envs x 3
seeds = 36 jobs, 8 finetuning iterations each, a checkpoint every 2) twice, each with a fresh
cache: once undisturbed (the reference), once while a killer SIGKILLs a random job process
every few seconds, rerunning the same command (same ``hydra.sweep.dir``, ``resume=auto``) until
every job has its summary. Then it checks that every summary is present and equals its
undisturbed twin (final evaluation, online counters, Lagrange terms), and prints how many jobs
were killed, how many resumed from a checkpoint and how many reruns the sweep took.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 8
OVERRIDES = (
    "+sweep=ablation",
    "env=BallCircle,CarRun",
    "seed=0,1,2",
    "budget=smoke",
    f"budget.online_iterations={ITERATIONS}",
    "budget.checkpoint_every=2",
    "budget.eval_every=4",
    "logger=none",
    "hydra/launcher=joblib",
)
COMPARED = ("eval", "initial_eval", "online", "lagrange")


def job_processes(pid: int) -> list[int]:
    """The joblib (loky) worker processes below ``pid``, which run the jobs."""
    workers = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"popen_loky" in cmdline:
            workers.append(child)
    return workers


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (from /proc: this benchmark is Linux-only)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sweep(work: Path, n_jobs: int, kill: random.Random | None, kills_left: int) -> tuple[int, int]:
    """One launch of the sweep into ``work``; with ``kill``, SIGKILL one random job process
    every 3-8 s while kills are left. Returns (exit code, kills made)."""
    environ = {**os.environ, "MARVEL_CACHE": str(work / "cache")}
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        *OVERRIDES,
        f"hydra.launcher.n_jobs={n_jobs}",
        f"hydra.sweep.dir={work / 'sweep'}",
    ]
    with (work / "log.txt").open("a") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=log)
        kills = 0
        next_kill = time.monotonic() + (kill.uniform(3, 8) if kill else float("inf"))
        while proc.poll() is None:
            if kill and kills < kills_left and time.monotonic() >= next_kill:
                workers = job_processes(proc.pid)
                if workers:
                    os.kill(kill.choice(workers), signal.SIGKILL)
                    kills += 1
                next_kill = time.monotonic() + kill.uniform(3, 8)
            time.sleep(0.05)
    return proc.returncode, kills


def summaries(work: Path) -> dict[str, dict[str, Any]]:
    return {
        path.parent.name: json.loads(path.read_text())
        for path in (work / "sweep").glob("*/summary.json")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs to deliver in all")
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib's parallel jobs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the killer's choices")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        reference, soaked = Path(tmp) / "reference", Path(tmp) / "soaked"
        for work in (reference, soaked):
            work.mkdir()
        start = time.perf_counter()
        code, _ = sweep(reference, args.n_jobs, None, 0)
        reference_s = time.perf_counter() - start
        expected = summaries(reference)
        if code != 0:
            raise RuntimeError(f"the undisturbed sweep failed; see {reference / 'log.txt'}")

        killer, kills, launches = random.Random(args.seed), 0, 0
        start = time.perf_counter()
        while len(summaries(soaked)) < len(expected) or launches == 0:
            launches += 1
            code, made = sweep(soaked, args.n_jobs, killer, args.kills - kills)
            kills += made
            if launches > args.kills + 3:
                raise RuntimeError(f"still incomplete after {launches} launches")
        soaked_s = time.perf_counter() - start
        got = summaries(soaked)

    resumed = [
        job
        for job, summary in got.items()
        if summary.get("resumed_from_iteration") not in (None, ITERATIONS)
    ]
    differ = sorted(
        job
        for job in expected
        if any(got.get(job, {}).get(k) != expected[job][k] for k in COMPARED)
    )
    results = {
        "jobs": len(expected),
        "finished": len(got),
        "kills": kills,
        "launches": launches,
        "resumed_mid_finetuning": len(resumed),
        "summaries_equal_to_undisturbed": len(expected) - len(differ),
        "differ": differ,
        "reference_wall_s": reference_s,
        "soaked_wall_s": soaked_s,
        "n_jobs": args.n_jobs,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        },
    }
    for key, value in results.items():
        print(f"{key:<32} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if not differ and len(got) == len(expected) else 1


if __name__ == "__main__":
    sys.exit(main())
