"""Config composition: every group option composes and validates; bad input fails clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from marvel.baselines import make_baselines
from marvel.choices import Choice, refuse_bad_choices
from marvel.config import MarvelConfig, register_configs
from marvel.config_checks import validate
from marvel.envs import CUSTOM, TASKS
from marvel.errors import ConfigError
from tests.helpers import compose_config

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]

register_configs()


def test_groups_of_design() -> None:
    for group in (
        "env",
        "data",
        "offline",
        "vpa",
        "pid",
        "finetune",
        "logger",
        "budget",
        "experiment",
    ):
        assert group in GROUPS
    assert sorted(f.stem for f in (CONF / "env").glob("*.yaml")) == sorted([*TASKS, CUSTOM])


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_config(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    validate(cfg)


def test_defaults_follow_method() -> None:
    cfg = compose_config("budget=paper")
    assert cfg.env.name == "BallCircle" and cfg.env.cost_limit == 20
    # Marvel (METHOD.md section 6) is the default: CPQ start, VPA, aPID from lambda_0 = 0
    assert cfg.experiment == "marvel" and cfg.offline.algo == "cpq" and cfg.vpa.enabled
    assert cfg.pid.name == "adaptive" and cfg.pid.lambda_init == 0.0
    assert cfg.offline.seed == cfg.seed and cfg.data.seed == 0
    assert cfg.finetune.gamma == 0.99 and cfg.finetune.tau == 0.005
    assert cfg.finetune.actor_lr == 5e-5 and cfg.finetune.critic_cost_lr == 5e-3
    # The released code's dynamics where the paper is silent (METHOD.md, "Which side")
    assert cfg.offline.cpq.ood_penalty == "target" and not cfg.bootstrap_through_time_limit
    assert (
        cfg.finetune.lambda_update_every == "minibatch" and cfg.finetune.actor_uses_target_critics
    )
    assert cfg.finetune.episodes_per_iteration == 5 and cfg.finetune.updates_per_iteration == 5
    scratch = compose_config("experiment=from_scratch")
    assert scratch.offline.algo == "none" and not scratch.vpa.enabled
    assert scratch.pid.name == "dual" and scratch.pid.lr == 1e-4
    assert cfg.budget.online_iterations == 100
    drone = compose_config("env=DroneRun").env.networks
    assert drone.hidden_sizes == [256, 256, 256] and drone.num_reward_critics == 2
    assert make_baselines(OmegaConf.to_object(cfg.baselines)) == []  # Marvel: no baseline on


def test_misspelt_key_fails() -> None:
    with pytest.raises(Exception, match="actr_lr"):
        compose_config("finetune.actr_lr=1e-3")


def test_wrong_type_fails() -> None:
    with pytest.raises(Exception, match="batch_size"):
        compose_config("finetune.batch_size=many")


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(Exception, match="BallCircle") as err:
        compose_config("env=PointGoal")
    assert "AntRun" in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("env.cost_limit=-5", "env.cost_limit"),
        ("budget.online_iterations=0", "budget.online_iterations"),
        ("finetune.episodes_per_iteration=0", "finetune.episodes_per_iteration"),
        ("finetune.minibatch_size=100", "finetune.minibatch_size"),
        ("stage=evaluate", "checkpoint"),
        ("baselines.offline_fraction=1", "baselines.offline_fraction"),
        ("eval_envs=0", "eval_envs"),
        ("+finetune.actr_lr=1", "finetune.actr_lr: not a setting"),  # Hydra's hint, followed
        ("+seeed=1", "seeed: not a setting"),
        ("+env.finetune.actor_learning_rate=1", "env.finetune.actor_learning_rate"),
        ("torch_threads=2", "numerics=portable computes on one thread"),
        ("budget.eval_episodes=1", "budget.eval_episodes: must be >= 2"),
        ("seed=-3", "seed: must be an integer >= 0, got -3"),
        ("offline.seed=-1", "offline.seed: must be an integer >= 0"),
        ("env.finetune.actor_lr=-0.001", "env.finetune.actor_lr: a learning rate must be > 0"),
        ("finetune.critic_cost_lr=0", "finetune.critic_cost_lr: a learning rate must be > 0"),
        ("finetune.actor_lr=nan", "finetune.actor_lr: must be a finite number, got nan"),
        ("env.cost_limit=inf", "env.cost_limit: must be a finite number, got inf"),
        ("torch_threads=-1", "torch_threads: must be >= 0"),
        ("env.networks.hidden_sizes=[]", "env.networks.hidden_sizes: must list at least one"),
        ("offline.cpq.ood_quantile=1.5", r"offline.cpq.ood_quantile: must be in \[0, 1\]"),
        ("offline.cpq.batch_size=0", "offline.cpq.batch_size: must be >= 1"),
        ("vpa.diagnostic_rollouts=0", "vpa.diagnostic_rollouts: must be >= 1"),
        ("env.networks.num_reward_critics=0", "env.networks.num_reward_critics: must be >= 1"),
        ("offline.bearl.mmd_sigma=-1", "offline.bearl.mmd_sigma: must be > 0"),
        ("env.max_episode_steps=0", "the setting is for your own env"),
    ],
)
def test_out_of_range_values_are_rejected(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(override))


CHOICE_REFUSALS = [
    ("stage=train", "stage: got 'train'; valid: collect, pretrain, finetune, evaluate, all"),
    ("data.source=web", "data.source: got 'web'; valid: auto, dsrl, collect"),
    ("resume=sometimes", "resume: got 'sometimes'; valid: auto, never"),
    ("numerics=fast", "numerics: got 'fast'; valid: portable, native"),
    ("logger.backend=tensorboard", "logger.backend: got 'tensorboard'; valid: wandb, none"),
    ("logger.mode=dryrun", "logger.mode: got 'dryrun'; valid: offline, online, disabled"),
    ("pid.name=lqr", "pid.name: got 'lqr'; valid: dual, pid, adaptive"),
    ("pid.optimizer=rmsprop", "pid.optimizer: got 'rmsprop'; valid: adam, sgd"),
    ("offline.cpq.ood_penalty=paper", "ood_penalty: got 'paper'; valid: target, differentiable"),
    ("offline.bearl.kernel=rbf", "offline.bearl.kernel: got 'rbf'; valid: gaussian, laplacian"),
    ("offline.algo=iql", "offline.algo: got 'iql'; valid: none, cpq, bearl, bcql"),
    ("vpa.start=warm", "vpa.start: got 'warm'; valid: pretrained, fresh"),
    (
        "finetune.lambda_update_every=epoch",
        "finetune.lambda_update_every: got 'epoch'; valid: update, minibatch, iteration",
    ),
    ("stage=collect,train", "stage: got 'train'"),  # a sweep's values too
]


@pytest.mark.parametrize(("override", "message"), CHOICE_REFUSALS)
def test_a_value_outside_its_choices_is_refused(override: str, message: str) -> None:
    """A Choice setting takes only its values: the command line's refused in one line before
    Hydra runs (run.py), any source's by Hydra when it composes the config."""
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        refuse_bad_choices(MarvelConfig, [override])
    assert "\n" not in str(refused.value)
    if "," not in override:
        with pytest.raises(ConfigCompositionException) as composed:
            compose_config(override)
        assert "expected one of" in str(composed.value.__cause__)


def test_refuse_bad_choices_leaves_other_overrides_to_hydra() -> None:
    refuse_bad_choices(
        MarvelConfig,
        [
            "-m",
            "stage=collect,pretrain",
            "pid=adaptive",  # a config group, not a setting
            "+sweep=ablation",
            "hydra.run.dir=out",
            "numerics=${oc.env:MODE,native}",  # checked when it resolves (the test below)
            "seed=range(3)",
            "finetune.batch_size=many",  # Hydra's: not a Choice setting
        ],
    )


def test_an_environment_variable_outside_its_choices_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An interpolation's value is checked when the config resolves (validate)."""
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    with pytest.raises(ConfigError) as refused:
        validate(compose_config())
    assert str(refused.value) == (
        "logger.mode: got 'dryrun' from ${oc.env:WANDB_MODE,offline}; valid: offline, online, "
        "disabled"
    )


def test_choice_names_are_their_values() -> None:
    """Hydra reads a config file's or command line's value as a member's name."""
    for choice in Choice.__subclasses__():
        assert [member.name for member in choice] == list(choice.values()), choice


@pytest.mark.parametrize(
    "overrides",
    [
        ("experiment=from_scratch", "baselines.jsrl_initial_fraction=0.5"),
        ("experiment=from_scratch", "baselines.pex=true"),
        ("experiment=jsrl", "baselines.pex=true"),
    ],
)
def test_jsrl_and_pex_need_one_pretrained_start(overrides: tuple[str, ...]) -> None:
    """Both act with pi_0, so they need a pretrained start; they are separate baselines."""
    with pytest.raises(ConfigError, match="baselines.jsrl_initial_fraction|baselines.pex"):
        validate(compose_config(*overrides))
