"""Soak test of resume and fault handling: a joblib sweep whose jobs are SIGKILLed at random
and rerun.

    python benchmarks/soak.py [--json OUT] [--kills 8] [--n-jobs 2] [--seed 0]

Runs the smoke ablation sweep on BallCircle and CarRun with 3 seeds (6 presets x 2 envs x 3
seeds = 36 jobs, 8 finetuning iterations each, a checkpoint every 2) twice, each with a fresh
cache: once undisturbed (the reference), once while a killer SIGKILLs a random job process at a
random moment of a launch (after 1-6 more jobs have finished, plus 0-6 s), ``--kills``
times, rerunning the same command (same ``hydra.sweep.dir``, ``resume=auto``) until every job
has its summary. Then it checks that every summary is present and equals its undisturbed
twin (final evaluation, online counters, Lagrange terms), and prints how many job processes were
killed, how many jobs resumed inside pretraining or finetuning and how many launches the sweep took.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
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


def sweep(
    work: Path, n_jobs: int, kill_after: tuple[int, float] | None, rng: random.Random
) -> bool:
    """One launch of the sweep into ``work``. With ``kill_after`` = (n, s): once n more jobs
    have finished than before the launch, wait s seconds and SIGKILL a random job process
    (each killed launch makes progress, and the kill lands anywhere in the next jobs). Returns
    whether a job process was killed."""
    environ = {**os.environ, "MARVEL_CACHE": str(work / "cache")}
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        *OVERRIDES,
        f"hydra.launcher.n_jobs={n_jobs}",
        f"hydra.sweep.dir={work / 'sweep'}",
    ]
    finished_before, killed, deadline = set(summaries(work)), False, None
    with (work / "log.txt").open("a") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=log)
        while proc.poll() is None:
            if kill_after is not None and not killed:
                newly_finished = set(summaries(work)) - finished_before
                if deadline is None and len(newly_finished) >= kill_after[0]:
                    deadline = time.monotonic() + kill_after[1]
                workers = job_processes(proc.pid)
                if deadline is not None and time.monotonic() >= deadline and workers:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    killed = True
            time.sleep(0.2)
    return killed


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
        sweep(reference, args.n_jobs, None, random.Random(args.seed))
        reference_s = time.perf_counter() - start
        expected = summaries(reference)
        if not expected:
            raise RuntimeError(f"the undisturbed sweep failed: {reference / 'log.txt'}")

        # Launches lose a job process until ``kills`` kills are made; the next launch (the same
        # command) resumes every job from its checkpoint.
        killer, kills, launches = random.Random(args.seed), 0, 0
        start = time.perf_counter()
        while len(summaries(soaked)) < len(expected) or launches == 0:
            kill_after = (killer.randint(1, 6), killer.uniform(0, 6))
            kills += sweep(soaked, args.n_jobs, kill_after if kills < args.kills else None, killer)
            launches += 1
            if launches > 2 * args.kills + 3:
                raise RuntimeError(f"still incomplete after {launches} launches")
        soaked_s = time.perf_counter() - start
        got = summaries(soaked)

        log = (soaked / "log.txt").read_text()
    # Every launch reruns all jobs: finished ones resume at their last iteration and stop.
    resumes = [int(m) for m in re.findall(r"resuming at iteration (\d+) of", log)]
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
        "resumed_mid_finetuning": sum(0 < k < ITERATIONS for k in resumes),
        "resumed_mid_pretraining": log.count("resuming pretraining at step"),
        "reentered_finished": resumes.count(ITERATIONS),
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
