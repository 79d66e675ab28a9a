"""Sweeps and launchers: every sweep file composes into valid jobs; the ablation sweep runs with
the basic launcher, with joblib (two parallel jobs pretrain once) and with
submitit_local; each job gets its share of the CPUs; the W&B dashboard plots what runs log."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from marvel.analysis.dashboard import build_workspace
from marvel.config import SWEEPS_DIR, register_configs
from marvel.config_checks import validate
from marvel.context import SweepInfo
from marvel.launch import torch_threads_for_job
from tests.helpers import compose_with_hydra, job_dirs, read_metrics, read_summary, run_cli

register_configs()

ABLATION = ["marvel", "vpa_pid", "vpa_only", "apid_only", "warm_start", "from_scratch"]
SWEEP_JOBS = {  # sweep -> number of jobs at budget=smoke (2 seeds)
    "ablation": 6 * 2,
    "baselines": 7 * 2,
    "offline_algos": 2 * 3 * 2,
    "envs": 8 * 2,
    "envs_velocity": 5 * 2,
    "init_lambda": 2 * 2,
}


def sweep_jobs(name: str, *overrides: str) -> list[list[str]]:
    """The jobs ``python run.py -m +sweep=<name> <overrides>`` launches, as override lists,
    expanded the way Hydra's basic sweeper does (its params first, the command line after)."""
    parser = OverridesParser.create()
    fixed = [
        o.input_line for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()
    ]
    cfg = compose_with_hydra(f"+sweep={name}", *fixed)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + list(overrides))
    by_key = {
        o.key_or_group: [
            f"{o.key_or_group}={v}"
            for v in (o.sweep_iterator() if o.is_sweep_override() else [o.value()])
        ]
        for o in parsed
    }
    return [list(job) for job in itertools.product(*by_key.values())]


@pytest.mark.parametrize("name", sorted(SWEEP_JOBS))
def test_sweep_files_compose(name: str) -> None:
    jobs = sweep_jobs(name, "budget=smoke")
    assert len(jobs) == SWEEP_JOBS[name]
    for job in jobs:
        cfg = compose_with_hydra(f"+sweep={name}", "env=BallCircle", *job)
        validate(cfg)
        assert cfg.sweep == name


def test_every_sweep_file_is_tested() -> None:
    searches = ["tune"]  # no grid: tests/test_tune.py
    assert sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")) == sorted([*SWEEP_JOBS, *searches])


def test_seeds_follow_the_budget_and_the_command_line() -> None:
    def seeds(jobs: list[list[str]]) -> set[str]:
        return {o for job in jobs for o in job if o.startswith("seed=")}

    assert seeds(sweep_jobs("ablation", "budget=paper")) == {f"seed={s}" for s in range(5)}
    jobs = sweep_jobs("ablation", "budget=smoke", "seed=7,8,9")
    assert len(jobs) == 6 * 3 and seeds(jobs) == {"seed=7", "seed=8", "seed=9"}


@pytest.mark.parametrize(
    "name", ["ablation", "baselines", "envs", "envs_velocity", "offline_algos"]
)
def test_seed_varies_fastest(name: str) -> None:
    """Consecutive jobs (the ones joblib runs side by side) differ in their seed, so they
    pretrain different pi_0's instead of one waiting on the other's, even when the command
    line lists the presets."""
    jobs = sweep_jobs(name, "budget=smoke", "experiment=marvel,warm_start")
    first, second = ([o for o in job if o.startswith("seed=")] for job in jobs[:2])
    assert (first, second) == (["seed=0"], ["seed=1"])


def test_ablation_sweep_contract(ablation_sweep: Path) -> None:
    """Every ablation preset x 2 seeds, one run dir each with its summary."""
    summaries = [read_summary(d) for d in job_dirs(ablation_sweep)]
    assert len(summaries) == 12
    assert sorted((s["experiment"], s["seed"]) for s in summaries) == sorted(
        itertools.product(ABLATION, (0, 1))
    )
    for s in summaries:
        assert s["status"] == "ok" and s["task"]["name"] == "BallCircle"
        assert s["sweep"] == {"name": "ablation", "dir": str(ablation_sweep)}
    # the 5 variants that start from the same (env, algorithm, seed) share one pretraining
    cached = [s["pretrained"]["cached"] for s in summaries if s["experiment"] != "from_scratch"]
    assert len(cached) == 10 and cached.count(False) == 2


def test_parallel_jobs_pretrain_once(tmp_path: Path) -> None:
    """joblib runs two jobs at once that need the same dataset and pretrained model: one
    computes each, the other waits on the lock and reuses it; each job runs 1 torch thread and
    logs its own W&B run."""
    sweep_dir, cache = tmp_path / "sweep", tmp_path / "cache"
    run_cli(
        "-m",
        "+sweep=ablation",
        "experiment=marvel,warm_start",
        "seed=0",
        "env=BallCircle",
        "budget=smoke",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={sweep_dir}",
    )
    summaries = [read_summary(d) for d in job_dirs(sweep_dir)]
    assert sorted(s["pretrained"]["cached"] for s in summaries) == [False, True]
    assert len(list((cache / "pretrained").glob("*.pt"))) == 1
    assert len(list((cache / "datasets").glob("*.hdf5"))) == 1
    assert {s["torch_threads"] for s in summaries} == {1}  # numerics=portable: one thread
    # W&B offline inside loky workers (hydra #1320, wandb #1525): one closed run per job
    for job in job_dirs(sweep_dir):
        assert len(list((job / "wandb").glob("offline-run-*/*.wandb"))) == 1


def test_submitit_local_launcher(tmp_path: Path) -> None:
    run_cli(
        "-m",
        "experiment=from_scratch",
        "seed=0,1",
        "env=BallRun",
        "budget=smoke",
        "logger=none",
        "hydra/launcher=submitit_local",
        "hydra.launcher.cpus_per_task=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    summaries = [read_summary(d) for d in job_dirs(tmp_path)]
    assert [s["seed"] for s in summaries] == [0, 1]
    assert all(s["torch_threads"] == 1 and s["sweep"]["name"] is None for s in summaries)


def test_a_failing_job_does_not_end_the_sweep(tmp_path: Path) -> None:
    """Job 0 is refused (a negative cost limit): its dir says why, job 1 still runs, and the
    sweep ends by naming the failed job and exiting non-zero."""
    proc = run_cli(
        "-m",
        "experiment=from_scratch",
        "env=BallRun",
        "env.cost_limit=-5,20",
        "budget=smoke",
        "logger=none",
        f"hydra.sweep.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode == 1
    bad, good = job_dirs(tmp_path)
    assert bad.name == "0_BallRun_from_scratch_s0"  # the job's number, task, method and seed
    failure = json.loads((bad / "failed.json").read_text())
    assert "cost_limit" in failure["error"] and failure["error_type"] == "ConfigError"
    assert read_summary(bad)["status"] == "failed"
    assert read_summary(good)["status"] == "ok"
    assert not (good / "failed.json").exists()
    assert "1 job(s) of the sweep failed" in proc.stderr
    assert f"{bad}: " in proc.stderr and f"{good}: " not in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("overrides", "cpus", "threads"),
    [
        ((), 8, 0),  # basic launcher: one job at a time, torch's default
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), 2, 1),
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), 8, 4),
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=-1"), 8, 1),
        (("hydra/launcher=joblib",), 2, 1),  # the plugin's default n_jobs=10
        (("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3"), 8, 3),
        (("hydra/launcher=slurm",), 64, 4),  # conf/hydra/launcher/slurm.yaml: 4 CPUs per task
    ],
)
def test_torch_threads_per_job(overrides: tuple[str, ...], cpus: int, threads: int) -> None:
    launcher = compose_with_hydra(*overrides).hydra.launcher
    assert torch_threads_for_job(launcher, cpus=cpus) == threads


def test_slurm_launcher_config() -> None:
    launcher = compose_with_hydra("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.max_num_timeout >= 1 and launcher.submitit_folder.endswith("/.submitit/%j")


def test_sweep_group_names_the_launch() -> None:
    info = SweepInfo("ablation", Path("/x/multirun/2026-11-24/15-42-07-123456"))
    assert info.group == "ablation:2026-11-24/15-42-07-123456"
    assert SweepInfo(None, Path("/tmp/S")).group == "multirun:tmp/S"


def test_figure2_lambda_init(tmp_path: Path) -> None:
    run_cli(
        "experiment=warm_start",
        "pid.lambda_init=figure2",
        "env=BallCircle",
        "budget=smoke",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
    )
    start = next(r for r in read_metrics(tmp_path) if r.get("online/update") == 0)
    assert start["lagrange/lambda"] == pytest.approx(0.65)
    proc = run_cli("pid.lambda_init=figure2", "env=BallRun", "budget=smoke", check=False)
    assert proc.returncode == 2
    assert "set env.figure2_lambda_init=<value>" in proc.stderr.strip().splitlines()[-1]


def test_dashboard_plots_what_runs_log(ablation_sweep: Path) -> None:
    """The workspace serializes to W&B's view spec, filters the sweep's group, groups by
    experiment, and every metric it plots is one a marvel run logs."""
    workspace = build_workspace("entity", "marvel", "ablation:2026-11-24/15-42-07-123456")
    spec = json.loads(json.dumps(workspace._to_model().model_dump(by_alias=True), default=str))
    panels = [
        p for s in spec["spec"]["section"]["panelBankConfig"]["sections"] for p in s["panels"]
    ]
    assert all(p["config"]["xAxis"] == "online/update" for p in panels)
    assert all(p["config"]["groupBy"] == "experiment.value" for p in panels)
    logged = {k for d in job_dirs(ablation_sweep) for r in read_metrics(d) for k in r}
    plotted = {m for p in panels for m in p["config"]["metrics"]}
    assert plotted <= logged, plotted - logged
    assert "ablation:2026-11-24/15-42-07-123456" in json.dumps(spec)
