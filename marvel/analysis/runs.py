"""Finished runs as records: a finetuning run's final scores, evaluation curve and resolved
config, read from its run dir (``summary.json``, ``metrics.jsonl``, ``.hydra/config.yaml``) or
from W&B's public API; each run's method label and the paper's order of methods."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from marvel.errors import AnalysisError

PROG = "marvel.analysis"


RUN_FILES = ("summary.json", "metrics.jsonl")


FINETUNE_STAGES = ("all", "finetune")


FINAL_KEYS = {  # final value -> its summary.json section
    "normalized_reward": "eval",
    "normalized_cost": "eval",
    "reward": "eval",
    "cost": "eval",
    "safe": "eval",
    "cumulative_cost": "online",
    "updates": "online",
}


CURVE_KEYS = ("online/update", "eval/normalized_reward", "eval/normalized_cost")


# config keys that never name a method: bookkeeping, paths, and whatever a seed determines
IGNORED_KEYS = (
    "logger",
    "paths",
    "hydra",
    "metadata",
    "dataset",
    "pretrained",
    "checkpoint",
    "device",
    "torch_threads",
    "sweep",
)


@dataclass(frozen=True)
class RunRecord:
    """One finetuning run, whichever source it came from."""

    env: str
    experiment: str
    seed: int
    config: dict[str, Any]  # flattened: {"pid.name": "adaptive", ...}
    final: dict[str, Any]  # FINAL_KEYS: the final evaluation and online counters
    curve: dict[int, tuple[float, float]]  # update -> (normalized reward, normalized cost)
    source: str  # run dir or W&B run
    method: str = ""


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys ({"pid": {"name": "dual"}} -> {"pid.name": "dual"})."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _format_value(value: Any) -> str:
    """A config value as in a Hydra override: strings bare, the rest as JSON (true, null, [1])."""
    return value if isinstance(value, str) else json.dumps(value)


def names_method(key: str) -> bool:
    """False for seeds, bookkeeping (IGNORED_KEYS) and W&B's own ``_wandb`` entries."""
    parts = key.split(".")
    return not (parts[0] in IGNORED_KEYS or parts[0].startswith("_") or parts[-1] == "seed")


def label_methods(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs with ``method`` set: the experiment, then ``key=value`` (sorted by key) for every
    config leaf that varies among the runs of the same (env, experiment), seed keys and
    bookkeeping (IGNORED_KEYS) aside."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.env, run.experiment)].append(run)
    varying: dict[tuple[str, str], list[str]] = {}
    for group, members in groups.items():
        keys = set().union(*(run.config for run in members))
        varying[group] = sorted(
            key
            for key in keys
            if names_method(key)
            and len({_format_value(run.config.get(key)) for run in members}) > 1
        )
    return [
        replace(
            run,
            method=" ".join(
                [
                    run.experiment,
                    *(
                        f"{key}={_format_value(run.config.get(key))}"
                        for key in varying[(run.env, run.experiment)]
                    ),
                ]
            ),
        )
        for run in runs
    ]


def _load_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``.hydra/config.yaml``, resolved when it can be, else as written; flattened."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    cfg = OmegaConf.load(path)
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        container = OmegaConf.to_container(cfg, resolve=False)
    return flatten(container)


def _read_curve(rows: Iterable[Mapping[str, Any]]) -> dict[int, tuple[float, float]]:
    """update -> (normalized reward, normalized cost) of the evaluation rows (a resumed run's
    repeated update keeps its last row)."""
    return {
        int(row["online/update"]): (
            float(row["eval/normalized_reward"]),
            float(row["eval/normalized_cost"]),
        )
        for row in rows
        if all(row.get(key) is not None for key in CURVE_KEYS)
    }


def is_finetune_run(summary: Mapping[str, Any], where: str) -> bool:
    """A finetuning run that finished: other stages are skipped silently, failures warned."""
    if summary.get("stage") not in FINETUNE_STAGES:
        return False
    if summary.get("status") != "ok":
        warn(f"skipping {where}: status {summary.get('status')!r}")
        return False
    return True


def read_run_files(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run dir's summary.json and its metrics.jsonl rows (none when it has no such file)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics_path = run_dir / "metrics.jsonl"
    rows = (
        [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        if metrics_path.is_file()
        else []
    )
    return summary, rows


def load_run_dir(run_dir: Path) -> RunRecord:
    """One local run from its summary.json, metrics.jsonl and .hydra/config.yaml."""
    summary, rows = read_run_files(run_dir)
    return RunRecord(
        env=summary["task"]["name"],
        experiment=summary["experiment"],
        seed=int(summary["seed"]),
        config=_load_config(run_dir),
        final={key: summary[section][key] for key, section in FINAL_KEYS.items()},
        curve=_read_curve(rows),
        source=str(run_dir),
    )


def finished_run_dirs(top: Path) -> list[Path]:
    """The dirs of the finished finetuning runs under ``top`` (searched recursively for
    summary.json; unreadable ones warned and skipped)."""
    found = []
    for path in sorted(top.rglob("summary.json")):
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            warn(f"skipping {path.parent.resolve()}: unreadable summary.json ({e})")
            continue
        if is_finetune_run(summary, str(path.parent.resolve())):
            found.append(path.parent)
    return found


def load_local(dirs: Sequence[str | Path]) -> list[RunRecord]:
    """Every finished finetuning run under ``dirs`` (searched recursively for summary.json)."""
    runs = []
    seen: set[Path] = set()
    for top in map(Path, dirs):
        if not top.is_dir():
            raise AnalysisError(f"no such directory: {top}")
        for run_dir in finished_run_dirs(top):
            if run_dir.resolve() not in seen:
                seen.add(run_dir.resolve())
                runs.append(load_run_dir(run_dir))
    return runs


def runs_from_wandb(wandb_runs: Iterable[Any]) -> list[RunRecord]:
    """Records from W&B run objects (``.config``, ``.summary``, ``.scan_history(keys=...)``,
    ``.id``): marvel logs the resolved config as the W&B config and summary.json's scalars as
    the W&B summary, with "/" separators."""
    runs = []
    for wandb_run in wandb_runs:
        summary, where = wandb_run.summary, f"W&B run {wandb_run.id} ({wandb_run.name})"
        if not is_finetune_run(summary, where):
            continue
        config = flatten(wandb_run.config)
        runs.append(
            RunRecord(
                env=summary.get("task/name") or config["env.name"],
                experiment=summary.get("experiment") or config["experiment"],
                seed=int(summary.get("seed", config.get("seed"))),
                config=config,
                final={key: summary.get(f"{section}/{key}") for key, section in FINAL_KEYS.items()},
                curve=_read_curve(wandb_run.scan_history(keys=list(CURVE_KEYS))),
                source=getattr(wandb_run, "url", None) or where,
            )
        )
    return runs


def load_wandb(path: str, group: str | None) -> list[RunRecord]:
    """The finetuning runs of W&B project ``path`` (ENTITY/PROJECT), in ``group`` if given."""
    import wandb

    filters = {"group": group} if group else {}
    return runs_from_wandb(wandb.Api().runs(path, filters=filters))


# The presets in the paper's order (its ablation, then the O2O baselines); a method label is
# its preset, then its varying settings ("marvel offline=bearl").
PAPER_ORDER = (
    "marvel",
    "vpa_pid",
    "vpa_only",
    "apid_only",
    "warm_start",
    "from_scratch",
    "target_noise",
    "kl_to_prior",
    "hybrid_replay",
    "jsrl",
    "pex",
    "offline_only",
)


def method_order(method: str) -> tuple[int, str]:
    """Sort key of a method label: the paper's order of its preset, other presets after them
    (alphabetically), then the label."""
    preset = method.split(" ", 1)[0]
    rank = PAPER_ORDER.index(preset) if preset in PAPER_ORDER else len(PAPER_ORDER)
    return rank, method
