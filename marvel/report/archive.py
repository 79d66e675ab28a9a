"""Finished runs' evidence, kept where a report can be written again from it.

``python -m marvel.report.archive <runs dir> <archive dir>`` copies, for every finished
finetuning run under the runs dir, the files the report and the analysis read (``summary.json``,
``metrics.jsonl``, ``.hydra/config.yaml``, ``.hydra/overrides.yaml``), and every sweep's
``multirun.yaml``, into the archive dir at the same relative paths. Checkpoints, W&B files and
logs stay behind: a run is a few hundred kB. A suite made over several sessions or machines (one
numerics mode: docs/USAGE.md, Reproducibility) is then one set of dirs that can be committed,
and ``python -m marvel.report <archive dirs>`` writes the same page as from the runs themselves.

A run already in the archive is kept when its files are the same and refused when any differs:
two runs of one name never mix. Each file is written whole (a rename) and ``summary.json``
last, so a copy cut short leaves no run that a report would read, and the same command
completes it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from marvel.analysis.command import run_command
from marvel.analysis.runs import finished_run_dirs
from marvel.errors import AnalysisError
from marvel.fsutil import atomic_write

PROG = "marvel.report.archive"

RUN_EVIDENCE = ("metrics.jsonl", ".hydra/config.yaml", ".hydra/overrides.yaml", "summary.json")

SWEEP_EVIDENCE = "multirun.yaml"


def copy_once(source: Path, target: Path, owner: Path) -> bool:
    """Copy ``source`` to ``target`` unless an identical file is there (False then); a different
    file there is refused, naming ``owner`` (the run or sweep it belongs to)."""
    if target.is_file():
        if target.read_bytes() == source.read_bytes():
            return False
        raise AnalysisError(
            f"{owner} already holds another run's {target.name} ({source} differs): "
            "archive these runs into another dir"
        )
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    return True


def archive(runs_dir: Path, archive_dir: Path) -> str:
    """Copy the evidence of every finished run under ``runs_dir`` into ``archive_dir``; returns
    the line that says how many runs were copied and how many were there already."""
    if not runs_dir.is_dir():
        raise AnalysisError(f"no such directory: {runs_dir}")
    src, dest = runs_dir.resolve(), archive_dir.resolve()
    if src == dest or src in dest.parents or dest in src.parents:
        raise AnalysisError(f"{archive_dir} and {runs_dir} overlap: give an archive dir outside")
    runs = finished_run_dirs(runs_dir)
    if not runs:
        raise AnalysisError(f"no finished finetuning run under {runs_dir}")
    copied = 0
    for run_dir in runs:
        target = dest / run_dir.resolve().relative_to(src)
        missing = [name for name in RUN_EVIDENCE if not (run_dir / name).is_file()]
        if missing:
            raise AnalysisError(f"{run_dir} lacks {', '.join(missing)}: not a whole run")
        wrote = [copy_once(run_dir / name, target / name, target) for name in RUN_EVIDENCE]
        copied += any(wrote)
    for sweep_file in sorted(runs_dir.rglob(SWEEP_EVIDENCE)):
        target = dest / sweep_file.resolve().relative_to(src)
        copy_once(sweep_file, target, target.parent)
    return (
        f"archived {copied} runs into {archive_dir} "
        f"({len(runs) - copied} of the {len(runs)} finished runs were there already)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path, help="a sweep or run dir, or a dir of them")
    parser.add_argument("archive_dir", type=Path, help="where the evidence goes (same layout)")
    args = parser.parse_args(argv)
    target = f"the archive {args.archive_dir}"
    return run_command(PROG, target, lambda: archive(args.runs_dir, args.archive_dir))


if __name__ == "__main__":
    sys.exit(main())
