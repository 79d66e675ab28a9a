"""Fingerprints of fixed-seed runs, to show that a change of code is not a change of numbers,
and that a CPU or a core count is not either.

    python benchmarks/fingerprint.py --out /tmp/before      # on the old commit
    python benchmarks/fingerprint.py --out /tmp/after       # on the new one
    python benchmarks/fingerprint.py --compare /tmp/before /tmp/after
    python benchmarks/fingerprint.py --record-golden        # rewrite tests/golden_fingerprints.json
    python benchmarks/fingerprint.py --digest RUN_DIR ...   # a short digest of each run's numbers

``--out``: each preset runs at budget=smoke, seed 0, one torch thread, with no W&B, against a
fresh cache (so collection and pretraining run too), followed by ``stage=evaluate`` of Marvel's
run dir. A fingerprint is every ``metrics.jsonl`` row and the scores of ``summary.json``, without
wall-clock figures and paths; ``--compare`` lists every preset whose fingerprint differs.
``--record-golden``: the golden test's runs (``GOLDEN_PRESETS`` on BallCircle at budget=smoke,
seed 0, numerics=portable), whose fingerprints tests/test_golden.py compares exactly; a change
of code meant to change numbers re-records them in the same commit and says why.
``--digest``: the SHA-256 of each run dir's fingerprint and of its dataset, to compare a run
across machines and core counts (benchmarks/README.md lists where they agree).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from marvel import numerics
from marvel.fsutil import json_digest

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_SCORES = ("eval", "initial_eval", "online", "lagrange", "vpa", "dataset", "pretrained")
GOLDEN = ROOT / "tests" / "golden_fingerprints.json"
GOLDEN_PRESETS = ("marvel", "from_scratch")
GOLDEN_OVERRIDES = ("env=BallCircle", "numerics=portable")


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


def golden_fingerprints(out: Path) -> dict[str, Any]:
    """The golden test's runs, into ``out`` (their own fresh cache), and their fingerprints."""
    return {
        name: fingerprint(run(out, name, [f"experiment={name}", *GOLDEN_OVERRIDES], out / "cache"))
        for name in GOLDEN_PRESETS
    }


def record_golden() -> None:
    with tempfile.TemporaryDirectory() as out:
        prints = golden_fingerprints(Path(out))
    golden = {"recorded_on": numerics.cpu_model(), "fingerprints": prints}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"{len(prints)} golden fingerprints: {GOLDEN}")


def first_difference(recorded: Any, got: Any, where: str = "") -> str | None:
    """Where ``got`` first differs from ``recorded`` (a key path and both values), or None."""
    if isinstance(recorded, dict) and isinstance(got, dict):
        for key in sorted(recorded.keys() | got.keys()):
            if key not in recorded or key not in got:
                return f"{where}[{key!r}] only in {'got' if key in got else 'recorded'}"
            found = first_difference(recorded[key], got[key], f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(recorded, list) and isinstance(got, list):
        for i, (a, b) in enumerate(zip(recorded, got, strict=False)):
            found = first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        if len(recorded) != len(got):
            return f"{where}: {len(recorded)} entries recorded, {len(got)} got"
        return None
    return None if recorded == got else f"{where}: recorded {recorded!r}, got {got!r}"


def digest(run_dir: Path) -> str:
    """A run's numbers in one line: its fingerprint's and its dataset's SHA-256 (12 digits)."""
    prints = fingerprint(run_dir)
    dataset = (prints["scores"].get("dataset") or {}).get("sha256") or "none"
    return f"{json_digest(prints)[:12]} dataset {dataset[:12]}"


def compare(before: Path, after: Path) -> int:
    old = json.loads((before / "fingerprints.json").read_text())
    new = json.loads((after / "fingerprints.json").read_text())
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    for name in differ:
        print(f"{name}: differs at {first_difference(old.get(name), new.get(name))}")
    names = old.keys() | new.keys()
    print(f"{len(names) - len(differ)} of {len(names)} identical")
    return 1 if differ else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="run every preset here and record fingerprints")
    group.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    group.add_argument("--record-golden", action="store_true", help=f"rewrite {GOLDEN.name}")
    group.add_argument("--digest", type=Path, nargs="+", metavar="RUN_DIR")
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if args.record_golden:
        record_golden()
    elif args.digest:
        for run_dir in args.digest:
            print(f"{run_dir}: {digest(run_dir)}")
    else:
        record(args.out.resolve())


if __name__ == "__main__":
    main()
