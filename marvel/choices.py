"""Settings with a closed set of values: ``Choice`` enums type those fields of the config
dataclasses, so Hydra refuses any other value when it composes the config, and the Python API
when a dataclass is built (``Choice(value)`` raises, naming the valid values). Hydra says so in
several lines; ``refuse_bad_choices`` and ``interpolation_refused`` say it in one."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from marvel.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf.errors import ValidationError


class Choice(str, Enum):
    """A closed set of strings. Each member's name is its value (what a config file or command
    line writes: Hydra looks members up by name); a member compares equal to, hashes as and
    formats as that string, and JSON writes it as the string."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Choice:
        raise ValueError(f"unknown {cls.__name__} {value!r}; valid: {', '.join(cls.values())}")

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


def plain_dict(config: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with each ``Choice`` as its string: what checkpoints hold (their
    ``weights_only`` loads refuse Enum objects) and what cache keys digest."""

    def plain(items: list[tuple[str, Any]]) -> dict[str, Any]:
        return {key: value.value if isinstance(value, Choice) else value for key, value in items}

    return dataclasses.asdict(config, dict_factory=plain)


def choice_type(schema: type, key: str) -> type[Choice] | None:
    """The ``Choice`` enum of the setting ``key`` (dotted) of the dataclass ``schema``, or None
    for a setting of another type or none at all."""
    node: Any = schema
    for name in key.split("."):
        node = typing.get_type_hints(node).get(name) if dataclasses.is_dataclass(node) else None
    return node if isinstance(node, type) and issubclass(node, Choice) else None


def refuse_bad_choices(schema: type, overrides: Sequence[str]) -> None:
    """ConfigError naming the valid values for a command-line value (a sweep's too) outside
    its ``Choice`` setting's set. Other overrides, malformed ones included, are Hydra's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in overrides:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException:
            continue
        choices = choice_type(schema, override.key_or_group)
        if choices is None or override.is_delete():
            continue
        if not override.is_sweep_override():
            values = [override.value()]
        elif override.is_discrete_sweep() and override.value_type != ValueType.GLOB_CHOICE_SWEEP:
            values = list(override.sweep_iterator())
        else:  # an interval or a glob: Hydra's to expand
            continue
        for value in values:
            if value not in choices.values() and not (isinstance(value, str) and "${" in value):
                raise ConfigError(
                    f"{override.key_or_group}: got {value!r}; valid: {', '.join(choices.values())}"
                )


def interpolation_refused(schema: type, cfg: Any, err: ValidationError) -> ConfigError:
    """One line for a value an interpolation of ``cfg`` gave (an environment variable's, such
    as WANDB_MODE's) that its setting's type in ``schema`` refuses (``err``)."""
    node = cfg
    for name in err.full_key.split("."):
        node = node._get_node(name)
    choices = choice_type(schema, err.full_key)
    valid = f"valid: {', '.join(choices.values())}" if choices else err.msg.splitlines()[0]
    return ConfigError(f"{err.full_key}: got {err.value!r} from {node._value()}; {valid}")
