"""marvel's benchmark suite: rollout, evaluation, SAC-Lag updates, collection, the main command.

    python benchmarks/run.py [--json OUT] [--quick] [--env BallCircle] [--numerics MODE]

Every figure is measured under both CPU numerics (marvel/numerics.py), each in a process of its
own, one after the other, and printed side by side: ``portable`` (the default: one torch thread,
code paths every x86-64 CPU with AVX2 runs alike) and ``native`` (the CPU's fastest code, torch's
default thread count); ``--numerics portable`` or ``native`` measures one mode alone.

Each figure is set against a reference measured in the same process: marvel's rollout and
evaluation against a bare ``obs -> torch -> actor.act -> numpy -> env.step`` loop on the same env
and actor; marvel's SAC-Lag update against a minimal hand-written torch loop of the same math and
against the machine's own fp32 GEMM rate. Marvel and its reference alternate, round by round;
throughputs are the best round (other load only ever slows a run down), ratios the median of the
per-round ratios.
See benchmarks/README.md for what each figure means.

The sections: ``episodes.py`` (rollout, evaluation), ``updates.py`` (SAC-Lag updates, offline
steps), ``end_to_end.py`` (collection, the main command); ``suite.py`` holds what they share and
``regression.py`` the comparison with the recorded figures.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from end_to_end import bench_collect, bench_command, bench_main_command
from episodes import StepCounter, bench_eval, bench_rollout
from marvel import numerics
from marvel.envs import TASKS, make_env, space_dims, task_spec
from marvel.errors import MarvelError
from marvel.nets import SquashedGaussianActor
from marvel.start import NetworkSizes
from regression import compare_with_baseline, flatten, print_table, speedups
from suite import FULL, QUICK, ROOT, SEED
from updates import bench_offline, bench_updates

RECORDS = ROOT / "benchmarks" / "records"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="small sizes, no main command")
    parser.add_argument("--env", default="BallCircle", choices=TASKS, help="task to run")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="also run `python run.py env=<env> budget=paper` end to end (hours on a CPU)",
    )
    parser.add_argument(
        "--numerics",
        choices=(*numerics.MODES, "both"),
        default="both",
        help="measure in this numerics mode, or in both side by side (default)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="figures to compare with (default: benchmarks/records/reference_<full|quick>.json"
        ", the reference figures of benchmarks/README.md)",
    )
    return parser.parse_args()


def machine_info(device: torch.device) -> dict[str, Any]:
    return {
        "cpu": numerics.cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


PORTABLE_COST = 0.85  # portable below 0.85x native's speed: costs more than 15%


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure in each numerics mode (a child process each, one after the other), and
    portable's speed relative to native's for each throughput and time (< 1: portable slower)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in numerics.MODES:
            out = Path(tmp) / f"{mode}.json"
            # this command's arguments, the later --numerics and --json overriding its own
            command = [sys.executable, __file__, *sys.argv[1:], "--numerics", mode, "--json", out]
            print(f"[bench] numerics={mode} ...", file=sys.stderr, flush=True)
            subprocess.run(command, check=True, env=numerics.environment(mode), stdout=sys.stderr)
            results[mode] = json.loads(out.read_text())
    results["portable_speed"] = speedups(flatten(results["portable"]), flatten(results["native"]))
    return results


def print_side_by_side(results: dict[str, Any]) -> None:
    portable, native = flatten(results["portable"]), flatten(results["native"])
    speed = results["portable_speed"]
    width = max(map(len, portable))
    print(f"{'figure':<{width}}  {'portable':>12}  {'native':>12}  portable / native speed")
    for name, value in portable.items():
        if name.startswith("vs_baseline"):
            continue
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (value, native.get(name))]
        ratio = speed.get(name)
        flag = "  (costs > 15%)" if ratio is not None and ratio < PORTABLE_COST else ""
        note = f"{ratio:.2f}x{flag}" if ratio is not None else ""
        print(f"{name:<{width}}  {cells[0]:>12}  {cells[1]:>12}  {note}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure in this process's numerics mode ``args.numerics``."""
    sizes = QUICK if args.quick else FULL
    threads = numerics.torch_threads(args.numerics, 0)
    torch.set_num_threads(threads or torch.get_num_threads())  # pinned and reported
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task = task_spec(args.env)
    env_conf = OmegaConf.load(ROOT / "conf" / "env" / f"{task.name}.yaml")
    networks = NetworkSizes(**OmegaConf.to_container(env_conf.networks))
    env = StepCounter(make_env(task.name, seed=SEED))
    obs_dim, act_dim = space_dims(env)
    torch.manual_seed(SEED)
    actor = SquashedGaussianActor(obs_dim, act_dim, networks.hidden_sizes).to(device)

    results: dict[str, Any] = {
        "machine": machine_info(device),
        "settings": {
            "task": task.name,
            "quick": args.quick,
            "device": str(device),
            "numerics": args.numerics,
            "hidden_sizes": networks.hidden_sizes,  # actor and Q_r
            "cost_hidden_sizes": networks.cost_hidden_sizes,  # Q_c
        },
    }
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "rollout": lambda: bench_rollout(env, actor, device, sizes),
        "eval": lambda: bench_eval(env, actor, task, device, sizes),
        "update": lambda: bench_updates(task, obs_dim, act_dim, networks, device, sizes),
        "offline": lambda: bench_offline(task, obs_dim, act_dim, networks, device, sizes),
        "collect": lambda: bench_collect(task, device, sizes),
        "main_command": lambda: bench_main_command(sizes),
    }
    if args.paper:
        sections["paper_command"] = lambda: bench_command([f"env={task.name}", "budget=paper"])
    for name, bench in sections.items():
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results[name] = bench()
        print(f"[bench] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    env.close()

    baseline = args.baseline or RECORDS / f"reference_{'quick' if args.quick else 'full'}.json"
    if baseline.is_file():
        results["vs_baseline"] = compare_with_baseline(results, json.loads(baseline.read_text()))
    return results


def main() -> None:
    args = parse_args()
    if args.numerics == "both":
        results = side_by_side(args)
        print_side_by_side(results)
    else:
        try:
            numerics.require(args.numerics)
        except MarvelError:  # numpy and torch loaded in another mode: again, in this one
            environment = numerics.environment(args.numerics)
            os.execve(sys.executable, [sys.executable, *sys.argv], environment)
        results = measure(args)
        print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
