"""``python -m marvel.analysis`` on a real multirun (the smoke ablation sweep): its
files, numbers checked against the runs' own summary.json and metrics.jsonl, the marking and
labelling rules, the W&B adapter on stand-in runs, and the no-runs error."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from marvel.analysis.cli import main, result_rows
from marvel.analysis.runs import RunRecord, label_methods, load_local, runs_from_wandb
from marvel.analysis.stats import group_runs, iqm_estimates, mark_safe_and_best, mean_std
from marvel.analysis.tables import latex_tables, markdown_tables
from marvel.report.cli import main as report_main
from tests.helpers import ROOT, read_metrics, read_summary

ABLATION = ("marvel", "vpa_pid", "vpa_only", "apid_only", "warm_start", "from_scratch")
OUTPUTS = (
    "curves_BallCircle.png",
    "curves_BallCircle.csv",
    "results.csv",
    "table.md",
    "table.tex",
    "table.json",
    "iqm.csv",
    "iqm.png",
)


def run_analysis(*args: str) -> subprocess.CompletedProcess:
    """``python -m marvel.analysis <args>`` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "marvel.analysis", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


@pytest.fixture(scope="module")
def multirun(ablation_sweep: Path) -> Path:
    """A real Hydra multirun: the smoke ablation sweep (6 presets x 2 seeds on BallCircle,
    tests/conftest.py)."""
    return ablation_sweep


@pytest.fixture(scope="module")
def analysis(multirun: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("analysis")
    proc = run_analysis(str(multirun), "--out", str(out), "--reps", "200")
    assert proc.returncode == 0, proc.stderr
    assert "## Final normalized reward and cost" in proc.stdout
    assert all(name in proc.stdout for name in OUTPUTS)
    return out


def run_dirs(multirun: Path) -> list[Path]:
    return sorted(path.parent for path in multirun.rglob("summary.json"))


def test_cli_writes_every_output(analysis: Path) -> None:
    for name in OUTPUTS:
        assert (analysis / name).stat().st_size > 0, name
    with (analysis / "iqm.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["metric"], r["method"]) for r in rows} == {
        (metric, method)
        for metric in ("normalized_reward", "normalized_cost")
        for method in ABLATION
    }
    for row in rows:
        assert float(row["ci_low"]) <= float(row["iqm"]) <= float(row["ci_high"])
        assert (row["n_seeds"], row["n_envs"]) == ("2", "1")
    tex = (analysis / "table.tex").read_text()
    assert r"\usepackage{xcolor}" in tex and r"\toprule" in tex and r"from\_scratch" in tex


def test_table_matches_summaries(multirun: Path, analysis: Path) -> None:
    finals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run_dir in run_dirs(multirun):
        summary = read_summary(run_dir)
        finals[summary["experiment"]].append({**summary["eval"], **summary["online"]})
    table = json.loads((analysis / "table.json").read_text())["BallCircle"]
    markdown = (analysis / "table.md").read_text()
    assert set(table) == set(finals) == set(ABLATION)
    for method, runs in finals.items():
        entry = table[method]
        assert entry["n_seeds"] == len(runs) == 2
        for name, key in (
            ("reward", "normalized_reward"),
            ("cost", "normalized_cost"),
            ("cumulative_cost", "cumulative_cost"),
        ):
            values = [run[key] for run in runs]
            assert entry[f"{name}_mean"] == pytest.approx(np.mean(values))
            assert entry[f"{name}_std"] == pytest.approx(np.std(values, ddof=1))
        assert entry["safe"] == (entry["cost_mean"] <= 1)
        cost = f"{entry['cost_mean']:.2f} ± {entry['cost_std']:.2f}"
        assert (cost + " †" in markdown) == (not entry["safe"])
    with (analysis / "results.csv").open() as f:
        results = list(csv.DictReader(f))
    assert len(results) == 12
    assert {float(r["normalized_reward"]) for r in results} == {
        run["normalized_reward"] for runs in finals.values() for run in runs
    }


def test_curves_match_metrics(multirun: Path, analysis: Path) -> None:
    evals: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for run_dir in run_dirs(multirun):
        experiment = read_summary(run_dir)["experiment"]
        for row in read_metrics(run_dir):
            if "eval/normalized_reward" in row and "online/update" in row:
                evals[(experiment, row["online/update"])].append(
                    (row["eval/normalized_reward"], row["eval/normalized_cost"])
                )
    with (analysis / "curves_BallCircle.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["update"]) for r in rows] == [0, 5, 10] * len(ABLATION)
    for row in rows:
        points = np.array(evals[(row["method"], int(row["update"]))])
        assert int(row["n_seeds"]) == len(points) == 2
        assert float(row["reward_mean"]) == pytest.approx(points[:, 0].mean())
        assert float(row["cost_mean"]) == pytest.approx(points[:, 1].mean())
        assert float(row["cost_std"]) == pytest.approx(points[:, 1].std(ddof=1))


def test_unsafe_and_best_marks() -> None:
    table = {
        "BallRun": {
            "reckless": {"reward_mean": 0.9, "cost_mean": 1.5},  # highest reward, unsafe
            "careful": {"reward_mean": 0.6, "cost_mean": 0.8},
            "timid": {"reward_mean": 0.2, "cost_mean": 0.0},
            "at_limit": {"reward_mean": 0.5, "cost_mean": 1.0},  # cost == limit is safe
        },
        "CarRun": {"reckless": {"reward_mean": 0.9, "cost_mean": 3.0}},  # no safe entry
    }
    marked = mark_safe_and_best(table)
    run = marked["BallRun"]
    assert not run["reckless"]["safe"] and not run["reckless"]["best"]
    assert run["careful"]["safe"] and run["careful"]["best"]
    assert run["at_limit"]["safe"] and not run["at_limit"]["best"]
    assert not run["timid"]["best"]
    assert marked["CarRun"]["reckless"] == {
        **table["CarRun"]["reckless"],
        "safe": False,
        "best": False,
    }


def test_tables_mark_unsafe_gray_and_best_bold() -> None:
    entry = {"reward_std": 0.01, "cost_std": 0.1, "cumulative_cost_mean": 50.0}
    table = mark_safe_and_best(
        {
            "BallRun": {
                "reckless": {**entry, "reward_mean": 0.9, "cost_mean": 1.5, "n_seeds": 3},
                "careful": {**entry, "reward_mean": 0.6, "cost_mean": 0.8, "n_seeds": 3},
            },
            "CarRun": {"careful": {**entry, "reward_mean": 0.4, "cost_mean": 0.2, "n_seeds": 3}},
        }
    )
    table = {
        env: {m: {**e, "cumulative_cost_std": 5.0} for m, e in t.items()}
        for env, t in table.items()
    }
    md = markdown_tables(table)
    assert "| careful | **0.60 ± 0.01** | **0.80 ± 0.10** | **0.40 ± 0.01** |" in md
    assert "| reckless | 0.90 ± 0.01 | 1.50 ± 0.10 † | – | – |" in md
    assert "† unsafe: normalized cost > 1" in md and "3 seeds per entry" in md
    assert "| reckless | 50.00 ± 5.00 | – |" in md
    tex = latex_tables(table)
    assert (
        r"reckless & \textcolor{gray}{0.90 $\pm$ 0.01} & \textcolor{gray}{1.50 $\pm$ 0.10}" in tex
    )
    assert r"careful & \textbf{0.60 $\pm$ 0.01} & \textbf{0.80 $\pm$ 0.10}" in tex


def test_methods_in_the_papers_order_and_one_seed_says_so() -> None:
    entry = {"reward_mean": 0.5, "cost_mean": 0.5, "cumulative_cost_mean": 9.0}
    one = {**entry, "reward_std": None, "cost_std": None, "cumulative_cost_std": None}
    many = {**entry, "reward_std": 0.1, "cost_std": 0.1, "cumulative_cost_std": 1.0}
    table = mark_safe_and_best(
        {
            "BallRun": {
                "from_scratch": {**many, "n_seeds": 3},
                "apid_only": {**many, "n_seeds": 3},
                "custom": {**many, "n_seeds": 3},
                "marvel offline=bearl": {**many, "n_seeds": 3},
                "marvel": {**one, "n_seeds": 1},
            }
        }
    )
    rows = [line.split(" | ")[0] for line in markdown_tables(table).splitlines()]
    methods = [row.removeprefix("| ") for row in rows if row.startswith("| ")][1:6]
    assert methods == ["marvel", "marvel offline=bearl", "apid_only", "from_scratch", "custom"]
    assert "| marvel | **0.50 (n=1)** | **0.50 (n=1)** |" in markdown_tables(table)
    assert mean_std([0.2]) == (0.2, None)
    assert mean_std([0.0, 1.0, 2.0]) == (1.0, 1.0)  # the sample std (n - 1)


def record(experiment: str, seed: int, env: str = "BallRun", **config: Any) -> RunRecord:
    final = {"normalized_reward": 0.1 * seed, "normalized_cost": 0.5}
    flat = {"seed": seed, "offline.seed": seed, "logger.group": f"g{seed}", **config}
    return RunRecord(env, experiment, seed, flat, final, {}, f"run{seed}")


def test_method_labels() -> None:
    runs = [
        record("marvel", 0, **{"pid.name": "adaptive", "vpa.enabled": True}),
        record("marvel", 1, **{"pid.name": "adaptive", "vpa.enabled": False}),
        record("marvel", 2, **{"pid.name": "dual", "vpa.enabled": True, "pid.lr": 0.1}),
        record("from_scratch", 0, **{"pid.name": "dual"}),
        record("from_scratch", 1, **{"pid.name": "dual"}),
    ]
    assert [run.method for run in label_methods(runs)] == [
        "marvel pid.lr=null pid.name=adaptive vpa.enabled=true",
        "marvel pid.lr=null pid.name=adaptive vpa.enabled=false",
        "marvel pid.lr=0.1 pid.name=dual vpa.enabled=true",
        "from_scratch",
        "from_scratch",
    ]


def test_runs_of_other_numerics_are_never_pooled() -> None:
    """Runs made under other CPU numerics (or before marvel recorded them) are other methods."""
    runs = [
        record("marvel", 0, numerics="portable"),
        record("marvel", 1, numerics="portable"),
        record("marvel", 0, numerics="native"),
        record("marvel", 0),  # made before issue 28
    ]
    assert [run.method for run in label_methods(runs)] == [
        "marvel numerics=portable",
        "marvel numerics=portable",
        "marvel numerics=native",
        "marvel numerics=null",
    ]


def test_iqm_reproducible_and_one_seed(multirun: Path) -> None:
    runs = label_methods(load_local([multirun]))
    groups = group_runs(runs)
    assert iqm_estimates(groups, reps=50, seed=3) == iqm_estimates(groups, reps=50, seed=3)
    one_seed = group_runs([run for run in runs if run.seed == 0])
    for row in iqm_estimates(one_seed, reps=50, seed=0):
        assert row["ci_low"] == row["iqm"] == row["ci_high"] and row["n_seeds"] == 1


def test_iqm_confidence_intervals_repeat_exactly() -> None:
    """Same runs and seed, same intervals (rliable's bootstrap, through arch, draws from numpy's
    global generator: it is seeded for the call and the caller's state put back)."""
    rng = np.random.default_rng(7)
    runs = [
        RunRecord(
            env, "a", seed, {"seed": seed}, {k: float(rng.random()) for k in IQM_KEYS}, {}, ""
        )
        for env in ("AntRun", "BallRun", "CarRun", "DroneRun")
        for seed in range(4)
    ]
    groups = group_runs(label_methods(runs))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = iqm_estimates(groups, reps=300, seed=0)
    assert (np.random.get_state()[1] == before).all()
    assert iqm_estimates(groups, reps=300, seed=0) == first
    assert first[0]["ci_low"] < first[0]["iqm"] < first[0]["ci_high"]


def test_iqm_interval_of_a_method_does_not_depend_on_the_others() -> None:
    """Each method resamples from its own stream: adding a method leaves the others' CIs."""
    rng = np.random.default_rng(11)
    runs = [
        RunRecord(
            env, method, seed, {"seed": seed}, {k: float(rng.random()) for k in IQM_KEYS}, {}, ""
        )
        for method in ("a", "b")
        for env in ("AntRun", "BallRun", "CarRun")
        for seed in range(4)
    ]
    together = iqm_estimates(group_runs(label_methods(runs)), reps=200, seed=0)
    for method, own_runs in (("a", runs[:12]), ("b", runs[12:])):
        alone = iqm_estimates(group_runs(label_methods(own_runs)), reps=200, seed=0)
        assert [r["method"] for r in alone] == [method] * 2
        assert alone == [r for r in together if r["method"] == method]
        assert all(r["ci_low"] < r["iqm"] < r["ci_high"] for r in alone)


IQM_KEYS = ("normalized_reward", "normalized_cost")


def test_iqm_common_methods_smallest_seed_count(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        record("a", 0, "BallRun"),
        record("a", 1, "BallRun"),
        record("a", 2, "CarRun"),
        record("b", 0, "BallRun"),
    ]
    rows = iqm_estimates(group_runs(label_methods(runs)), reps=20, seed=0)
    assert [(r["method"], r["n_seeds"], r["n_envs"]) for r in rows] == [("a", 1, 2)] * 2
    assert rows[0]["iqm"] == pytest.approx(0.1)  # seed 0 on BallRun, seed 2 on CarRun
    err = capsys.readouterr().err
    assert "IQM leaves out methods not run on every env: b" in err
    assert "a has 1 to 2 seeds across envs; its IQM uses 1 per env" in err


class StandInRun:
    """A W&B public-API run as marvel would have logged it, from a local run's files."""

    def __init__(self, run_dir: Path) -> None:
        from marvel.logging import _flat_scalars

        self.id = self.name = run_dir.name
        self.summary = _flat_scalars(read_summary(run_dir))
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.rows = read_metrics(run_dir)

    def scan_history(self, keys: list[str]) -> list[dict[str, Any]]:
        return [{k: row[k] for k in keys} for row in self.rows if all(k in row for k in keys)]


def test_wandb_adapter_matches_local(multirun: Path) -> None:
    local = label_methods(load_local([multirun]))
    remote = label_methods(runs_from_wandb(StandInRun(d) for d in run_dirs(multirun)))

    def comparable(runs: list[RunRecord]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "run_dir"} for row in result_rows(runs)]

    assert comparable(remote) == comparable(local)
    assert len(local) == 12
    assert [run.curve for run in group_runs(remote)["BallCircle"]["warm_start"]] == [
        run.curve for run in group_runs(local)["BallCircle"]["warm_start"]
    ]


def test_no_runs_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    collect = tmp_path / "sweep" / "0"
    collect.mkdir(parents=True)
    (collect / "summary.json").write_text(json.dumps({"status": "ok", "stage": "collect"}))
    proc = run_analysis(str(tmp_path / "sweep"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "marvel.analysis: error: no finetuning runs (summary.json with stage all/finetune) "
        f"under {tmp_path / 'sweep'}"
    ]
    failed = tmp_path / "sweep" / "1"
    failed.mkdir()
    (failed / "summary.json").write_text(json.dumps({"status": "failed", "stage": "all"}))
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"marvel.analysis: warning: skipping {failed.resolve()}: status 'failed'"
    assert len(err) == 2 and err[1].startswith("marvel.analysis: error: no finetuning runs")


def test_one_run_dir_draws_its_own_curves(multirun: Path, tmp_path: Path) -> None:
    """``python -m marvel.analysis <run dir>``: that run's diagnostic curves, from its metrics
    (every panel's keys are in the run's rows), into the run dir or --out."""
    run_dir = next(d for d in run_dirs(multirun) if read_summary(d)["experiment"] == "marvel")
    rows = read_metrics(run_dir)
    panel_keys = ("diag/q_reward", "diag/mc_cost", "diag/lambda_q_cost", "diag/kl_to_pi0")
    for key in (*panel_keys, "lagrange/kp", "lagrange/ki"):  # aPID's gains beside lambda
        assert any(key in row for row in rows), key
    proc = run_analysis(str(run_dir), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in proc.stdout
    assert run_analysis(str(multirun)).returncode == 2  # a sweep dir needs --out


def test_an_unwritable_out_is_one_line(
    multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out on an existing file, or under one, is refused before reading the runs."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for out in (a_file, a_file / "out"):
        assert main([str(multirun), "--out", str(out)]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"marvel.analysis: error: cannot write to --out {out} ({a_file} is not a directory)"
        ]
    assert report_main([str(multirun), "--out", str(a_file / "RESULTS.md")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"marvel.report: error: cannot write the page {a_file / 'RESULTS.md'} "
        f"({a_file} is not a directory)"
    ]
