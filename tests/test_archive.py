"""``python -m marvel.report.archive`` on a real sweep (the smoke ablation sweep): the archive
holds only the runs' evidence, the report written from it is the report written from the runs,
an archived run is kept and a different one of the same name refused, and a copy cut short is
completed by the same command. ``benchmarks/reproduce.py`` on one smoke run: archived as it
ends, not run again, and a run that would end after ``--until`` not started."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marvel.report.archive import RUN_EVIDENCE, main
from marvel.report.cli import main as report_main
from tests.helpers import ROOT, job_dirs


@pytest.fixture(scope="module")
def archived(ablation_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("archive") / "ablation"
    assert main([str(ablation_sweep), str(dest)]) == 0
    return dest


def test_the_archive_holds_the_evidence_only(ablation_sweep: Path, archived: Path) -> None:
    jobs = job_dirs(ablation_sweep)
    files = sorted(str(p.relative_to(archived)) for p in archived.rglob("*") if p.is_file())
    expected = [f"{job.name}/{name}" for job in jobs for name in RUN_EVIDENCE]
    assert files == sorted([*expected, "multirun.yaml"])
    for job in jobs:
        for name in RUN_EVIDENCE:
            assert (archived / job.name / name).read_bytes() == (job / name).read_bytes()


def test_the_report_from_the_archive_is_the_report_from_the_runs(
    ablation_sweep: Path, archived: Path, tmp_path: Path
) -> None:
    pages = []
    for name, runs in (("runs", ablation_sweep), ("archive", archived)):
        out = tmp_path / name / "RESULTS.md"
        out.parent.mkdir()
        assert report_main([str(runs), "--out", str(out), "--reps", "200"]) == 0
        page = out.read_text().replace(str(out), "OUT").replace(str(runs), "RUNS")
        numbers = (out.parent / "results" / "report.json").read_text()
        pages.append((page, numbers.replace(str(runs), "RUNS")))
    assert pages[0] == pages[1]


def test_archiving_again_keeps_what_is_there(
    ablation_sweep: Path, archived: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main([str(ablation_sweep), str(archived)]) == 0
    assert "archived 0 runs" in capsys.readouterr().out


def test_a_copy_cut_short_is_completed(ablation_sweep: Path, tmp_path: Path) -> None:
    dest = tmp_path / "archive"
    assert main([str(ablation_sweep), str(dest)]) == 0
    first = job_dirs(ablation_sweep)[0].name
    (dest / first / "summary.json").unlink()  # a copy killed before the run's last file
    shutil.rmtree(dest / first / ".hydra")
    assert main([str(ablation_sweep), str(dest)]) == 0
    assert (dest / first / "summary.json").is_file()
    assert (dest / first / ".hydra" / "config.yaml").is_file()


def test_another_run_of_the_same_name_is_refused(
    ablation_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "archive"
    first = job_dirs(ablation_sweep)[0].name
    other = dest / first / "metrics.jsonl"
    other.parent.mkdir(parents=True)
    other.write_text('{"online/update": 0}\n')
    capsys.readouterr()
    assert main([str(ablation_sweep), str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds another run's metrics.jsonl" in err
    assert not (dest / first / "summary.json").exists()


@pytest.mark.parametrize("case", ["overlap", "no runs", "missing"])
def test_bad_dirs_are_refused_in_one_line(
    case: str, ablation_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {
        "overlap": [str(ablation_sweep), str(ablation_sweep / "archive")],
        "no runs": [str(tmp_path), str(tmp_path.parent / f"{tmp_path.name}_archive")],
        "missing": [str(tmp_path / "nowhere"), str(tmp_path / "archive")],
    }[case]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("marvel.report.archive: error: ") and err.count("\n") == 1
    assert not (ablation_sweep / "archive").exists()


def reproduce(*args: str) -> subprocess.CompletedProcess[str]:
    script = ROOT / "benchmarks" / "reproduce.py"
    command = [sys.executable, str(script), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_campaign_archives_each_run_and_goes_on_where_it_stopped(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    where = ["--runs", str(tmp_path / "runs"), "--archive", str(archive_dir)]
    one = ["--suites", "smoke", "--tasks", "BallCircle", "--presets", "from_scratch"]
    done = reproduce(*where, *one, "--seeds", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "smoke/BallCircle/from_scratch_s0: ok" in done.stdout
    run = archive_dir / "smoke" / "BallCircle" / "from_scratch_s0"
    assert sorted(p.name for p in run.rglob("*") if p.is_file()) == sorted(
        Path(name).name for name in RUN_EVIDENCE
    )
    attempts = (archive_dir / "attempts.log").read_text().splitlines()
    assert [line.split()[1:] for line in attempts] == [
        ["start", "smoke/BallCircle/from_scratch_s0"],
        ["end", "rc=0", attempts[1].split()[3], "smoke/BallCircle/from_scratch_s0"],
    ]

    again = reproduce(*where, *one, "--seeds", "0")
    assert again.returncode == 0 and "1 of 1 runs archived" in again.stdout
    assert (archive_dir / "attempts.log").read_text().splitlines() == attempts

    summary = json.loads((run / "summary.json").read_text())
    summary["timings"]["total_s"] = 86_400.0  # a day a run: nothing fits before --until
    (run / "summary.json").write_text(json.dumps(summary))
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%H:%M")
    later = reproduce(*where, *one, "--seeds", "1", "--until", until)
    assert later.returncode == 0
    assert "smoke/BallCircle/from_scratch_s1: not started (about 86400 s" in later.stdout
    assert not (tmp_path / "runs" / "smoke" / "BallCircle" / "from_scratch_s1").exists()


def test_the_campaign_starts_each_pretraining_beside_another(tmp_path: Path) -> None:
    """Two jobs never wait on one pretraining: each (task, offline algorithm)'s first run is
    followed by a run of another one, so the second job pretrains that one meanwhile."""
    where = ["--runs", str(tmp_path / "runs"), "--archive", str(tmp_path / "archive")]
    listed = reproduce(*where, "--suites", "paper", "--dry-run")
    assert listed.returncode == 0, listed.stderr[-2000:]
    commands = [line.split() for line in listed.stdout.splitlines() if line.startswith("run.py")]
    assert len(commands) == 8 * 3 * 3 + 4 * 3 * 3 + 2 * 2 * 3  # presets, ablation, compatibility

    def pretraining(command: list[str]) -> tuple[str, str]:
        overrides = dict(arg.split("=", 1) for arg in command[1:] if "=" in arg)
        return overrides["env"], overrides.get("offline", "cpq")

    keys = [pretraining(command) for command in commands]
    firsts = [i for i, key in enumerate(keys) if key not in keys[:i]]
    assert len(firsts) == 8 + 2
    assert all(keys[i + 1] != keys[i] for i in firsts)


def test_the_expected_time_leaves_out_the_shared_collection_and_pretraining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    assert spec is not None and spec.loader is not None
    reproduce_module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "reproduce", reproduce_module)  # its dataclass looks it up
    spec.loader.exec_module(reproduce_module)
    run = reproduce_module.Run("paper", "DroneRun", "marvel", 1)
    assert reproduce_module.expected_wall_s(run, tmp_path) is None  # none archived: it starts
    timings = [  # the first run of the session made the dataset and pi_0; the second found them
        {"collect_s": 600.0, "pretrain_s": 900.0, "vpa_s": 80.0, "finetune_s": 850.0},
        {"vpa_s": 80.0, "finetune_s": 890.0},
    ]
    for seed, stages in enumerate(timings):
        run_dir = tmp_path / "paper" / "DroneRun" / f"marvel_s{seed}"
        run_dir.mkdir(parents=True)
        summary = {"timings": {**stages, "total_s": sum(stages.values()) + 2.0}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    assert reproduce_module.expected_wall_s(run, tmp_path) == pytest.approx((932.0 + 972.0) / 2)
