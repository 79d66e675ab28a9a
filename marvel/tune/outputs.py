"""What a search leaves in its sweep dir besides its runs and study.db, rewritten after every
batch so a killed search has them too: the best feasible trial's settings as overrides
(``<sweep dir>/best.txt``) and as YAML for the config files they belong in (``best.yaml``), the
trials' table (``<sweep dir>/trials.md``, written here) and Optuna's plots (``history.png``,
``importances.png``)."""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from marvel.fsutil import atomic_write
from marvel.tune.space import override
from marvel.tune.study import COST, RESUMES, REWARD, RUN_DIRS, best_trial, failure, finished

OBJECTIVE = (  # what a trial's reward and cost are
    "the mean normalized reward and cost of the evaluations in the last third of the updates, "
    "means over the trial's seeds; the search maximizes the reward subject to the cost <= 1"
)


@dataclass(frozen=True)
class Search:
    """What the outputs say about the search: where, what was tuned, how."""

    sweep_dir: Path
    env: str
    experiment: str
    budget: str
    seeds: Sequence[int]
    n_trials: int
    keys: Sequence[str]  # the searched settings, dotted
    left_out: Sequence[str]  # settings of the space the tuned preset's controller does not read
    choices: Mapping[str, Any]  # config group -> the option the tuned config chose

    @property
    def tuned(self) -> str:
        seeds = " ".join(map(str, self.seeds))
        return f"experiment={self.experiment} on {self.env}, budget={self.budget}, seeds {seeds}"


def comment(text: str) -> str:
    """``text`` as YAML/shell comment lines."""
    return textwrap.fill(text, width=98, initial_indent="# ", subsequent_indent="# ")


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def best_text(study: optuna.Study, search: Search) -> str:
    """best.txt: comments on the best feasible trial, then its settings as one override line
    (last, for ``$(tail -n 1 best.txt)``); without a feasible trial, only the comments."""
    done = f"{finished(study)} of {search.n_trials} trials done"
    best = best_trial(study)
    if best is None:
        return (
            f"# No feasible trial in the search in {search.sweep_dir} ({done}):\n"
            f"# tuned: {search.tuned}\n"
            "# no complete trial kept the mean normalized cost <= 1: no settings to recommend.\n"
        )
    line = " ".join(override(key, best.params[key]) for key in search.keys)
    scores = f"reward {best.user_attrs[REWARD]:.4f}, cost {best.user_attrs[COST]:.4f}"
    return (
        f"# Best feasible trial #{best.number} of the search in {search.sweep_dir} ({done})\n"
        f"# tuned: {search.tuned}\n"
        f"{comment(f'{scores}: {OBJECTIVE}')}\n"
        "# The task's shared settings: run every preset with them (docs/USAGE.md, Tuning a\n"
        "# task), e.g. the ablation:\n"
        f"#   python run.py -m +sweep=ablation env={search.env} "
        f"$(tail -n 1 {search.sweep_dir / 'best.txt'})\n"
        f"{line}\n"
    )


def conf_file(key: str, choices: Mapping[str, Any]) -> tuple[str, str]:
    """The config file that holds ``key`` (its group's chosen option) and the key inside it."""
    group, _, inner = key.partition(".")
    if inner and choices.get(group):
        return f"conf/{group}/{choices[group]}.yaml", inner
    return "conf/config.yaml", key


def nested(values: Mapping[str, float]) -> dict[str, Any]:
    """Dotted keys as nested mappings ({"finetune.alpha": 1} -> {"finetune": {"alpha": 1}})."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def best_yaml(best: FrozenTrial, search: Search) -> str:
    """best.yaml: the best trial's settings as YAML documents, one per config file they belong
    in (the env file for ``env.*``, the controller's own file in conf/pid for ``pid.*``)."""
    by_file: dict[str, dict[str, float]] = {}
    for key in search.keys:
        path, inner = conf_file(key, search.choices)
        by_file.setdefault(path, {})[inner] = best.params[key]
    intro = (
        f"# Best feasible trial #{best.number} of the search in {search.sweep_dir}\n"
        f"# tuned: {search.tuned}\n"
        "# best.txt has the same values as overrides. One YAML document per config file.\n"
    )
    documents = []
    for path, values in by_file.items():
        where = (
            "replace the task's values"
            if path.startswith("conf/env/")
            else "not in the env file: they are this group's own settings"
        )
        documents.append(f"# {path}: {where}\n{yaml.safe_dump(nested(values), sort_keys=False)}")
    return intro + "---\n".join(documents)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def trials_table(trials: Sequence[FrozenTrial], search: Search, notes: Sequence[str]) -> str:
    """The text of ``<sweep dir>/trials.md``: one row per trial (state, values, scores, run
    dirs), then the notes."""
    retried = {t.user_attrs[RESUMES]: t.number for t in trials if RESUMES in t.user_attrs}
    header = ["trial", "state", *search.keys, "reward", "cost", "feasible", "run dirs"]
    rows = []
    for trial in trials:
        state = trial.state.name
        if trial.state == TrialState.FAIL:
            state = f"FAIL: {failure(trial)}"
            if trial.number in retried:
                state += f", retried as #{retried[trial.number]}"
        cost = trial.user_attrs.get(COST)
        feasible = "" if cost is None else ("yes" if cost <= 1.0 else "no")
        cells = [
            f"#{trial.number}",
            state,
            *(trial.params.get(key) for key in search.keys),
            trial.user_attrs.get(REWARD),
            cost,
            feasible,
            ", ".join(trial.user_attrs.get(RUN_DIRS, [])),
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    left_out = (
        [
            f"Left out of the space: {', '.join(search.left_out)} (pid={search.choices.get('pid')} "
            "does not read them)."
        ]
        if search.left_out
        else []
    )
    return "\n".join(
        [
            f"# Trials of the search in {search.sweep_dir}",
            "",
            f"{search.tuned}; {search.n_trials} trials. Reward and cost: {OBJECTIVE}.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *rows,
            "",
            *left_out,
            *notes,
            "",
        ]
    )


def _save_png(figure: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", bbox_inches="tight"))


def draw_plots(study: optuna.Study, sweep_dir: Path) -> list[str]:
    """history.png and importances.png (PED-ANOVA: no scikit-learn), or a note on why not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots: dict[str, Callable[[], Any]] = {}  # file -> its plot's axes
    notes: list[str] = []
    if complete:
        plots["history.png"] = lambda: plot_optimization_history(study)
    else:
        notes.append("history.png: not drawn yet, no trial is complete.")
    if len(complete) >= 2:
        plots["importances.png"] = lambda: plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator()
        )
    else:
        notes.append("importances.png: not drawn yet, it needs 2 complete trials.")
    for name, plot in plots.items():
        # optuna sets a style (kept inside), calls its plots experimental and says when few
        # trials make the importances equal (the sweep dir's table has the trials)
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            figure = plot().figure
            _save_png(figure, sweep_dir / name)
            plt.close(figure)
    return notes


def write_outputs(study: optuna.Study, search: Search) -> None:
    """Every output file of the search, from the study as it stands."""
    notes = draw_plots(study, search.sweep_dir)
    trials = study.get_trials(deepcopy=False)
    _write(search.sweep_dir / "trials.md", trials_table(trials, search, notes))
    _write(search.sweep_dir / "best.txt", best_text(study, search))
    best = best_trial(study)
    if best is not None:
        _write(search.sweep_dir / "best.yaml", best_yaml(best, search))
