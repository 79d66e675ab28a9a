"""Errors a user can act on: ``run.py`` prints their one-line message and exits non-zero."""

from __future__ import annotations

import math
from collections.abc import Mapping


class MarvelError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(MarvelError, ValueError):
    """A config value out of range; the message names the key and the valid values."""


class UnknownTaskError(MarvelError, ValueError):
    """A task name marvel does not know; the message lists the valid ones."""


class MissingExtraError(MarvelError, ImportError):
    """A task whose simulator is an optional extra that is not installed; names the extra."""


class DatasetError(MarvelError, RuntimeError):
    """A dataset file that cannot be used; the message says what is wrong and how to fix it."""


class DatasetUnavailableError(DatasetError):
    """The DSRL file is not on disk and no source could serve it."""


class CheckpointError(MarvelError):
    """A checkpoint that cannot be used (missing, corrupt, or for another task/algorithm)."""


class DirInUseError(MarvelError):
    """A run or sweep dir that another live process owns; names its pid and start time."""


class AnalysisError(MarvelError):
    """Nothing to analyse (no runs, a missing directory) or a result that cannot be saved: the
    message says where."""


class NumericalFault(MarvelError):
    """A loss, value or multiplier became NaN or infinite; names the stage and step."""

    def __init__(self, stage: str, step: int, keys: list[str]) -> None:
        self.stage, self.step, self.keys = stage, step, keys
        super().__init__(
            f"non-finite {', '.join(keys)} in {stage} at step {step}; the run stopped (checkpoints "
            "saved before the fault are kept): lower the learning rates or check the data"
        )


def check_finite(metrics: Mapping[str, float], stage: str, step: int) -> None:
    """Raise ``NumericalFault`` if any of ``metrics`` is NaN or infinite."""
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(float(v)))
    if bad:
        raise NumericalFault(stage, step, bad)
