"""What a job needs to know about how Hydra launched it: its sweep, and its share of the CPUs.

The only module besides ``run.py`` that reads Hydra's runtime config; the pipeline gets plain
values from it.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from marvel.errors import MarvelError
from marvel.fsutil import own_dir, release_dir


def refuse(err: Exception) -> None:
    """Print ``err``'s one-line message and exit with code 2."""
    print(f"marvel: error: {err}", file=sys.stderr)
    sys.exit(2)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def torch_threads_for_job(launcher: Any, cpus: int | None = None) -> int:
    """torch threads for one job under ``launcher`` (Hydra's ``hydra.launcher`` node), or 0 to
    keep torch's default.

    Parallel jobs must not each take every core (on 2 cores two 2-thread jobs run several times
    slower than two 1-thread jobs): joblib gets ``cpus // n_jobs`` (at least 1); submitit jobs
    get the CPUs they asked for (``cpus_per_task``), which torch would not read from a Slurm
    allocation by itself. The basic launcher runs one job at a time: torch's default.
    """
    cpus = cpus or available_cpus()
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or -1)
        parallel = cpus if n_jobs < 1 else min(n_jobs, cpus)
        return max(1, cpus // parallel)
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    return 0


def check_writable_dir(path: str | os.PathLike, override: str) -> None:
    """Create ``path`` and a file in it, or exit with one line naming the problem and
    ``override``, the setting that fixes it (before Hydra's own attempt ends in a traceback)."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        print(
            f"marvel: error: cannot write to the output dir {path} ({reason}); "
            f"pass {override}=<a writable dir>",
            file=sys.stderr,
        )
        sys.exit(2)


FAILURE_FILE = "failed.json"


def record_failure(run_dir: Path, err: BaseException) -> None:
    """Say in a sweep job's dir why it failed (``failed.json``: the message, the error type and
    the traceback); a ``summary.json`` with ``status: failed`` too, unless the run wrote one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    failure = {
        "status": "failed",
        "error": str(err),
        "error_type": type(err).__name__,
        "traceback": "".join(traceback.format_exception(err)),
    }
    (run_dir / FAILURE_FILE).write_text(json.dumps(failure, indent=2))
    summary = run_dir / "summary.json"
    if not summary.exists():
        summary.write_text(json.dumps({k: failure[k] for k in ("status", "error", "error_type")}))


def clear_failure(run_dir: Path) -> None:
    """A job that starts again in its dir is no longer failed (a rerun sweep resumes)."""
    (run_dir / FAILURE_FILE).unlink(missing_ok=True)


def failed_jobs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """The jobs of the sweep in ``sweep_dir`` that failed, with their error messages."""
    return [
        (path.parent, json.loads(path.read_text())["error"])
        for path in sorted(sweep_dir.rglob(FAILURE_FILE))
    ]


def empty_sweep_lists(config: DictConfig) -> list[str]:
    """The swept keys whose list is empty (``seed=range(0)``), as the basic sweeper combines
    them: the sweep file's ``hydra.sweeper.params``, then the command line (the last wins)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()]
    overrides = OverridesParser.create().parse_overrides([*lines, *config.hydra.overrides.task])
    last = {override.key_or_group: override for override in overrides}
    return [
        override.input_line or key
        for key, override in last.items()
        if override.is_sweep_override() and not list(override.sweep_string_iterator())
    ]


class LaunchChecks(Callback):
    """Hydra callback (conf/config.yaml): a single run is refused before anything is written
    when its config, device, task or resume point is wrong; the run or sweep dir must be
    writable, and has one owner process (marvel.fsutil.own_dir); a sweep with failed jobs names
    them at its end and exits non-zero."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from marvel.pipeline import preflight  # envs and agents: imported once a run starts

        job_config = copy.deepcopy(config)  # what the task function gets: no hydra node
        with read_write(job_config), open_dict(job_config):
            del job_config["hydra"]
        try:  # before Hydra creates the run dir or rewrites an existing one's .hydra/
            _, task, _ = preflight(job_config, Path(config.hydra.run.dir))
        except MarvelError as err:
            refuse(err)
        except OSError as err:  # the run dir's path itself (a name over 255 characters)
            refuse(
                MarvelError(
                    f"cannot write to the output dir {config.hydra.run.dir} "
                    f"({err.strerror or type(err).__name__}); pass hydra.run.dir=<a writable dir>"
                )
            )
        env = next((o[4:] for o in config.hydra.overrides.task if o.startswith("env=")), None)
        if job_config.stage == "evaluate" and env is not None and env != task.name:
            refuse(
                MarvelError(
                    f"checkpoint={job_config.checkpoint} was trained on {task.name}, not "
                    f"env={env}: stage=evaluate runs the checkpoint's task (drop env= or pass "
                    f"env={task.name})"
                )
            )
        check_writable_dir(config.hydra.run.dir, "hydra.run.dir")
        try:  # before Hydra writes .hydra/ and run.log into it
            own_dir(config.hydra.run.dir, "hydra.run.dir")
        except MarvelError as err:
            refuse(err)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_dir(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if empty := empty_sweep_lists(config):
            refuse(
                MarvelError(
                    f"the sweep would launch no job: {', '.join(empty)} has no value; give each "
                    "swept key at least one"
                )
            )
        check_writable_dir(config.hydra.sweep.dir, "hydra.sweep.dir")
        try:
            own_dir(config.hydra.sweep.dir, "hydra.sweep.dir")
        except MarvelError as err:
            refuse(err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_dir(config.hydra.sweep.dir)
        failed = failed_jobs(Path(config.hydra.sweep.dir))
        if failed:
            lines = [f"  {run_dir}: {message}" for run_dir, message in failed]
            print(f"marvel: error: {len(failed)} job(s) of the sweep failed:", file=sys.stderr)
            print("\n".join(lines), file=sys.stderr)
            sys.exit(1)
