"""The search as a Hydra sweeper (``hydra_plugins/marvel_tune`` hands it Hydra's calls): each
trial is one ordinary marvel run per seed, launched by Hydra's launcher in the sweep dir, scored
from its runs' dirs and told to the study; a line per trial on stderr, the outputs after each
batch (docs/USAGE.md, Tuning a task)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from marvel.analysis.runs import FINETUNE_STAGES
from marvel.errors import ConfigError
from marvel.tune.outputs import Search, write_outputs
from marvel.tune.space import Dimension, override, search_space
from marvel.tune.study import (
    COST,
    COST_CONSTRAINT,
    FAILURE,
    JOBS,
    REWARD,
    RUN_DIRS,
    TrialFailure,
    best_trial,
    counted,
    finished,
    open_study,
    recover,
    trial_scores,
    used_job_numbers,
)


@dataclass(frozen=True)
class PlannedTrial:
    """An asked trial, its job numbers (consecutive, one per seed) and each job's overrides."""

    trial: optuna.Trial
    jobs: list[int]
    overrides: list[list[str]]


def launch_groups(planned: Sequence[PlannedTrial]) -> list[list[PlannedTrial]]:
    """Runs of trials whose job numbers follow each other: one launch each (a launch numbers
    its jobs from one initial index; a resumed trial keeps its own numbers)."""
    groups: list[list[PlannedTrial]] = []
    for trial in planned:
        if groups and groups[-1][-1].jobs[-1] + 1 == trial.jobs[0]:
            groups[-1].append(trial)
        else:
            groups.append([trial])
    return groups


class TuneSearch:
    """The sweeper's settings (hydra_plugins/marvel_tune's TuneSweeperConf; sweeps/tune.yaml)
    and Hydra's ``setup``/``sweep`` calls."""

    def __init__(
        self,
        n_trials: int,
        seeds: Sequence[int],
        sampler_seed: int,
        trials_per_batch: int,
        study_name: str,
        space: Mapping[str, Any],
    ) -> None:
        self.n_trials, self.seeds = n_trials, list(seeds)
        self.sampler_seed, self.trials_per_batch = sampler_seed, trials_per_batch
        self.study_name = study_name
        self.space = OmegaConf.to_container(space) if OmegaConf.is_config(space) else dict(space)

    def setup(
        self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def check_settings(self) -> None:
        for name in ("n_trials", "trials_per_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hydra.sweeper.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.seeds or len(set(self.seeds)) < len(self.seeds):
            raise ConfigError(f"hydra.sweeper.seeds: give distinct seeds, got {self.seeds}")

    def user_overrides(self, arguments: list[str]) -> list[Override]:
        """The command line's overrides, each a single value: a trial is one configuration,
        its seeds are ``hydra.sweeper.seeds``."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed_overrides = parser.parse_overrides(arguments)
        for parsed in parsed_overrides:
            if parsed.is_sweep_override():
                raise ConfigError(
                    f"{parsed.input_line}: the search runs one configuration per trial; give "
                    "one value (the searched settings are hydra.sweeper.space)"
                )
            if parsed.key_or_group == "seed":
                raise ConfigError(
                    f"{parsed.input_line}: a trial runs every seed of hydra.sweeper.seeds; set "
                    "those instead (hydra.sweeper.seeds=[0,1])"
                )
        return parsed_overrides

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        self.check_settings()
        given = self.user_overrides(arguments)
        tuned = self.hydra_context.config_loader.load_sweep_config(self.config, arguments)
        if tuned.stage not in FINETUNE_STAGES:
            raise ConfigError(f"stage={tuned.stage}: the search scores finetuning runs")
        dimensions, left_out = search_space(self.space, tuned)
        searched = {d.key for d in dimensions}  # a value given for one only centres its range
        overrides = [o.input_line for o in given if o.key_or_group not in searched]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        search = Search(
            sweep_dir=sweep_dir,
            env=str(tuned.env.name),
            experiment=str(tuned.experiment),
            budget=str(tuned.budget.name),
            seeds=self.seeds,
            n_trials=self.n_trials,
            keys=[d.key for d in dimensions],
            left_out=left_out,
            choices=dict(tuned.hydra.runtime.choices),
        )
        study = open_study(sweep_dir, self.study_name, self.sampler_seed)
        recover(study)
        returns: list[Sequence[JobReturn]] = []
        while (left := self.n_trials - counted(study)) > 0:
            next_job = max(used_job_numbers(study, sweep_dir), default=-1) + 1
            planned = []
            for _ in range(min(left, self.trials_per_batch)):
                planned.append(self.plan(study.ask(), dimensions, overrides, next_job))
                next_job = max(next_job, planned[-1].jobs[-1] + 1)
            for group in launch_groups(planned):
                results = self.launcher.launch(
                    [job for trial in group for job in trial.overrides],
                    initial_job_idx=group[0].jobs[0],
                )
                returns.append(results)
                for i, trial in enumerate(group):
                    n = len(self.seeds)
                    self.tell(study, trial.trial, results[i * n : (i + 1) * n], sweep_dir)
            write_outputs(study, search)
        write_outputs(study, search)
        return returns

    def plan(
        self,
        trial: optuna.Trial,
        dimensions: Sequence[Dimension],
        overrides: Sequence[str],
        next_job: int,
    ) -> PlannedTrial:
        """The trial's values and jobs: a retried trial keeps its job numbers (its runs resume in
        their dirs), a new one takes the next free ones."""
        values = [override(d.key, d.suggest(trial)) for d in dimensions]
        jobs = trial.user_attrs.get(JOBS)
        if jobs is None or len(jobs) != len(self.seeds):
            jobs = list(range(next_job, next_job + len(self.seeds)))
            trial.set_user_attr(JOBS, jobs)
        return PlannedTrial(
            trial, jobs, [[*overrides, *values, f"seed={seed}"] for seed in self.seeds]
        )

    def tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        results: Sequence[JobReturn],
        sweep_dir: Path,
    ) -> None:
        """Score the trial from its runs' dirs, tell the study, and print its line."""
        run_dirs = [Path(str(result.hydra_cfg.hydra.runtime.output_dir)) for result in results]
        trial.set_user_attr(RUN_DIRS, [os.path.relpath(d, sweep_dir) for d in run_dirs])
        try:
            scores = trial_scores(run_dirs)
        except TrialFailure as err:
            trial.set_user_attr(FAILURE, str(err))
            study.tell(trial, state=TrialState.FAIL)
            outcome = f"failed ({err})"
        else:
            trial.set_user_attr(REWARD, scores.reward)
            trial.set_user_attr(COST, scores.cost)
            trial.set_constraint(COST_CONSTRAINT, scores.constraint)
            study.tell(trial, scores.reward)
            feasible = "feasible" if scores.constraint <= 0 else "over the limit"
            outcome = f"reward {scores.reward:.3f}, cost {scores.cost:.2f} ({feasible})"
        best = best_trial(study)
        best_line = (
            "no feasible trial yet" if best is None else f"best {best.value:.3f} (#{best.number})"
        )
        print(
            f"[marvel] trial {finished(study)} of {self.n_trials} (#{trial.number}): {outcome} | "
            f"{best_line}",
            file=sys.stderr,
            flush=True,
        )
