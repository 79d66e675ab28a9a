"""The command line as users run it (``python run.py ...``), at smoke budget: each stage's
contract, the run dir's files (docs/USAGE.md, "A run and its directory"), and one clear line for
each kind of bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from marvel import numerics
from marvel.checkpoint import load_policy
from marvel.data.dsrl_files import load_dsrl_dataset
from marvel.errors import ConfigError, MarvelError
from marvel.pipeline import preflight, verdict
from tests.helpers import (
    ROOT,
    assert_clean_error,
    compose_config,
    job_dirs,
    read_metrics,
    read_summary,
    run_cli,
)

SMOKE = ("budget=smoke",)


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This module's runs build and reuse a cache of their own: what they assert about cache
    misses and hits holds whichever tests ran before them in the session."""
    session_cache = os.environ["MARVEL_CACHE"]
    os.environ["MARVEL_CACHE"] = str(tmp_path_factory.mktemp("cli-cache"))
    yield
    os.environ["MARVEL_CACHE"] = session_cache


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("scratch")
    run_cli("experiment=from_scratch", "env=BallRun", *SMOKE, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="module")
def collect_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("collect")
    run_cli("stage=collect", "env=BallCircle", *SMOKE, f"hydra.run.dir={run_dir}")
    return run_dir


def test_from_scratch_contract(scratch_run: Path) -> None:
    summary = read_summary(scratch_run)
    for key in ("reward", "cost", "normalized_reward", "normalized_cost"):
        assert isinstance(summary["eval"][key], float)
    assert summary["experiment"] == "from_scratch" and summary["task"]["name"] == "BallRun"
    assert summary["online"]["iterations"] == 2 and summary["online"]["updates"] == 10
    assert summary["metadata"]["packages"]["dsrl"] == "0.1.0"
    assert summary["numerics"] == "portable" and summary["torch_threads"] == 1
    assert summary["metadata"]["numerics"]["settings"] == numerics.PORTABLE_SETTINGS
    assert summary["eval"]["cost_se"] >= 0 and isinstance(summary["eval"]["at_limit"], bool)
    rows = read_metrics(scratch_run)
    assert len(rows) == 3  # the starting policy's evaluation, then one row per iteration
    assert all("online/update" in r and "lagrange/lambda" in r for r in rows)
    assert [r["online/update"] for r in rows] == [0, 5, 10]
    assert (scratch_run / ".hydra" / "config.yaml").is_file()
    assert (scratch_run / "checkpoints" / "last.pt").is_file()


def test_wandb_offline_run_written(scratch_run: Path) -> None:
    runs = list((scratch_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds its .wandb log"


def test_same_seed_same_metrics(scratch_run: Path, tmp_path: Path) -> None:
    run_cli("experiment=from_scratch", "env=BallRun", *SMOKE, f"hydra.run.dir={tmp_path}")

    def numbers(run_dir: Path) -> list[dict]:
        return [
            {k: v for k, v in row.items() if not k.startswith("perf/")}
            for row in read_metrics(run_dir)
        ]

    assert numbers(tmp_path) == numbers(scratch_run)


def test_evaluate_a_checkpoint(scratch_run: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "stage=evaluate", f"checkpoint={scratch_run}", *SMOKE, f"hydra.run.dir={tmp_path}"
    )
    assert "evaluate: 100%" in proc.stderr and "| 2/2 [" in proc.stderr  # its progress bar
    summary = read_summary(tmp_path)
    assert summary["task"]["name"] == "BallRun"
    assert summary["eval"]["episodes"] == 2
    # the same deterministic policy and seeds: the finetuning run's final evaluation
    assert summary["eval"]["reward"] == pytest.approx(read_summary(scratch_run)["eval"]["reward"])


def test_collect_contract(collect_run: Path) -> None:
    dataset = read_summary(collect_run)["dataset"]
    assert dataset["source"] == "collect" and len(dataset["sha256"]) == 64
    path = Path(dataset["path"])
    data = load_dsrl_dataset(path, "BallCircle")  # through dsrl's own get_dataset
    assert data["observations"].shape == (4 * 200, 8) and data["actions"].shape == (800, 2)
    assert path.with_suffix(".crplot.png").stat().st_size > 0


def test_collection_is_cached(collect_run: Path, tmp_path: Path) -> None:
    proc = run_cli("stage=collect", "env=BallCircle", *SMOKE, f"hydra.run.dir={tmp_path}")
    assert "reusing collected dataset" in proc.stdout + proc.stderr
    assert (
        read_summary(tmp_path)["dataset"]["sha256"]
        == read_summary(collect_run)["dataset"]["sha256"]
    )


def test_finetune_stage_never_collects_or_pretrains(tmp_path: Path) -> None:
    """stage=finetune with an empty cache: refused in one line, naming the stage to run first."""
    proc = run_cli(
        "stage=finetune",
        "env=BallCircle",
        *SMOKE,
        "logger=none",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert_clean_error(
        proc, "stage=finetune reads the collected dataset from the cache", "stage=collect"
    )
    assert not list((tmp_path / "cache").rglob("*.hdf5"))


def test_data_path_uses_the_file(collect_run: Path, tmp_path: Path) -> None:
    path = read_summary(collect_run)["dataset"]["path"]
    run_cli(
        "stage=finetune",
        "experiment=from_scratch",
        "env=BallCircle",
        f"data.path={path}",
        "logger=none",
        "budget.online_iterations=1",
        *SMOKE,
        f"hydra.run.dir={tmp_path}",
    )
    summary = read_summary(tmp_path)
    assert summary["dataset"]["source"] == "file" and summary["dataset"]["path"] == path
    assert not (tmp_path / "wandb").exists()  # logger=none


@pytest.mark.parametrize(
    ("overrides", "fragments", "refused_at_start"),
    [
        (("env=PointGoal",), ("PointGoal", "BallCircle", "AntRun"), True),
        (("finetune.actr_lr=1",), ("actr_lr",), True),
        (("+finetune.actr_lr=1",), ("finetune.actr_lr: not a setting",), True),
        (("finetune.batch_size=many",), ("batch_size", "many"), True),
        (("stage=collect", "data.path=/nonexistent.hdf5"), ("/nonexistent.hdf5",), False),
        (("stage=evaluate", "checkpoint=/nonexistent/run"), ("no checkpoint at",), True),
        (("device=gpu",), ("device=gpu", "valid: auto, cpu, cuda, cuda:N"), True),
        (("paths.cache_dir=/etc/hostname/c",), ("/etc/hostname is not a directory",), True),
        (("numerics=fast",), ("numerics: got 'fast'; valid: portable, native",), True),
        (("pid.name=lqr",), ("pid.name: got 'lqr'; valid: dual, pid, adaptive",), True),
        (("-m", "numerics=portable,native"), ("numerics takes one value per command",), True),
        (("seed=-3",), ("seed: must be an integer >= 0, got -3",), True),
        (("-m", "+sweep=ablation", "budget.seeds=0"), ("seed=range(0) has no value",), True),
    ],
)
def test_bad_input_fails_with_one_clear_message(
    overrides, fragments, refused_at_start: bool, tmp_path: Path
) -> None:
    """One line, no traceback; a command refused at start creates no run dir (Hydra has not
    made it yet). One case per way a command is refused; the rest of the checks below."""
    run_dir = tmp_path / "run"
    proc = run_cli(*overrides, *SMOKE, f"hydra.run.dir={run_dir}", check=False)
    assert_clean_error(proc, *fragments)
    assert run_dir.exists() != refused_at_start


def test_a_value_outside_its_choices_is_one_line(tmp_path: Path) -> None:
    """A Choice setting's wrong value, a sweep's included: Hydra would say it in several
    lines; run.py says it in one, before anything is launched."""
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "stage=collect,train", *SMOKE, f"hydra.sweep.dir={sweep_dir}", check=False)
    assert proc.returncode == 2 and not sweep_dir.exists()
    assert proc.stderr == (
        "marvel: error: stage: got 'train'; valid: collect, pretrain, finetune, evaluate, all\n"
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (("env.cost_limit=-1",), "env.cost_limit: must be >= 0"),
        (("budget.online_iterations=0",), "budget.online_iterations"),
        (("stage=pretrain", "offline=none"), "offline=cpq"),
        (("device=mps",), "device=mps: marvel runs on cpu or cuda"),
        (("device=cuda:99",), "device=cuda:99 is not available"),
        (("stage=evaluate", "checkpoint=/etc/hostname"), "not a loadable marvel checkpoint"),
    ],
)
def test_preflight_refuses_with_one_line(overrides, fragment: str, tmp_path: Path) -> None:
    """The checks that refuse a command before Hydra writes anything (the command line's
    handling of them is the test above)."""
    with pytest.raises((MarvelError, ConfigError)) as refused:
        preflight(compose_config(*overrides, *SMOKE), tmp_path / "run")
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()


def test_an_unusable_dsrl_dataset_dir_is_one_line() -> None:
    """dsrl creates DSRL_DATASET_DIR when imported: a path under a file fails even --help."""
    env = {**os.environ, "DSRL_DATASET_DIR": "/etc/hostname/datasets"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert_clean_error(proc, "DSRL_DATASET_DIR=/etc/hostname/datasets cannot be created")


def test_dsrl_unreachable_says_how_to_proceed(tmp_path: Path) -> None:
    proc = run_cli(
        "data=dsrl",
        "stage=collect",
        "env=BallRun",
        *SMOKE,
        f"hydra.run.dir={tmp_path}",
        "data.mirrors=['http://127.0.0.1:9/{file}']",
        check=False,
    )
    assert_clean_error(proc, "SafetyBallRun-v0-80-940.hdf5", "DSRL_DATASET_DIR", "data=collect")


@pytest.fixture(scope="module")
def marvel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("marvel")
    proc = run_cli("env=BallCircle", *SMOKE, f"hydra.run.dir={run_dir}")  # marvel: the default
    (run_dir.parent / "marvel_output.txt").write_text(proc.stdout)
    return run_dir


def test_marvel_pipeline_contract(marvel_run: Path) -> None:
    summary = read_summary(marvel_run)
    assert summary["experiment"] == "marvel"
    assert summary["pretrained"]["algo"] == "cpq" and Path(summary["pretrained"]["path"]).is_file()
    diagnostic = summary["vpa"]["diagnostic"]
    assert summary["vpa"]["start"] == "pretrained" and diagnostic["states"] == 2
    for when in ("before", "after"):
        for kind in ("dataset", "random"):
            for key in ("spearman_reward", "spearman_cost", "q_cost", "mc_cost"):
                assert f"{key}_{kind}" in diagnostic[when]
    assert summary["dataset"]["source"] == "collect"
    # the run ends with its result in words, on the console and in run.log
    output = (marvel_run.parent / "marvel_output.txt").read_text().strip().splitlines()
    block = output[next(i for i, line in enumerate(output) if "] result: " in line) :]
    final, start = summary["eval"], summary["initial_eval"]
    label = "AT THE LIMIT" if final["at_limit"] else "SAFE" if final["safe"] else "UNSAFE"
    assert block[0] == f"[marvel] result: BallCircle marvel seed 0: {label} (cost limit 20)"
    assert f"{final['normalized_cost']:.2f} ± {final['normalized_cost_se']:.2f})" in block[1]
    assert "starting policy" in block[2] and f"reward {start['reward']:.1f}" in block[2]
    assert block[3] == "[marvel]   ± one standard error over 2 evaluation episodes"
    assert ("cannot tell SAFE from UNSAFE" in block[4]) == final["at_limit"]
    assert block[-3].endswith(str(marvel_run / "metrics.jsonl"))
    assert block[-2].endswith(str(marvel_run / "checkpoints" / "last.pt"))
    assert block[-1].endswith(f"python -m marvel.analysis {marvel_run}")
    run_log = (marvel_run / "run.log").read_text()
    assert all(line.removeprefix("[marvel] ") in run_log for line in block)
    rows = [r for r in read_metrics(marvel_run) if "train/episode_reward" in r]
    assert rows and all("lagrange/kp" in r and "lagrange/lambda" in r for r in rows)
    rows = read_metrics(marvel_run)
    assert any("offline/step" in r and "offline/loss/actor" in r for r in rows)
    assert any("vpa/iteration" in r and "vpa/after/spearman_reward_dataset" in r for r in rows)
    finetune_rows = [r for r in rows if "train/episode_cost" in r]
    assert all("diag/q_cost" in r and "diag/kl_to_pi0" in r for r in finetune_rows)
    offline_or_vpa = [r for r in rows if "offline/step" in r or "vpa/iteration" in r]
    assert offline_or_vpa and all("online/update" not in r for r in offline_or_vpa)


@pytest.mark.parametrize(
    ("normalized_cost", "label"),
    [(0.5, "SAFE"), (1.5, "UNSAFE"), (0.9, "AT THE LIMIT"), (1.1, "AT THE LIMIT")],
)
def test_verdict_shows_its_uncertainty(normalized_cost: float, label: str) -> None:
    """The limit within one standard error (here 0.2) of the mean cost: neither SAFE nor
    UNSAFE."""
    se = 0.2
    result = {
        "reward": 100.0,
        "cost": 20 * normalized_cost,
        "cost_se": 20 * se,
        "normalized_reward": 0.5,
        "normalized_cost": normalized_cost,
        "normalized_cost_se": se,
        "episodes": 10,
        "safe": normalized_cost <= 1,
        "at_limit": abs(normalized_cost - 1) <= se,
        "cost_limit": 20.0,
    }
    task = {"name": "BallCircle", "reward_min": 0.0}
    summary = {"task": task, "experiment": "marvel", "seed": 0, "eval": result}
    lines = verdict(summary, Path("run"))
    assert lines[0] == f"result: BallCircle marvel seed 0: {label} (cost limit 20)"
    assert f"cost {20 * normalized_cost:.1f} ± {20 * se:.1f}" in lines[1]
    assert lines[2] == "  ± one standard error over 10 evaluation episodes"
    assert ("cannot tell SAFE from UNSAFE" in lines[3]) == (label == "AT THE LIMIT")


def test_pretrained_cache_is_hit_on_the_second_run(marvel_run: Path, tmp_path: Path) -> None:
    proc = run_cli("experiment=warm_start", "env=BallCircle", *SMOKE, f"hydra.run.dir={tmp_path}")
    assert "reusing pretrained cpq model" in proc.stdout + proc.stderr
    first, second = read_summary(marvel_run)["pretrained"], read_summary(tmp_path)["pretrained"]
    assert first["cached"] is False and second["cached"] is True
    assert second["path"] == first["path"]


def test_other_run_seeds_share_the_dataset_and_a_fixed_offline_seed(
    marvel_run: Path, tmp_path: Path
) -> None:
    """data.seed is fixed (one dataset per task, like DSRL); offline.seed=0 shares one pi_0."""
    run_cli("seed=1", "offline.seed=0", *SMOKE, "logger=none", f"hydra.run.dir={tmp_path}")
    first, second = read_summary(marvel_run), read_summary(tmp_path)
    assert second["seed"] == 1 and second["dataset"] == first["dataset"]
    assert second["pretrained"]["cached"] is True
    assert second["pretrained"]["path"] == first["pretrained"]["path"]


def test_evaluate_a_pretrained_model(marvel_run: Path, tmp_path: Path) -> None:
    path = read_summary(marvel_run)["pretrained"]["path"]
    actor, meta = load_policy(path)
    assert meta["kind"] == "pretrained" and meta["task"] == "BallCircle"
    run_cli(
        "stage=evaluate", f"checkpoint={path}", "logger=none", *SMOKE, f"hydra.run.dir={tmp_path}"
    )
    assert read_summary(tmp_path)["eval"]["episodes"] == 2


def test_evaluate_an_offline_only_run_dir(tmp_path: Path) -> None:
    """checkpoint=<an offline_only run dir>: its pretraining checkpoint's pi_0, which scores
    what the offline run's own evaluation scored (same policy, same seeds)."""
    offline_dir, eval_dir = tmp_path / "offline", tmp_path / "eval"
    run_cli(
        "experiment=offline_only", "env=BallRun", "logger=none", *SMOKE,
        f"hydra.run.dir={offline_dir}",
    )  # fmt: skip
    actor, meta = load_policy(offline_dir)
    assert meta["kind"] == "pretraining" and meta["task"] == "BallRun"
    run_cli(
        "stage=evaluate", f"checkpoint={offline_dir}", "logger=none", *SMOKE,
        f"hydra.run.dir={eval_dir}",
    )  # fmt: skip
    evaluated, offline = read_summary(eval_dir)["eval"], read_summary(offline_dir)["eval"]
    assert evaluated["reward"] == pytest.approx(offline["reward"])
    assert evaluated["cost"] == pytest.approx(offline["cost"])


def test_cache_hit_gives_the_same_numbers(marvel_run: Path, tmp_path: Path) -> None:
    """Each stage reseeds from (seed, stage): reusing the cached pi_0 changes nothing after it.
    stage=finetune takes the dataset and pi_0 from the cache."""
    run_cli("stage=finetune", "env=BallCircle", *SMOKE, f"hydra.run.dir={tmp_path}")
    assert read_summary(tmp_path)["pretrained"]["cached"] is True

    def online_rows(run_dir: Path) -> list[dict]:
        rows = [r for r in read_metrics(run_dir) if "online/env_steps" in r or "vpa/iteration" in r]
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]

    assert online_rows(tmp_path) == online_rows(marvel_run)
    assert read_summary(tmp_path)["vpa"] == read_summary(marvel_run)["vpa"]


# the ablation's presets run in the ablation sweep (tests/test_sweeps.py)
OTHER_PRESETS = ("offline_only", "kl_to_prior", "target_noise", "hybrid_replay", "jsrl", "pex")


@pytest.fixture(scope="module")
def other_presets(marvel_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every preset outside the ablation, one job each of one multirun, from Marvel's cache."""
    sweep_dir = tmp_path_factory.mktemp("presets")
    run_cli(
        "-m",
        f"experiment={','.join(OTHER_PRESETS)}",
        "env=BallCircle",
        "logger=none",
        "torch_threads=1",
        *SMOKE,
        f"hydra.sweep.dir={sweep_dir}",
    )
    return {read_summary(d)["experiment"]: d for d in job_dirs(sweep_dir)}


@pytest.mark.parametrize("preset", OTHER_PRESETS)
def test_every_preset_runs(preset: str, other_presets: dict[str, Path]) -> None:
    run_dir = other_presets[preset]
    summary = read_summary(run_dir)
    assert summary["experiment"] == preset and "normalized_reward" in summary["eval"]
    assert summary["pretrained"]["cached"] is True  # every preset starts from the same pi_0
    if preset == "jsrl":  # JSRL logs its guide share
        rows = [r for r in read_metrics(run_dir) if "train/episode_reward" in r]
        assert [r["jsrl/guide_fraction"] for r in rows] == [1.0, 0.5]
    if preset == "pex":  # and PEX its rate of pi_0's actions
        rows = [r for r in read_metrics(run_dir) if "train/episode_reward" in r]
        assert all(0.0 <= r["pex/prior_action_rate"] <= 1.0 for r in rows)


@pytest.mark.parametrize("algo", ["bearl", "bcql"])
def test_every_offline_algorithm_runs_the_pipeline(
    algo: str, marvel_run: Path, tmp_path: Path
) -> None:
    run_cli(f"offline={algo}", "env=BallCircle", "logger=none", *SMOKE, f"hydra.run.dir={tmp_path}")
    summary = read_summary(tmp_path)
    assert summary["pretrained"]["algo"] == algo and summary["pretrained"]["cached"] is False
    assert f"-{algo}-" in Path(summary["pretrained"]["path"]).name
    assert summary["dataset"] == read_summary(marvel_run)["dataset"]  # the same cached dataset
    assert "spearman_cost_dataset" in summary["vpa"]["diagnostic"]["after"]
    assert "normalized_cost" in summary["eval"]
