"""``python -m marvel.report`` on a real sweep (the smoke ablation sweep): every number of its
tables recomputed from the runs' own summary.json and metrics.jsonl, the same page twice, the
verdicts' rules, and the refusals to pool runs that must not pool."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from marvel.report.cli import main
from marvel.report.suites import load_runs, sweep_commands
from marvel.report.verdicts import diagnostics, fails, verdicts
from tests.helpers import job_dirs, read_metrics, read_summary, run_cli


def cell(values: list[float], digits: int = 2) -> str:
    """The page's "mean ± sample std" of ``values``, computed here from the files."""
    array = np.asarray(values, dtype=float)
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"


def table_rows(page: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table that starts with ``header``."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def report(ablation_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "RESULTS.md"
    assert main([str(ablation_sweep), "--out", str(out), "--reps", "200"]) == 0
    return out


def test_every_table_number_comes_from_the_runs_files(ablation_sweep: Path, report: Path) -> None:
    page = report.read_text()
    by_preset: dict[str, list[Path]] = defaultdict(list)
    for run_dir in job_dirs(ablation_sweep):
        by_preset[read_summary(run_dir)["experiment"]].append(run_dir)
    rows = table_rows(page, "| task | preset | seeds |")
    assert [row[1] for row in rows] == [
        "pi_0", "marvel", "vpa_pid", "vpa_only", "apid_only", "warm_start", "from_scratch"
    ]  # fmt: skip
    for row in rows:
        assert row[0] == "BallCircle"
        if row[1] == "pi_0":
            starts = [read_summary(d)["initial_eval"] for d in by_preset["marvel"]]
            assert row[4] == f"{np.mean([s['normalized_reward'] for s in starts]):.2f}"
            assert row[5] == f"{np.mean([s['normalized_cost'] for s in starts]):.2f}"
            continue
        summaries = [read_summary(d) for d in by_preset[row[1]]]
        finals = [s["eval"] for s in summaries]
        assert row[2] == str(len(summaries)) == "2"
        assert row[3] == str(summaries[0]["online"]["updates"])
        assert row[4] == cell([f["normalized_reward"] for f in finals])
        assert row[5].removesuffix(" †") == cell([f["normalized_cost"] for f in finals])
        assert row[5].endswith("†") == (np.mean([f["normalized_cost"] for f in finals]) > 1)
        thirds = []
        for run_dir, summary in zip(by_preset[row[1]], summaries, strict=True):
            updates = summary["online"]["updates"]
            evals = [
                (r["eval/normalized_reward"], r["eval/normalized_cost"])
                for r in read_metrics(run_dir)
                if "eval/normalized_reward" in r and 3 * r["online/update"] > 2 * updates
            ]
            thirds.append(np.mean(evals, axis=0))
        assert row[6] == cell([t[0] for t in thirds])
        assert row[7] == cell([t[1] for t in thirds])
        assert row[8] == cell([s["online"]["cumulative_cost"] for s in summaries], 0)
        assert row[9] == f"{sum(f['normalized_cost'] <= 1 for f in finals)}/2"
    verdict_rows = table_rows(page, "| task | Marvel under the limit")
    assert [row[0] for row in verdict_rows] == ["BallCircle", "**holds on**"]
    means = {
        preset: np.mean([[read_summary(d)["eval"][f"normalized_{k}"] for k in ("reward", "cost")]
                         for d in dirs], axis=0)
        for preset, dirs in by_preset.items()
    }  # fmt: skip
    best = max(reward for reward, _ in means.values())
    expected = "n/a" if best < 0.05 else "holds" if means["marvel"][1] <= 1 else "**fails**"
    assert verdict_rows[0][1].startswith(expected)
    assert "commits: " in page and "numerics: `portable`" in page
    assert "python run.py -m +sweep=ablation env=BallCircle budget=smoke" in page
    figures = report.parent / "results"
    for name in ("curves_0.png", "iqm_0.png", "report.json"):
        assert (figures / name).stat().st_size > 0
    assert "results/curves_0.png" in page


def test_the_compatibility_table_comes_from_the_runs_files(
    ablation_sweep: Path, tmp_path: Path
) -> None:
    """Marvel on BEAR-Lag beside the CPQ sweep: its own row, read from its own files."""
    bearl = tmp_path / "runs" / "marvel_bearl"
    run_cli(
        "experiment=marvel",
        "offline=bearl",
        "env=BallCircle",
        "budget=smoke",
        f"hydra.run.dir={bearl}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    )
    out = tmp_path / "page" / "RESULTS.md"
    assert main([str(ablation_sweep), str(bearl.parent), "--out", str(out), "--reps", "50"]) == 0
    page = out.read_text()
    rows = {(row[1], row[2]): row for row in table_rows(page, "| task | offline algorithm |")}
    cpq_presets = ("marvel", "vpa_pid", "vpa_only", "apid_only", "warm_start")
    assert list(rows) == [("bearl", "marvel"), *(("cpq", preset) for preset in cpq_presets)]
    summary = read_summary(bearl)
    start, final = summary["initial_eval"], summary["eval"]
    row = rows[("bearl", "marvel")]
    assert row[3] == "1"
    assert row[4] == f"{start['normalized_reward']:.2f} / {start['normalized_cost']:.2f}"
    assert row[5] == f"{final['normalized_reward']:.2f}"
    assert row[6].removesuffix(" †") == f"{final['normalized_cost']:.2f}"
    assert row[7] == f"{summary['online']['cumulative_cost']:.0f}"
    assert row[8] == f"{int(final['normalized_cost'] <= 1)}/1"
    main_rows = {row[1]: row for row in table_rows(page, "| task | preset | seeds |")}
    assert rows[("cpq", "marvel")][5:7] == main_rows["marvel"][4:6]
    total_s = sum(read_summary(d)["timings"]["total_s"] for d in [*job_dirs(ablation_sweep), bearl])
    (suite,) = json.loads((out.parent / "results" / "report.json").read_text()).values()
    assert suite["run_s"] == pytest.approx(total_s)  # the compatibility runs' time counts too


def test_the_same_runs_give_the_same_page(ablation_sweep: Path, report: Path) -> None:
    again = report.parent / "again" / "RESULTS.md"
    again.parent.mkdir()
    assert main([str(ablation_sweep), "--out", str(again), "--reps", "200"]) == 0
    first = report.read_text().replace(str(report), "OUT")
    assert again.read_text().replace(str(again), "OUT") == first
    assert (again.parent / "results/report.json").read_bytes() == (
        report.parent / "results/report.json"
    ).read_bytes()


def test_verdicts() -> None:
    def entry(reward: float, cost: float, cumulative: float) -> dict:
        return {"reward": [reward, None], "cost": [cost, None], "cumulative_cost": [cumulative, 0]}

    rho = {
        f"{a}_{w}": [v, 3]
        for a in ("dataset", "random")
        for w, v in (("before", 0.2), ("after", 0.5))
    }
    holds = verdicts(
        {
            "marvel": entry(0.5, 0.9, 100),
            "vpa_only": entry(0.9, 0.5, 50),  # an ablation: not a baseline
            "warm_start": entry(0.4, 0.2, 300),
            "from_scratch": entry(0.8, 3.0, 900),  # unsafe: not compared
        },
        rho,
    )
    assert {name: v["holds"] for name, v in holds.items()} == {
        "under_limit": True,
        "best_safe_reward": True,
        "cheaper_than_scratch": True,
        "vpa_ranks_costs": True,
    }
    over_limit = verdicts(
        {"marvel": entry(0.5, 1.2, 1000), "from_scratch": entry(0.8, 0.5, 900)}, None
    )
    assert {name: v["holds"] for name, v in over_limit.items()} == {
        "under_limit": False,
        "best_safe_reward": False,
        "cheaper_than_scratch": False,
        "vpa_ranks_costs": None,
    }
    dataset_only = {**rho, "random_after": [0.1, 3]}  # the paper's table: random actions
    assert (
        verdicts({"marvel": entry(0.5, 0.5, 10)}, dataset_only)["vpa_ranks_costs"]["holds"] is False
    )
    nothing_learnt = verdicts(
        {"marvel": entry(0.01, 0.0, 0), "from_scratch": entry(0.02, 0, 0)}, rho
    )
    assert {v["holds"] for v in nothing_learnt.values()} == {None}
    assert nothing_learnt["under_limit"]["why"] == "no preset learns: best reward 0.02"
    below = verdicts({"marvel": entry(0.5, 0.5, 10), "warm_start": entry(0.6, 0.5, 9)}, None)
    assert below["best_safe_reward"] == {"holds": False, "why": "0.50 vs warm_start 0.60"}
    # a from scratch that never stands up (AntCircle) incurs no cost: Marvel fails claim 3 alone
    fallen = verdicts({"marvel": entry(0.5, 0.5, 100), "from_scratch": entry(0.0, 0.0, 0)}, rho)
    assert [name for name, v in fallen.items() if v["holds"] is False] == ["cheaper_than_scratch"]
    assert [fails(v) for v in (holds, over_limit, fallen, below, nothing_learnt)] == [
        False,
        True,
        True,
        True,
        False,
    ]


def copy_runs(ablation_sweep: Path, dest: Path, presets: tuple[str, ...]) -> list[Path]:
    copies = []
    for run_dir in job_dirs(ablation_sweep):
        if read_summary(run_dir)["experiment"] in presets:
            copies.append(Path(shutil.copytree(run_dir, dest / run_dir.name)))
    return copies


def edit_summary(run_dir: Path, edit) -> None:
    summary = read_summary(run_dir)
    edit(summary)
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_runs_that_must_not_pool_are_refused(
    ablation_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "RESULTS.md"
    twice = copy_runs(ablation_sweep, tmp_path / "a", ("marvel",))
    copy_runs(ablation_sweep, tmp_path / "b", ("marvel",))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 2
    assert "two runs of marvel seed 0 on BallCircle" in capsys.readouterr().err

    edit_summary(twice[0], lambda s: s["metadata"]["numerics"].update(mode="native"))
    assert main([str(tmp_path / "a"), "--out", str(out)]) == 2
    assert "different numerics (native, portable)" in capsys.readouterr().err

    edit_summary(twice[0], lambda s: s["metadata"]["numerics"].update(mode="portable"))
    config_path = twice[1] / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["finetune"]["gamma"] = 0.95
    config_path.write_text(yaml.safe_dump(config))
    assert main([str(tmp_path / "a"), "--out", str(out)]) == 2
    assert "differ in finetune.gamma" in capsys.readouterr().err
    assert not out.exists()


def test_single_runs_show_as_the_multirun_that_makes_them(tmp_path: Path) -> None:
    for preset, seed in (("warm_start", 1), ("marvel", 0), ("marvel", 1), ("warm_start", 0)):
        run_dir = tmp_path / f"{preset}_{seed}"
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / "summary.json").write_text("{}")
        overrides = [f"experiment={preset}", "env=CarRun", f"seed={seed}", "budget=paper"]
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    assert sweep_commands([tmp_path]) == [
        "python run.py -m experiment=marvel,warm_start env=CarRun budget=paper seed=0,1"
    ]


def test_marvels_diagnostics_come_from_its_metrics(ablation_sweep: Path) -> None:
    """ "Where Marvel fails" reads lambda, Q_c against Monte-Carlo, KL to pi_0 and the entropy
    from each Marvel run's metrics.jsonl, means over the seeds."""
    marvel = [run for run in load_runs([ablation_sweep]) if run.experiment == "marvel"]
    facts = diagnostics(marvel)
    per_seed = defaultdict(list)
    for run in marvel:
        rows = read_metrics(Path(run.record.source))
        keys = ("lagrange/lambda", "diag/q_cost", "diag/kl_to_pi0", "diag/entropy")
        series = {key: [r[key] for r in rows if r.get(key) is not None] for key in keys}
        assert all(series.values())
        per_seed["lambda_final"].append(series["lagrange/lambda"][-1])
        per_seed["lambda_max"].append(max(series["lagrange/lambda"]))
        per_seed["q_cost_first"].append(series["diag/q_cost"][0])
        per_seed["kl_final"].append(series["diag/kl_to_pi0"][-1])
        per_seed["entropy_first"].append(series["diag/entropy"][0])
        per_seed["entropy_final"].append(series["diag/entropy"][-1])
    assert len(marvel) == 2
    for key, values in per_seed.items():
        assert facts[key] == pytest.approx(np.mean(values)), key
