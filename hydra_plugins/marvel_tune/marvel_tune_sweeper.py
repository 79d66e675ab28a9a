"""The Hydra plugin of marvel's search (``+sweep=tune``): its settings' schema in Hydra's
ConfigStore as ``hydra/sweeper=marvel_tune``, and a sweeper and a callback that hand everything
to marvel.tune (docs/USAGE.md, Tuning a task).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package and imports every
module in it whenever any Hydra app starts, so this module imports neither marvel (its import
sets numpy's and torch's numerics) nor Optuna until a search runs.
"""

# No ``from __future__ import annotations``: Hydra's scan runs this module before it is in
# sys.modules, where a dataclass cannot resolve annotations given as strings.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig


@dataclass
class TuneSweeperConf:
    """``n_trials`` trials, each one run per seed of ``seeds``, sampled by Optuna's TPE seeded
    with ``sampler_seed``, ``trials_per_batch`` launched together, in the study ``study_name`` of
    ``<sweep dir>/study.db``; ``space``: nested like the config, each searched key's log-uniform
    range as factors of its composed value (``{low: 0.2, high: 5.0}``). Values: sweeps/tune.yaml."""

    _target_: str = "hydra_plugins.marvel_tune.marvel_tune_sweeper.TuneSweeper"
    n_trials: int = MISSING
    seeds: list[int] = MISSING
    sampler_seed: int = MISSING
    trials_per_batch: int = MISSING
    study_name: str = MISSING
    space: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="marvel_tune", node=TuneSweeperConf)


def _require_optuna() -> None:
    """Optuna importable, or the one-line refusal naming the extra (exit code 2)."""
    from marvel.errors import MarvelError
    from marvel.launch import refuse
    from marvel.tune.extra import require_optuna

    try:
        require_optuna()
    except MarvelError as err:
        refuse(err)


class TuneChecks(Callback):
    """A search without Optuna ends in one line before anything is written: Hydra builds every
    callback before it calls any, so this runs before LaunchChecks creates the sweep dir."""

    def __init__(self) -> None:
        _require_optuna()


class TuneSweeper(Sweeper):
    """Hydra's side of ``marvel.tune.sweeper.TuneSearch``; a MarvelError ends in one line."""

    def __init__(self, **settings: Any) -> None:
        _require_optuna()
        from marvel.tune.sweeper import TuneSearch

        self.search = TuneSearch(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.search.setup(hydra_context, task_function, config)

    def sweep(self, arguments: list[str]) -> Any:
        from marvel.errors import MarvelError
        from marvel.launch import refuse

        try:
            return self.search.sweep(arguments)
        except MarvelError as err:
            refuse(err)
