"""marvel's command line: ``python run.py [group=option ...] [key=value ...]`` (Hydra)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from marvel.config import ConfigError, register_configs
from marvel.data.dsrl_files import DatasetError
from marvel.envs import UnknownTaskError
from marvel.errors import MarvelError

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from marvel.pipeline import run  # after Hydra has parsed the command line: fast --help

    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (MarvelError, ConfigError, DatasetError, UnknownTaskError) as err:
        print(f"marvel: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
