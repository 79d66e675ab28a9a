"""Structured-config schemas for every config group, registered with Hydra's ConfigStore.

conf/config.yaml extends ``marvel_schema`` (the "Structured Config schema" pattern), so a
misspelt key, a wrong type or a value outside a ``Choice`` field's set, in any YAML file or
override, fails at start with Hydra's message (run.py refuses the last in one line first:
``marvel.choices.refuse_bad_choices``). ``validate`` then checks the ranges a type cannot
express.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from marvel.baselines import BaselinesConfig
from marvel.choices import Choice, interpolation_refused
from marvel.data.dsrl_files import DEFAULT_HF_REPO, DEFAULT_MIRRORS
from marvel.errors import ConfigError
from marvel.lagrange import ControllerConfig
from marvel.logging import LoggerBackend, WandbMode
from marvel.numerics import Numerics
from marvel.offline import OFFLINE_ALGORITHMS
from marvel.offline.bcql import BCQLConfig
from marvel.offline.bearl import BEARLConfig
from marvel.offline.cpq import CPQConfig
from marvel.sac_lag import LAMBDA_UPDATE_EVERY, SACLagConfig
from marvel.start import NetworkSizes
from marvel.vpa import VPA_STARTS, VPAConfig

OFFLINE_ALGOS = ("none", *OFFLINE_ALGORITHMS)  # none: from scratch
SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"


class Stage(Choice):
    """How far a run goes (``stage``): the dataset, pi_0, finetuning from the cache, a saved
    policy's evaluation, or everything."""

    collect = "collect"
    pretrain = "pretrain"
    finetune = "finetune"
    evaluate = "evaluate"
    all = "all"


class DataSource(Choice):
    """Where the offline data come from (``data.source``): DSRL's file when it can be had, else
    collected (auto), DSRL's only, or collected only."""

    auto = "auto"
    dsrl = "dsrl"
    collect = "collect"


class Resume(Choice):
    """What a run dir holding a checkpoint of the same config does (``resume``)."""

    auto = "auto"
    never = "never"


@dataclass
class TaskFinetuneConfig:
    """Per-task finetuning settings of the released code (METHOD.md section 4)."""

    actor_lr: float = MISSING
    critic_reward_lr: float = MISSING
    critic_cost_lr: float = MISSING
    lambda_lr: float = MISSING
    alpha: float = MISSING
    iterations: int = MISSING


@dataclass
class EnvConfig:
    name: str = MISSING
    cost_limit: float = 20.0  # episodic, undiscounted cost limit d
    networks: NetworkSizes = field(default_factory=NetworkSizes)  # pi, Q_r, Q_c of both phases
    # The hand-found good lambda_0 of the paper's Figure 2 (dual ascent), used by
    # pid.lambda_init=figure2 (the init_lambda sweep); the paper gives BallCircle and CarRun.
    figure2_lambda_init: float | None = None
    finetune: TaskFinetuneConfig = field(default_factory=TaskFinetuneConfig)
    # Your own env (env=custom): a gymnasium id or module:Class, its episode length and,
    # optionally, reference returns for normalization. Unset for the paper's tasks, whose
    # constants come from dsrl.infos.
    gym_id: str | None = None
    max_episode_steps: int | None = None
    reward_min: float | None = None
    reward_max: float | None = None


@dataclass
class CollectConfig:
    """Dataset collection: SAC-Lag training runs under a cost-limit curriculum (DSRL's recipe).

    The cost limit moves linearly from ``cost_limit_start`` to ``cost_limit_end`` between the
    fractions ``curriculum_start`` and ``curriculum_end`` of the collection, so the data spans
    poor-to-good and safe-to-unsafe behaviour; each episode adds Gaussian action noise with a
    std drawn uniformly from [0, action_noise_max]. The collecting agent's settings are its own
    (they make the data, not the method), and it bootstraps through time-limit truncation.
    """

    cost_limit_start: float = 5.0
    cost_limit_end: float = 100.0
    curriculum_start: float = 0.1
    curriculum_end: float = 0.9
    action_noise_max: float = 0.3
    lambda_lr: float = 5e-3
    networks: NetworkSizes = field(default_factory=lambda: NetworkSizes([128, 128], [128, 128]))
    agent: SACLagConfig = field(
        default_factory=lambda: SACLagConfig(
            actor_lr=5e-4,
            critic_reward_lr=1e-3,
            critic_cost_lr=1e-3,
            alpha=0.01,
            auto_alpha=True,
            reward_scale=1.0,
            episodes_per_iteration=1,
            updates_per_iteration=50,
            batch_size=128,
            minibatch_size=128,
            actor_uses_target_critics=False,
            lambda_update_every="update",
        )
    )


@dataclass
class DataConfig:
    source: DataSource = DataSource.auto  # data.path=FILE uses that file instead
    path: str | None = None
    # DSRL's Hugging Face dataset repo (null: skip it), then URL mirrors tried in order
    # ({file} = the file name from dsrl.infos.DATASET_URLS)
    hf_repo: str | None = DEFAULT_HF_REPO
    mirrors: list[str] = field(default_factory=lambda: list(DEFAULT_MIRRORS))
    download_timeout_s: float = 30.0
    # The collected dataset's seed. Fixed, not the run seed: like a DSRL file, one dataset per
    # task serves every run seed (and every sweep member).
    seed: int = 0
    collect: CollectConfig = field(default_factory=CollectConfig)


@dataclass
class OfflineConfig:
    """The ``offline`` group: which algorithm pretrains pi_0, Q_r, Q_c, and for how long."""

    algo: str = "none"  # none (random init: from scratch) | cpq | bearl | bcql
    steps: int = 0  # gradient steps (the option files take budget.offline_steps)
    # Pretraining seed: the run seed by default; a fixed value finetunes many run seeds from
    # one pi_0 (as the released code does from one offline checkpoint per task).
    seed: int = II("seed")
    # offline rows, progress-bar ticks and the run's pretraining checkpoint every this many steps
    log_every: int = 100
    cpq: CPQConfig = field(default_factory=CPQConfig)
    bearl: BEARLConfig = field(default_factory=BEARLConfig)
    bcql: BCQLConfig = field(default_factory=BCQLConfig)


@dataclass
class LoggerConfig:
    backend: LoggerBackend = LoggerBackend.wandb
    mode: WandbMode = WandbMode.offline  # offline (the default) needs no account
    project: str = "marvel"
    entity: str | None = None
    dir: str | None = None  # the W&B files' parent dir; None: the run dir
    group: str | None = None  # default: the sweep launch under -m, else the experiment name
    tags: list[str] = field(default_factory=list)


@dataclass
class BudgetConfig:
    name: str = MISSING
    online_iterations: int = MISSING
    eval_episodes: int = 10
    eval_every: int = 10  # iterations
    checkpoint_every: int = 10  # iterations
    collect_episodes: int = MISSING
    offline_steps: int = MISSING
    vpa_iterations: int = MISSING
    vpa_diagnostic_states: int = 32  # dataset states of VPA's diagnostic (0: none)
    vpa_diagnostic_horizon: int | None = None  # steps per diagnostic rollout (None: episode length)
    seeds: int = 3  # seeds per configuration in the sweeps (sweeps/*.yaml: range(budget.seeds))


@dataclass
class PathsConfig:
    cache_dir: str = MISSING


@dataclass
class MarvelConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    vpa: VPAConfig = field(default_factory=VPAConfig)
    pid: ControllerConfig = field(default_factory=ControllerConfig)
    finetune: SACLagConfig = field(default_factory=SACLagConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)  # all off: Marvel
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: str = MISSING  # the preset's name (conf/experiment/)
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    stage: Stage = Stage.all
    checkpoint: str | None = None  # stage=evaluate: a run dir or a .pt file
    # portable: the same numbers on every x86-64 CPU with AVX2 and any core count; native: the
    # CPU's fastest code and several threads, numbers that depend on both (marvel/numerics.py)
    numerics: Numerics = Numerics.portable
    # 0: automatic (portable: one; native: torch's default for a single run, a fair share of the
    # CPUs per job under a parallel launcher: marvel.launch.torch_threads_for_job)
    torch_threads: int = 0
    # auto: a run dir holding a finetuning checkpoint of the same config resumes from it;
    # never: start over (the dir's metrics and checkpoint are replaced)
    resume: Resume = Resume.auto
    # evaluation episodes run this many at a time, one env per worker process when > 1
    # (the scores are the same for any value: marvel/evaluate.py)
    eval_envs: int = 1
    # False: done = terminal or time-limit truncation in every Bellman target (offline, VPA,
    # online; the released code and OSRL); True: bootstrap through the time limit (textbook)
    bootstrap_through_time_limit: bool = False
    sweep: str | None = None  # set by +sweep=<name> (sweeps/<name>.yaml)


def register_configs() -> None:
    """The schema, and each ``sweeps/<name>.yaml`` as option ``<name>`` of the ``sweep`` group
    (global package), so ``python run.py -m +sweep=<name>`` applies it as a primary override,
    where a sweep's ``hydra.sweeper.params`` take effect."""
    store = ConfigStore.instance()
    store.store(name="marvel_schema", node=MarvelConfig)
    for path in sorted(SWEEPS_DIR.glob("*.yaml")):
        store.store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_")


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
        cfg.offline.algo in OFFLINE_ALGOS,
        "offline.algo",
        f"got {cfg.offline.algo!r}; valid: {', '.join(OFFLINE_ALGOS)}",
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
        cfg.vpa.start in VPA_STARTS,
        "vpa.start",
        f"got {cfg.vpa.start!r}; valid: {', '.join(VPA_STARTS)}",
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
        _check(
            agent.lambda_update_every in LAMBDA_UPDATE_EVERY,
            f"{prefix}.lambda_update_every",
            f"got {agent.lambda_update_every!r}; valid: {', '.join(LAMBDA_UPDATE_EVERY)}",
        )
        _check(0 < agent.gamma <= 1, f"{prefix}.gamma", f"must be in (0, 1], got {agent.gamma}")
        _check(0 < agent.tau <= 1, f"{prefix}.tau", f"must be in (0, 1], got {agent.tau}")
        _check(agent.alpha > 0, f"{prefix}.alpha", f"must be > 0, got {agent.alpha}")
    _check(
        cfg.stage != Stage.evaluate or cfg.checkpoint is not None,
        "checkpoint",
        "stage=evaluate needs checkpoint=<run dir or .pt file>",
    )
