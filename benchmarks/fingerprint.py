"""Fingerprints of a fixed-seed smoke run of every preset, to show that a change of code is
not a change of behaviour.

    python benchmarks/fingerprint.py --out /tmp/before      # on the old commit
    python benchmarks/fingerprint.py --out /tmp/after       # on the new one
    python benchmarks/fingerprint.py --compare /tmp/before /tmp/after

Each preset runs at budget=smoke, seed 0, one torch thread, with no W&B, against a fresh cache
(so collection and pretraining run too), followed by ``stage=evaluate`` of Marvel's run dir.
A fingerprint is every ``metrics.jsonl`` row and the scores of ``summary.json``, without
wall-clock figures and paths; ``--compare`` lists every preset whose fingerprint differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_SCORES = ("eval", "initial_eval", "online", "lagrange", "vpa", "dataset", "pretrained")


def presets() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def run(out: Path, name: str, overrides: list[str], cache: Path) -> Path:
    run_dir = out / "runs" / name
    command = [
        sys.executable,
        "run.py",
        "budget=smoke",
        "seed=0",
        "torch_threads=1",
        "logger=none",
        "device=cpu",
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "MARVEL_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    child = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(f"{name} failed:\n{child.stdout[-2000:]}{child.stderr[-2000:]}")
    print(f"{name}: ok", flush=True)
    return run_dir


def without_clock(values: Any) -> Any:
    """``values`` without wall-clock figures (``perf/...``, ``offline/perf/...``) and paths
    (they differ between cache dirs; the contents, hashed, do not)."""
    if isinstance(values, dict):
        return {k: without_clock(v) for k, v in values.items() if "perf/" not in k and k != "path"}
    if isinstance(values, list):
        return [without_clock(v) for v in values]
    return values


def fingerprint(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    scores = {k: summary[k] for k in SUMMARY_SCORES if k in summary}
    return without_clock({"rows": rows, "scores": scores})


def record(out: Path) -> None:
    cache = out / "cache"
    prints: dict[str, Any] = {}
    for name in presets():
        prints[name] = fingerprint(run(out, name, [f"experiment={name}"], cache))
    marvel_dir = out / "runs" / "marvel"
    evaluated = run(out, "evaluate", ["stage=evaluate", f"checkpoint={marvel_dir}"], cache)
    prints["evaluate"] = fingerprint(evaluated)
    (out / "fingerprints.json").write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
    print(f"{len(prints)} fingerprints: {out / 'fingerprints.json'}")


def compare(before: Path, after: Path) -> int:
    old = json.loads((before / "fingerprints.json").read_text())
    new = json.loads((after / "fingerprints.json").read_text())
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    for name in differ:
        print(f"{name}: differs")
    names = old.keys() | new.keys()
    print(f"{len(names) - len(differ)} of {len(names)} identical")
    return 1 if differ else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="run every preset here and record fingerprints")
    group.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    record(args.out.resolve())


if __name__ == "__main__":
    main()
