"""The study in the sweep dir: its SQLite storage, what a killed search left behind, the trials
that count towards the search's length, and a trial's objective and constraint read from its
runs' dirs."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from marvel.analysis.runs import FINETUNE_STAGES, load_run_dir
from marvel.analysis.stats import last_third

STUDY_FILE = "study.db"
SQLITE_TIMEOUT_S = 60  # how long a write waits on another writer's lock (two workers)
# A trial's user attrs:
JOBS = "jobs"  # its job numbers, one per seed
RUN_DIRS = "run_dirs"  # its runs' dirs, relative to the sweep dir
REWARD, COST = "reward", "cost"  # its scores (Scores)
FAILURE = "failure"  # why it failed, set before it is told FAIL
RESUMES = "resumes"  # the interrupted trial it retries
INTERRUPTED = "interrupted"  # the failure of a trial a killed search left running
COST_CONSTRAINT = "normalized_cost_minus_1"  # the trial's constraint (Trial.set_constraint)


def open_study(sweep_dir: Path, name: str, sampler_seed: int) -> optuna.Study:
    """The study ``name`` of ``<sweep_dir>/study.db``, created on the first call and loaded on
    any later one, maximizing the objective under the trials' constraints with TPE seeded from
    ``sampler_seed`` and the number of trials the study holds: a resumed search draws on,
    instead of replaying the first start's draws."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is ours (sweeper)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}",
        engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}},
    )
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True
    )
    stream = np.random.SeedSequence([sampler_seed, len(study.get_trials(deepcopy=False))])
    study.sampler = optuna.samplers.TPESampler(seed=int(stream.generate_state(1)[0]))
    return study


def failure(trial: FrozenTrial) -> str | None:
    """Why a FAIL trial failed: the reason the search recorded, or ``interrupted`` for one a
    killed search left running (told FAIL without a reason by ``recover``); None otherwise."""
    if trial.state != TrialState.FAIL:
        return None
    return trial.user_attrs.get(FAILURE, INTERRUPTED)


def recover(study: optuna.Study) -> None:
    """Make a killed search resumable: its RUNNING trials FAIL (interrupted), and each
    interrupted trial not yet retried is enqueued again with its params and job numbers, so its
    runs continue in their own dirs (resume=auto) instead of a new sample starting over.

    No other process runs trials of this study meanwhile: the sweep dir has one owner
    (marvel.launch.LaunchChecks), so a RUNNING trial here is a dead search's.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RESUMES] for t in trials if RESUMES in t.user_attrs}
    for trial in trials:
        if failure(trial) == INTERRUPTED and trial.number not in retried:
            attrs = {RESUMES: trial.number}
            if JOBS in trial.user_attrs:
                attrs[JOBS] = trial.user_attrs[JOBS]
            study.enqueue_trial(trial.params, user_attrs=attrs)


def finished(study: optuna.Study) -> int:
    """Trials that ended with a result: complete, or failed for a reason of their own (an
    interrupted trial's retry counts instead)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    return sum(failure(t) != INTERRUPTED for t in trials)


def counted(study: optuna.Study) -> int:
    """Trials that count towards the search's length: the finished and the running ones."""
    return finished(study) + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete feasible trial of the highest objective (Optuna's choice), or None."""
    try:
        return study.best_trial
    except ValueError:  # no complete trial, or none feasible
        return None


def used_job_numbers(study: optuna.Study, sweep_dir: Path) -> list[int]:
    """The job numbers the study's trials hold and the sweep dir's job dirs start with
    (``<number>_<env>_<experiment>_s<seed>``): a new trial's jobs take the next ones."""
    numbers = [n for t in study.get_trials(deepcopy=False) for n in t.user_attrs.get(JOBS, [])]
    prefixes = (d.name.split("_", 1)[0] for d in sweep_dir.iterdir() if d.is_dir())
    return numbers + [int(p) for p in prefixes if p.isdigit()]


class TrialFailure(Exception):
    """A trial whose runs give no score; the message says which run and why."""


@dataclass(frozen=True)
class Scores:
    """A trial's objective and constraint, means over its seeds' runs of the mean normalized
    reward and cost of the evaluations in the last third of the updates."""

    reward: float
    cost: float

    @property
    def constraint(self) -> float:
        """Feasible at <= 0: the mean normalized cost at most 1 (the cost limit)."""
        return self.cost - 1.0


def run_scores(run_dir: Path) -> tuple[float, float]:
    """A finished finetuning run's last-third normalized reward and cost, or TrialFailure."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except FileNotFoundError:
        raise TrialFailure(f"{run_dir.name}: no summary.json (the run did not end)") from None
    except json.JSONDecodeError:
        raise TrialFailure(f"{run_dir.name}: unreadable summary.json") from None
    if summary.get("status") != "ok":
        reason = summary.get("error") or f"status {summary.get('status')!r}"
        raise TrialFailure(f"{run_dir.name}: {reason}")
    if summary.get("stage") not in FINETUNE_STAGES:
        raise TrialFailure(f"{run_dir.name}: stage={summary.get('stage')} does not finetune")
    reward, cost = last_third(load_run_dir(run_dir))
    if math.isnan(reward):
        raise TrialFailure(f"{run_dir.name}: no evaluation in the last third of the updates")
    return reward, cost


def trial_scores(run_dirs: Sequence[Path]) -> Scores:
    """The scores of a trial from its runs (one per seed), or TrialFailure naming the first
    run without a score."""
    per_run = [run_scores(run_dir) for run_dir in run_dirs]
    return Scores(
        reward=sum(r for r, _ in per_run) / len(per_run),
        cost=sum(c for _, c in per_run) / len(per_run),
    )
