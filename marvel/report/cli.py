"""The reproduction report: one Markdown page, with its figures, that says task by task where the
paper's claims hold, written from finished runs only.

``python -m marvel.report <dirs> --out docs/RESULTS.md [--notes docs/results_notes.yaml]`` reads
every finetuning run under the dirs (``summary.json``, ``metrics.jsonl``, ``.hydra/config.yaml``)
and writes the page, its figures into ``<page dir>/<page stem, lowercase>/`` (``docs/results/``)
and its numbers into ``<that dir>/report.json``. The same dirs give the same page.

Runs form **suites**, one per budget (its name, offline steps, pretraining seed and dataset
size); within a suite the runs on top of CPQ (and from scratch) make the main table, and runs on
other offline algorithms the compatibility study. Per task and suite the page has pi_0's score,
each preset's final and last-third scores and cumulative online cost, and a verdict on each claim:

1. *under the limit*: Marvel's final normalized cost, mean over seeds, is at most 1;
2. *best safe reward*: Marvel is under the limit and its mean final normalized reward is at least
   that of every safe baseline (a preset other than Marvel and its ablations);
3. *cheaper than from scratch*: Marvel's mean cumulative online cost is below from scratch's;
4. *VPA ranks the costs better*: VPA raises the cost critic's Spearman correlation with pi_0's
   Monte-Carlo costs (METHOD.md section 3, "Diagnostic"), mean over Marvel's seeds, on random
   actions as the paper's table has it (the dataset's actions shown beside).

A task where no preset's mean final normalized reward reaches 0.05 gets no verdict (nothing
learnt, so nothing to compare). Where Marvel fails claim 1, 2 or 3 the page lists its runs' own
diagnostics, and the sentence given for that suite and task in ``--notes`` (a YAML mapping
``<suite label>/<task>`` to text).
Runs made under different numerics, two runs of one (suite, task, preset, algorithm, seed) and
runs of one preset that differ in any other setting are refused: they never pool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from marvel.analysis.command import run_command
from marvel.errors import AnalysisError
from marvel.fsutil import unwritable_reason
from marvel.report.page import write_report

PROG = "marvel.report"


def read_notes(path: Path | None) -> dict[str, str]:
    """The ``--notes`` file: '<suite label>/<task>' -> a sentence (none without the option)."""
    if path is None:
        return {}
    if not path.is_file():
        raise AnalysisError(f"no such notes file: {path}")
    return yaml.safe_load(path.read_text()) or {}


def report(args: argparse.Namespace, command: str) -> str:
    """Write the page ``args.out`` from the runs under ``args.dirs``; returns the line saying so."""
    reason = unwritable_reason(args.out.parent)
    if reason is not None or args.out.is_dir():
        raise AnalysisError(f"cannot write the page {args.out} ({reason or 'it is a directory'})")
    write_report(args.dirs, args.out, read_notes(args.notes), command, args.reps)
    return f"wrote {args.out}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, required=True, help="the page, e.g. docs/RESULTS.md")
    parser.add_argument("--notes", type=Path, help="YAML: '<suite>/<task>' -> a sentence")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (2000)")
    args = parser.parse_args(argv)
    command = f"python -m {PROG} " + " ".join(argv)
    return run_command(PROG, f"the page {args.out}", lambda: report(args, command))
