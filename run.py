"""marvel's command line: ``python run.py [group=option ...] [key=value ...]`` (Hydra)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from marvel import numerics
from marvel.errors import MarvelError

try:  # one line, even for --help: a bad numerics= (fixed before numpy and torch load:
    # marvel/numerics.py), an unusable DSRL_DATASET_DIR (it stops the imports), a value
    # outside its setting's choices
    mode = numerics.from_command_line(sys.argv[1:])
    if mode is not None:
        numerics.select(mode)
    from marvel.choices import refuse_bad_choices
    from marvel.config import MarvelConfig, register_configs
    from marvel.fsutil import own_dir, release_dir
    from marvel.launch import (
        clear_failure,
        record_failure,
        refuse,
        torch_threads_for_job,
    )

    refuse_bad_choices(MarvelConfig, sys.argv[1:])
except MarvelError as err:
    print(f"marvel: error: {err}", file=sys.stderr)
    sys.exit(2)

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from marvel.context import SweepInfo  # after Hydra has parsed the command line: fast --help
    from marvel.pipeline import run

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            run(cfg, run_dir)
        except MarvelError as err:
            refuse(err)
        return
    # a sweep's job: a failure is recorded in its dir and the sweep goes on (LaunchChecks lists
    # the failed jobs at the end and exits non-zero)
    # a fair share of the CPUs per job under native numerics: the process's mode (the job's
    # config is checked, and refused if it asks for another, when the job runs)
    if cfg.torch_threads == 0 and numerics.in_effect() == "native":
        cfg.torch_threads = torch_threads_for_job(hydra_cfg.launcher)
    try:  # a job's dir has one owner too (a single run pointed at it is refused)
        own_dir(run_dir, "hydra.sweep.dir")
    except MarvelError as err:
        print(f"marvel: error: job {hydra_cfg.job.num}: {err}", file=sys.stderr)
        return
    clear_failure(run_dir)
    try:
        run(cfg, run_dir, SweepInfo(cfg.sweep, Path(hydra_cfg.sweep.dir)))
    except Exception as err:  # noqa: BLE001  (any fault of one job must not end the others)
        record_failure(run_dir, err)
        print(f"marvel: error: job {hydra_cfg.job.num} ({run_dir}): {err}", file=sys.stderr)
    finally:
        release_dir(run_dir)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: what was saved is kept, and the same command resumes
        print(
            "\nmarvel: interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        sys.exit(130)
