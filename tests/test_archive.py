"""``python -m marvel.report.archive`` on a real sweep (the smoke ablation sweep): the archive
holds only the runs' evidence, the report written from it is the report written from the runs,
an archived run is kept and a different one of the same name refused, and a copy cut short is
completed by the same command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from marvel.report.archive import RUN_EVIDENCE, main
from marvel.report.cli import main as report_main
from tests.helpers import job_dirs


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
