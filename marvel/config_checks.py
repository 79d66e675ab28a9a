"""The checks of a composed config that its types cannot express: keys a ``+key=value`` added,
each value against its name's meaning (``check_leaves``) and the rules between settings
(``validate``), each refused in one line naming the key (ConfigError), before a run dir exists."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from marvel.choices import interpolation_refused
from marvel.config import DataSource, MarvelConfig, Stage
from marvel.errors import ConfigError
from marvel.numerics import Numerics


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def unknown_keys(node: Any, prefix: str = "") -> list[str]:
    """Keys of ``node`` that its schema dataclass does not declare, at any depth: what a
    ``+key=value`` override adds (Hydra lets ``+`` through a structured config)."""
    if not isinstance(node, DictConfig):
        return []
    schema = OmegaConf.get_type(node)
    known = (
        {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    )
    found = []
    for key in node.keys():
        name = f"{prefix}{key}"
        if known is not None and key not in known and name != "hydra":
            found.append(name)
        elif name != "hydra":
            found += unknown_keys(node._get_node(key), f"{name}.")
    return found


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a plain nested dict, in the config's order."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


def check_leaves(cfg: Any) -> None:
    """Rules that follow from a key's name, for every value of the config: numbers finite,
    learning rates (``*_lr``) > 0, seeds (``seed``, ``*.seed``) integers >= 0 (or null where
    null means "the run's seed"), thread counts >= 0, counts and sizes (``*batch_size``,
    ``num_*``, ``*_rollouts``, ...) >= 1, layer lists non-empty, quantiles and
    fractions in [0, 1], scales, widths, temperatures, weights and clips > 0."""
    try:
        values = {
            key: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
            for key, node in cfg.items_ex(resolve=True)
            if key != "hydra"
        }
    except ValidationError as err:  # an interpolation's value (an environment variable's)
        raise interpolation_refused(MarvelConfig, cfg, err) from None
    for key, value in leaves(values):
        name = key.rsplit(".", 1)[-1]
        if isinstance(value, float):
            _check(math.isfinite(value), key, f"must be a finite number, got {value}")
        if name.endswith("_lr") and isinstance(value, (int, float)):
            _check(value > 0, key, f"a learning rate must be > 0, got {value}")
        if name == "seed" and value is not None:
            _check(
                isinstance(value, int) and value >= 0, key, f"must be an integer >= 0, got {value}"
            )
        if name.endswith("threads"):
            _check(value >= 0, key, f"must be >= 0 (0: automatic), got {value}")
        counts = ("batch_size", "_rollouts", "_latent_dim", "log_every", "_per_iteration")
        if (name.endswith(counts) or name.startswith("num_")) and isinstance(value, int):
            _check(value >= 1, key, f"must be >= 1, got {value}")
        if name.endswith("hidden_sizes"):
            _check(
                bool(value) and all(isinstance(n, int) and n >= 1 for n in value),
                key,
                f"must list at least one layer width >= 1, got {value}",
            )
        if name.endswith(("quantile", "_fraction")):
            _check(0 <= value <= 1, key, f"must be in [0, 1], got {value}")
        if name.endswith(("sigma", "_scale", "temperature", "_weight", "_clip")):
            _check(value > 0, key, f"must be > 0, got {value}")


def validate(cfg: Any) -> None:
    """Range checks a type cannot express; raises ConfigError naming the key and the fix."""
    unknown = unknown_keys(cfg)
    _check(
        not unknown,
        ", ".join(unknown),
        "not a setting of marvel's schema (marvel/config.py); check the spelling, and drop the "
        "'+' that Hydra suggests",
    )
    check_leaves(cfg)
    baselines = cfg.baselines
    _check(
        0 <= baselines.offline_fraction < 1,
        "baselines.offline_fraction",
        f"must be in [0, 1), got {baselines.offline_fraction}",
    )
    _check(
        baselines.jsrl_initial_fraction == 0 or cfg.offline.algo != "none",
        "baselines.jsrl_initial_fraction",
        "JSRL's guide is the pretrained pi_0: set offline=cpq (or bearl, bcql)",
    )
    _check(
        not baselines.pex or (cfg.offline.algo != "none" and baselines.pex_temperature > 0),
        "baselines.pex",
        "PEX expands the pretrained pi_0 (set offline=cpq, bearl or bcql) with a temperature > 0",
    )
    _check(
        not (baselines.pex and baselines.jsrl_initial_fraction > 0),
        "baselines.pex",
        "PEX and JSRL are separate baselines: enable one of them",
    )
    _check(cfg.eval_envs >= 1, "eval_envs", f"must be >= 1, got {cfg.eval_envs}")
    _check(
        cfg.numerics == Numerics.native or cfg.torch_threads in (0, 1),
        "torch_threads",
        f"got {cfg.torch_threads}, but numerics=portable computes on one thread (another thread "
        "count sums in another order); pass numerics=native to use more",
    )
    _check(cfg.env.cost_limit >= 0, "env.cost_limit", f"must be >= 0, got {cfg.env.cost_limit}")
    _check(
        cfg.env.max_episode_steps is None or cfg.env.gym_id is not None,
        "env.max_episode_steps",
        f"{cfg.env.name}'s episode length is DSRL's; the setting is for your own env (env=custom)",
    )
    _check(
        cfg.env.gym_id is None or cfg.data.source != DataSource.dsrl,
        "data.source",
        f"DSRL has no dataset for your env {cfg.env.gym_id}: use data=auto or data=collect (a "
        "collected one), or data.path=<your DSRL-format file>",
    )
    _check(
        cfg.offline.algo == "none" or cfg.offline.steps >= 1,
        "offline.steps",
        f"must be >= 1, got {cfg.offline.steps}",
    )
    _check(
        cfg.stage != Stage.pretrain or cfg.offline.algo != "none",
        "offline",
        "stage=pretrain needs an offline algorithm: offline=cpq, offline=bearl or offline=bcql",
    )
    _check(
        cfg.pid.lambda_init in ("offline", "figure2")
        or (isinstance(cfg.pid.lambda_init, (int, float)) and cfg.pid.lambda_init >= 0),
        "pid.lambda_init",
        f"must be a number >= 0, 'offline' or 'figure2', got {cfg.pid.lambda_init!r}",
    )
    _check(
        cfg.pid.lambda_init != "figure2" or cfg.env.figure2_lambda_init is not None,
        "pid.lambda_init",
        f"'figure2' needs {cfg.env.name}'s hand-found lambda_0 (the paper gives BallCircle "
        "0.65 and CarRun 0.5): set env.figure2_lambda_init=<value>",
    )
    _check(
        cfg.pid.lambda_init != "offline" or cfg.offline.algo != "none",
        "pid.lambda_init",
        "'offline' needs an offline algorithm (offline=cpq, offline=bearl or offline=bcql)",
    )
    _check(
        not cfg.vpa.enabled or cfg.vpa.iterations >= 1,
        "vpa.iterations",
        f"must be >= 1, got {cfg.vpa.iterations}",
    )
    for key in ("kp", "ki", "kd", "lr"):
        _check(cfg.pid[key] >= 0, f"pid.{key}", f"must be >= 0, got {cfg.pid[key]}")
    _check(cfg.pid.d_delay >= 1, "pid.d_delay", f"must be >= 1, got {cfg.pid.d_delay}")
    for key in ("ema_p", "ema_d"):
        _check(0 <= cfg.pid[key] < 1, f"pid.{key}", f"must be in [0, 1), got {cfg.pid[key]}")
    _check(cfg.pid.gain_clip >= 1, "pid.gain_clip", f"must be >= 1, got {cfg.pid.gain_clip}")
    for key in ("online_iterations", "eval_every", "checkpoint_every"):
        value = cfg.budget[key]
        _check(value >= 1, f"budget.{key}", f"must be >= 1, got {value}")
    _check(
        cfg.budget.eval_episodes >= 2,
        "budget.eval_episodes",
        f"must be >= 2 (the verdict needs the cost's standard error), got "
        f"{cfg.budget.eval_episodes}",
    )
    _check(
        cfg.budget.collect_episodes >= 1,
        "budget.collect_episodes",
        f"must be >= 1, got {cfg.budget.collect_episodes}",
    )
    for prefix, agent in (
        ("finetune", cfg.finetune),
        ("data.collect.agent", cfg.data.collect.agent),
    ):
        _check(
            1 <= agent.minibatch_size <= agent.batch_size
            and agent.batch_size % agent.minibatch_size == 0,
            f"{prefix}.minibatch_size",
            f"must divide batch_size={agent.batch_size}, got {agent.minibatch_size}",
        )
        _check(0 < agent.gamma <= 1, f"{prefix}.gamma", f"must be in (0, 1], got {agent.gamma}")
        _check(0 < agent.tau <= 1, f"{prefix}.tau", f"must be in (0, 1], got {agent.tau}")
        _check(agent.alpha > 0, f"{prefix}.alpha", f"must be > 0, got {agent.alpha}")
    _check(
        cfg.stage != Stage.evaluate or cfg.checkpoint is not None,
        "checkpoint",
        "stage=evaluate needs checkpoint=<run dir or .pt file>",
    )
