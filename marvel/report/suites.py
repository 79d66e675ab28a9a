"""The runs a report reads, grouped into suites: each finished finetuning run with its own
files' contents and its suite (budget, offline steps, whose pi_0, dataset size), the checks that
refuse runs which must not pool, and the commands that made them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from marvel.analysis.runs import RunRecord, load_local, method_order, names_method, read_run_files
from marvel.errors import AnalysisError

MAIN_ALGOS = ("cpq", "none")  # the main table: on top of CPQ, and from scratch
BOOKKEEPING = ("budget.seeds", "resume", "eval_envs", "stage", "numerics")  # never pooled apart


@dataclass(frozen=True)
class Run:
    """A finished finetuning run with its own files' contents."""

    record: RunRecord
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    pretraining: str  # whose pi_0: "pi_0 per seed" or "offline.seed=<n>" (one for every seed)

    @property
    def env(self) -> str:
        return self.record.env

    @property
    def experiment(self) -> str:
        return self.record.experiment

    @property
    def algo(self) -> str:
        return str(self.record.config.get("offline.algo", "none"))

    @property
    def suite(self) -> str:
        budget = self.summary["budget"]
        return (
            f"budget={budget['name']}, {budget['offline_steps']} offline steps, "
            f"{self.pretraining}, {budget['collect_episodes']} collected episodes"
        )


def pretraining(run_dir: Path) -> str:
    """Whose pi_0 a run starts from, as its config wrote ``offline.seed``: the run's own seed
    (the default ``${seed}``) or one seed for every run."""
    raw = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["offline"]["seed"]
    return "pi_0 per seed" if raw == "${seed}" else f"offline.seed={raw}"


def load_runs(dirs: Sequence[Path]) -> list[Run]:
    """Every finished finetuning run under ``dirs`` (offline_only runs aside), checked to pool."""
    runs = [
        Run(record, *read_run_files(Path(record.source)), pretraining(Path(record.source)))
        for record in load_local(dirs)
        if record.experiment != "offline_only"
    ]
    if not runs:
        raise AnalysisError(f"no finished finetuning runs under {', '.join(map(str, dirs))}")
    modes = {run.summary["metadata"]["numerics"]["mode"] for run in runs}
    if len(modes) > 1:
        raise AnalysisError(f"runs made under different numerics ({', '.join(sorted(modes))})")
    check_pooling(runs)
    return runs


def _setting(key: str) -> bool:
    """A config key that makes runs different methods (seeds and bookkeeping aside)."""
    return names_method(key) and key not in BOOKKEEPING


def check_pooling(runs: Sequence[Run]) -> None:
    """One run per (suite, task, preset, algorithm, seed); one configuration per preset."""
    seen: dict[tuple[str, str, str, str, int], str] = {}
    groups: dict[tuple[str, str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        key = (run.suite, run.env, run.experiment, run.algo)
        if (other := seen.get((*key, run.record.seed))) is not None:
            raise AnalysisError(
                f"two runs of {run.experiment} seed {run.record.seed} on {run.env}: "
                f"{other} and {run.record.source}"
            )
        seen[(*key, run.record.seed)] = run.record.source
        groups[key].append(run)
    for (_, env, experiment, _), members in groups.items():
        first = members[0].record.config
        for run in members[1:]:
            config = run.record.config
            for key in sorted(set(first) | set(config)):
                if _setting(key) and first.get(key) != config.get(key):
                    raise AnalysisError(
                        f"runs of {experiment} on {env} differ in {key} "
                        f"({first.get(key)!r} in {members[0].record.source}, "
                        f"{config.get(key)!r} in {run.record.source}): give one configuration "
                        "per preset"
                    )


def sweep_commands(dirs: Sequence[Path]) -> list[str]:
    """The command of each Hydra sweep under ``dirs`` (its ``multirun.yaml``); runs outside a
    sweep (their ``.hydra/overrides.yaml``) that differ only in preset and seed as one multirun
    command that makes them."""
    commands = []
    singles: dict[tuple[str, ...], dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for top in dirs:
        sweeps = sorted(top.rglob("multirun.yaml"))
        for path in sweeps:
            overrides = yaml.safe_load(path.read_text())["hydra"]["overrides"]["task"]
            commands.append("python run.py -m " + " ".join(overrides))
        roots = [p.parent for p in sweeps]
        for path in sorted(top.rglob(".hydra/overrides.yaml")):
            run_dir = path.parent.parent
            if not (run_dir / "summary.json").is_file() or any(r in run_dir.parents for r in roots):
                continue
            overrides = yaml.safe_load(path.read_text())
            values = dict(o.split("=", 1) for o in overrides if "=" in o)
            rest = tuple(o for o in overrides if not o.startswith(("experiment=", "seed=")))
            singles[rest][values.get("experiment", "marvel")].add(int(values.get("seed", 0)))
    for rest, presets in singles.items():
        by_seeds: dict[tuple[int, ...], list[str]] = defaultdict(list)
        for preset in sorted(presets, key=method_order):
            by_seeds[tuple(sorted(presets[preset]))].append(preset)
        for seeds, names in by_seeds.items():
            multi = "-m " if len(seeds) > 1 or len(names) > 1 else ""
            commands.append(
                f"python run.py {multi}experiment={','.join(names)} {' '.join(rest)} "
                f"seed={','.join(map(str, seeds))}"
            )
    return list(dict.fromkeys(commands))
