"""Metrics logging: every row goes to ``run_dir/metrics.jsonl`` and, when enabled, to W&B.

The local JSONL file is the source of truth. W&B is best effort: an online run that cannot
start falls back to offline mode, then to the local file alone, and a W&B error later on only
stops W&B, never the run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import platform
import re
import socket
import subprocess
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from marvel import numerics
from marvel.choices import Choice
from marvel.fsutil import atomic_write, atomic_write_json

if TYPE_CHECKING:  # imported where a run logs to W&B: a run with logger=none starts faster
    import wandb

PACKAGES = (
    "torch",
    "numpy",
    "gymnasium",
    "bullet-safety-gym",
    "mujoco",  # the velocity tasks' simulator (the optional extra; null when not installed)
    "dsrl",
    "hydra-core",
    "omegaconf",
    "wandb",
    "h5py",
)
SECRET_WORDS = ("key", "apikey", "token", "secret", "password")


class LoggerBackend(Choice):
    """Where rows go besides ``metrics.jsonl`` (``logger.backend``): a W&B run, or nowhere."""

    wandb = "wandb"
    none = "none"


class WandbMode(Choice):
    """W&B's mode (``logger.mode``): local files to sync later, uploads as it goes, or off."""

    offline = "offline"
    online = "online"
    disabled = "disabled"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(repo: Path, *args: str) -> str | None:
    """Output of ``git <args>`` run in ``repo``; None if that fails."""
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(repo: Path) -> dict[str, Any]:
    """The commit checked out in ``repo`` and whether tracked files differ from it (untracked
    files, such as run dirs, do not make it dirty); None where git cannot tell."""
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git(repo, "rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


def run_metadata() -> dict[str, Any]:
    """Where and with what a run ran: Python, host, package versions, git state, torch device,
    and the CPU numerics (mode, settings, threads, CPU model: marvel/numerics.py)."""
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": {name: _package_version(name) for name in PACKAGES},
        **git_state(Path(__file__).resolve().parent),
        "cuda_available": cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "numerics": numerics.describe(),
    }


def _is_secret(key: Any) -> bool:
    """True for names such as WANDB_API_KEY, token, db-password (whole words, any separator)."""
    return any(word in SECRET_WORDS for word in re.split(r"[^a-z0-9]+", str(key).lower()))


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


def redact(d: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``d`` without entries named like secrets (key, token, ...), at any depth."""
    return {k: _redact_value(v) for k, v in d.items() if not _is_secret(k)}


def _item(value: Any) -> Any:
    """A numpy/torch scalar as a Python number; anything else unchanged."""
    return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value


def _flat_scalars(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested scalars as ``a/b`` keys ({"eval": {"reward": 1}} -> {"eval/reward": 1})."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat_scalars(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
    return flat


def keep_rows_until(path: Path, step_metric: str, step: int) -> None:
    """Rewrite a metrics.jsonl file (atomically) as it was when a checkpoint was taken at
    ``step`` of ``step_metric``: rows are in the order they were logged, so keep them up to the
    last one on that axis at or before ``step``, and drop what followed (a torn line included)."""
    rows = path.read_text().splitlines()
    end = 0
    for index, line in enumerate(rows):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            break
        if step_metric in row and row[step_metric] <= step:
            end = index + 1
    kept = "".join(line + "\n" for line in rows[:end])
    atomic_write(path, lambda tmp: tmp.write_text(kept))


class RunLogger:
    """One call site for metrics: ``run_dir/metrics.jsonl`` always, a W&B run when enabled.

    Use as a context manager (or call ``finish``) so the W&B run is always closed.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        *,
        backend: LoggerBackend | str = LoggerBackend.wandb,
        mode: WandbMode | str = WandbMode.offline,
        project: str = "marvel",
        entity: str | None = None,
        wandb_dir: str | Path | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        job_type: str | None = None,
        run_id: str | None = None,
        resume_at: tuple[str, int] | None = None,
        step_metric: str = "online/update",
    ) -> None:
        """``resume_at`` = (x-axis, step): continue a run resumed from a checkpoint taken at
        that step: its rows logged later on that axis (after the checkpoint, before the run
        died) are dropped, the rest kept; None starts ``metrics.jsonl`` afresh. Pass the run's
        ``run_id`` to keep logging into the same W&B run; W&B's files go under ``wandb_dir``
        (default: the run dir)."""
        backend, mode = LoggerBackend(backend), WandbMode(mode)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.step_metric = step_metric
        self._axis_of: dict[str, str] = {step_metric: step_metric}  # key -> its W&B x-axis
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if resume_at is not None and self.metrics_path.is_file():
            keep_rows_until(self.metrics_path, *resume_at)
        self._file = self.metrics_path.open("a" if resume_at is not None else "w")
        self.run_id = run_id
        self._run: wandb.Run | None = None
        self._wandb_dir: Path | None = None
        if backend == LoggerBackend.wandb and mode != WandbMode.disabled:
            import wandb

            self._run = self._start_wandb(
                mode,
                dir=str(wandb_dir or self.run_dir),
                project=project,
                entity=entity,
                group=group,
                name=name,
                tags=tags,
                job_type=job_type,
                config=redact(config),
                id=run_id,
                resume="allow",
                # Finish any run still open in this process: Hydra multirun jobs never merge.
                reinit="finish_previous",
                settings=wandb.Settings(silent=True),
            )
        if self._run is not None:
            self.run_id = self._run.id
            self._wandb_dir = Path(self._run.dir).parent

    def _start_wandb(self, mode: WandbMode, **init_kwargs: Any) -> wandb.Run | None:
        """``wandb.init`` in ``mode``, falling back online -> offline -> no W&B, with a warning."""
        import wandb

        for attempt in ("online", "offline") if mode == WandbMode.online else (mode.value,):
            try:
                run = wandb.init(mode=attempt, **init_kwargs)
                run.define_metric(self.step_metric)
                return run
            except Exception as e:
                fallback = "offline mode" if attempt == "online" else f"{self.metrics_path} only"
                warnings.warn(
                    f"W&B {attempt} init failed ({e}); continuing with {fallback}.", stacklevel=3
                )
                # A failed init keeps its run id reserved in wandb-core: restart the service.
                with contextlib.suppress(Exception):
                    wandb.teardown()
        return None

    def _wandb_call(self, action: str, call: Callable[[wandb.Run], Any]) -> None:
        """Apply ``call`` to the W&B run, if any; on error warn and stop using W&B."""
        if self._run is None:
            return
        try:
            call(self._run)
        except Exception as e:
            warnings.warn(
                f"W&B {action} failed ({e}); W&B stopped, {self.metrics_path} keeps logging.",
                stacklevel=3,
            )
            self._run = None

    @property
    def wandb_dir(self) -> Path | None:
        """The W&B run's local folder (``run_dir/wandb/<offline-run-...>``), or None."""
        return self._wandb_dir

    def log(self, metrics: Mapping[str, Any], step: int, step_metric: str | None = None) -> None:
        """Log one row of scalars at ``step`` of ``step_metric``: the run's (policy-gradient
        updates, ``online/update``) unless a stage has its own x-axis (``offline/step``,
        ``vpa/iteration``). W&B plots each key against the step metric of its first row."""
        axis = step_metric or self.step_metric
        row = {k: float(_item(v)) for k, v in metrics.items()}
        row[axis] = int(step)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self._wandb_call("log", lambda run: self._log_wandb(run, row, axis))

    def _log_wandb(self, run: wandb.Run, row: dict[str, Any], axis: str) -> None:
        """Bind every new key to ``axis`` (exact keys, not globs: no precedence to get wrong)."""
        new_keys = [k for k in row if k not in self._axis_of]
        if new_keys:
            if axis not in self._axis_of:
                run.define_metric(axis)
            for key in new_keys:
                if key != axis:
                    run.define_metric(key, step_metric=axis)
                self._axis_of[key] = axis
        run.log(row)

    def update_config(self, values: Mapping[str, Any]) -> None:
        """Add ``values`` (secrets removed) to the W&B config, e.g. facts known after loading."""
        clean = redact(values)
        self._wandb_call("config", lambda run: run.config.update(clean, allow_val_change=True))

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write ``run_dir/summary.json`` atomically; copy its flat scalars to the W&B summary."""
        clean = {k: _item(v) for k, v in redact(summary).items()}
        path = atomic_write_json(self.run_dir / "summary.json", clean)
        scalars = _flat_scalars(clean)
        self._wandb_call("summary", lambda run: run.summary.update(scalars))
        return path

    def finish(self, exit_code: int = 0) -> None:
        """Close the metrics file and finish the W&B run (``exit_code`` != 0 marks it failed)."""
        if self._file.closed:
            return
        self._file.close()
        self._wandb_call("finish", lambda run: run.finish(exit_code=exit_code))
        self._run = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)
