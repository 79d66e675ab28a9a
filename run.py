"""marvel's command line: ``python run.py [group=option ...] [key=value ...]`` (Hydra)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from marvel.config import ConfigError, register_configs
from marvel.data.dsrl_files import DatasetError
from marvel.envs import UnknownTaskError
from marvel.errors import MarvelError
from marvel.launch import SweepInfo, torch_threads_for_job

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from marvel.pipeline import run  # after Hydra has parsed the command line: fast --help

    hydra_cfg = HydraConfig.get()
    sweep = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep = SweepInfo(cfg.sweep, Path(hydra_cfg.sweep.dir))
        if cfg.torch_threads == 0:  # 0 = automatic: a fair share of the CPUs per parallel job
            cfg.torch_threads = torch_threads_for_job(hydra_cfg.launcher)
    try:
        run(cfg, Path(hydra_cfg.runtime.output_dir), sweep)
    except (MarvelError, ConfigError, DatasetError, UnknownTaskError) as err:
        print(f"marvel: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
