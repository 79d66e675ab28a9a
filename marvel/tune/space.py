"""The search space: each searched setting's log-uniform range, as factors of the value the tuned
config composes to (so the ranges follow the task and the preset), and a trial's values as the
overrides of its runs."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from marvel.errors import ConfigError

SPACE = "hydra.sweeper.space"

# Settings only some controllers read (marvel.lagrange.make_controller; conf/pid/dual.yaml takes
# its rate from env.finetune.lambda_lr): a search of a preset whose controller ignores one leaves
# it out, so the best settings never carry a value that no trial's runs read.
CONTROLLER_ONLY = {
    "env.finetune.lambda_lr": ("dual",),
    "pid.lr": ("dual",),
    "pid.kp": ("pid", "adaptive"),
    "pid.ki": ("pid", "adaptive"),
    "pid.kd": ("pid", "adaptive"),
}


@dataclass(frozen=True)
class Dimension:
    """One searched setting: its dotted config key and its log-uniform range."""

    key: str
    low: float
    high: float

    def suggest(self, trial: optuna.Trial) -> float:
        return trial.suggest_float(self.key, self.low, self.high, log=True)


def ranges(space: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, range) of each leaf of the nested ``space``: a range is a mapping holding
    ``low`` (anything else is a level of the config's nesting)."""
    for name, node in space.items():
        key = f"{prefix}{name}"
        if isinstance(node, Mapping) and "low" not in node:
            yield from ranges(node, f"{key}.")
        else:
            yield key, node


def dimension(key: str, factors: Any, config: DictConfig) -> Dimension:
    """``key``'s range: its composed value times the factors ``{low, high}``."""
    where = f"{SPACE}.{key}"
    if not isinstance(factors, Mapping) or set(factors) != {"low", "high"}:
        raise ConfigError(f"{where}: give the range as factors of the value, {{low: 0.2, high: 5}}")
    low, high = factors["low"], factors["high"]
    numbers = all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in (low, high))
    if not (numbers and 0 < low < high):
        raise ConfigError(f"{where}: needs 0 < low < high, got low={low}, high={high}")
    value = OmegaConf.select(config, key, default=None)
    if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{where}: the search scales a setting's value, a float > 0; {key} is {value!r} "
            "in the tuned config"
        )
    return Dimension(key, value * low, value * high)


def search_space(space: Mapping[str, Any], config: DictConfig) -> tuple[list[Dimension], list[str]]:
    """The dimensions of ``space`` around the composed ``config``'s values, and the keys left out
    because the config's controller (``pid.name``) does not read them."""
    controller = str(config.pid.name)
    dimensions, left_out = [], []
    for key, factors in ranges(space):
        if controller not in CONTROLLER_ONLY.get(key, (controller,)):
            left_out.append(key)
        else:
            dimensions.append(dimension(key, factors, config))
    if not dimensions:
        raise ConfigError(f"{SPACE}: no setting to search for pid={controller}")
    return dimensions, left_out


def override(key: str, value: float) -> str:
    """A sampled value as a Hydra override, exact (``repr``): the run's config holds the value
    the study recorded."""
    return f"{key}={value!r}"
