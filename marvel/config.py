"""Structured-config schemas for every config group, registered with Hydra's ConfigStore.

conf/config.yaml extends ``marvel_schema`` (the "Structured Config schema" pattern), so a
misspelt key, a wrong type or a value outside a ``Choice`` field's set, in any YAML file or
override, fails at start with Hydra's message (run.py refuses the last in one line first:
``marvel.choices.refuse_bad_choices``). ``validate`` then checks the ranges a type cannot
express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, OmegaConf

from marvel.baselines import BaselinesConfig
from marvel.choices import Choice
from marvel.data.dsrl_files import DEFAULT_HF_REPO, DEFAULT_MIRRORS
from marvel.lagrange import ControllerConfig
from marvel.logging import LoggerBackend, WandbMode
from marvel.numerics import Numerics
from marvel.offline import OFFLINE_ALGORITHMS
from marvel.offline.bcql import BCQLConfig
from marvel.offline.bearl import BEARLConfig
from marvel.offline.cpq import CPQConfig
from marvel.sac_lag import LambdaUpdateEvery, SACLagConfig
from marvel.start import NetworkSizes
from marvel.vpa import VPAConfig

# offline.algo: an algorithm of marvel.offline, or none (from scratch: random initialization)
OfflineAlgo = Choice("OfflineAlgo", [(name, name) for name in ("none", *OFFLINE_ALGORITHMS)])
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
            lambda_update_every=LambdaUpdateEvery.update,
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

    algo: OfflineAlgo = OfflineAlgo.none
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
