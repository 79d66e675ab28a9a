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
learnt, so nothing to compare). Where Marvel fails claim 1 or 2 the page lists its runs' own
diagnostics, and the sentence given for that suite and task in ``--notes`` (a YAML mapping
``<suite label>/<task>`` to text).
Runs made under different numerics, two runs of one (suite, task, preset, algorithm, seed) and
runs of one preset that differ in any other setting are refused: they never pool.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from marvel.analysis.cli import curve_stats, draw_mean_std, iqm_estimates, mean_std, plot_iqm
from marvel.analysis.runs import RunRecord, load_local, method_order, names_method, read_run_files
from marvel.envs import BULLET_TASKS
from marvel.errors import AnalysisError
from marvel.fsutil import unwritable_reason

PROG = "marvel.report"
MAIN_ALGOS = ("cpq", "none")  # the main table: on top of CPQ, and from scratch
ABLATIONS = ("marvel", "vpa_pid", "vpa_only", "apid_only")  # not baselines of claim 2
BUDGET_ORDER = ("smoke", "default", "paper")
LEARNS = 0.05  # a task where no preset's mean final normalized reward reaches it: no verdict
BOOKKEEPING = ("budget.seeds", "resume", "eval_envs", "stage", "numerics")  # never pooled apart
CLAIMS = (
    ("under_limit", "Marvel under the limit"),
    ("best_safe_reward", "reward >= every safe baseline"),
    ("cheaper_than_scratch", "cumulative cost < from scratch"),
    ("vpa_ranks_costs", "VPA raises the cost critic's rank correlation (random actions)"),
)


@dataclass(frozen=True)
class Run:
    """A finished finetuning run with its own files' contents."""

    record: RunRecord
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    pretraining: str  # whose pi_0: "pi_0 per seed" or "offline.seed=<n>" (one for every seed)

    @property
    def env(self) -> str:
        return self.record.env

    @property
    def experiment(self) -> str:
        return self.record.experiment

    @property
    def algo(self) -> str:
        return str(self.record.config.get("offline.algo", "none"))

    @property
    def suite(self) -> str:
        budget = self.summary["budget"]
        return (
            f"budget={budget['name']}, {budget['offline_steps']} offline steps, "
            f"{self.pretraining}, {budget['collect_episodes']} collected episodes"
        )


def pretraining(run_dir: Path) -> str:
    """Whose pi_0 a run starts from, as its config wrote ``offline.seed``: the run's own seed
    (the default ``${seed}``) or one seed for every run."""
    raw = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["offline"]["seed"]
    return "pi_0 per seed" if raw == "${seed}" else f"offline.seed={raw}"


# ----------------------------------------------------------------------------- loading


def load_runs(dirs: Sequence[Path]) -> list[Run]:
    """Every finished finetuning run under ``dirs`` (offline_only runs aside), checked to pool."""
    runs = [
        Run(record, *read_run_files(Path(record.source)), pretraining(Path(record.source)))
        for record in load_local(dirs)
        if record.experiment != "offline_only"
    ]
    if not runs:
        raise AnalysisError(f"no finished finetuning runs under {', '.join(map(str, dirs))}")
    modes = {run.summary["metadata"]["numerics"]["mode"] for run in runs}
    if len(modes) > 1:
        raise AnalysisError(f"runs made under different numerics ({', '.join(sorted(modes))})")
    check_pooling(runs)
    return runs


def _setting(key: str) -> bool:
    """A config key that makes runs different methods (seeds and bookkeeping aside)."""
    return names_method(key) and key not in BOOKKEEPING


def check_pooling(runs: Sequence[Run]) -> None:
    """One run per (suite, task, preset, algorithm, seed); one configuration per preset."""
    seen: dict[tuple[str, str, str, str, int], str] = {}
    groups: dict[tuple[str, str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        key = (run.suite, run.env, run.experiment, run.algo)
        if (other := seen.get((*key, run.record.seed))) is not None:
            raise AnalysisError(
                f"two runs of {run.experiment} seed {run.record.seed} on {run.env}: "
                f"{other} and {run.record.source}"
            )
        seen[(*key, run.record.seed)] = run.record.source
        groups[key].append(run)
    for (_, env, experiment, _), members in groups.items():
        first = members[0].record.config
        for run in members[1:]:
            config = run.record.config
            for key in sorted(set(first) | set(config)):
                if _setting(key) and first.get(key) != config.get(key):
                    raise AnalysisError(
                        f"runs of {experiment} on {env} differ in {key} "
                        f"({first.get(key)!r} in {members[0].record.source}, "
                        f"{config.get(key)!r} in {run.record.source}): give one configuration "
                        "per preset"
                    )


# ----------------------------------------------------------------------------- numbers


def last_third(run: Run) -> tuple[float, float]:
    """Mean normalized reward and cost of the evaluations after two thirds of the updates."""
    updates = run.summary["online"]["updates"]
    points = [v for update, v in sorted(run.record.curve.items()) if 3 * update > 2 * updates]
    return float(np.mean([p[0] for p in points])), float(np.mean([p[1] for p in points]))


def preset_entry(runs: Sequence[Run]) -> dict[str, Any]:
    """A preset's scores on a task: means and sample stds over its seeds."""

    finals = [run.summary["eval"] for run in runs]
    thirds = [last_third(run) for run in runs]
    return {
        "seeds": [run.record.seed for run in runs],
        "updates": sorted({run.summary["online"]["updates"] for run in runs}),
        "reward": mean_std([f["normalized_reward"] for f in finals]),
        "cost": mean_std([f["normalized_cost"] for f in finals]),
        "last_third_reward": mean_std([t[0] for t in thirds]),
        "last_third_cost": mean_std([t[1] for t in thirds]),
        "cumulative_cost": mean_std([run.summary["online"]["cumulative_cost"] for run in runs]),
        "safe_seeds": sum(f["normalized_cost"] <= 1.0 for f in finals),
        "run_s": float(sum(run.summary["timings"]["total_s"] for run in runs)),
    }


def pi0_entry(runs: Sequence[Run]) -> dict[str, Any] | None:
    """pi_0's score: each seed's evaluation before finetuning (``initial_eval``) of the first
    preset that started from it, mean over seeds."""
    by_seed: dict[int, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: method_order(r.experiment)):
        if run.summary.get("pretrained"):
            by_seed.setdefault(run.record.seed, run.summary["initial_eval"])
    if not by_seed:
        return None
    evals = [by_seed[seed] for seed in sorted(by_seed)]
    return {
        "seeds": sorted(by_seed),
        "reward": float(np.mean([e["normalized_reward"] for e in evals])),
        "cost": float(np.mean([e["normalized_cost"] for e in evals])),
    }


def spearman_cost(runs: Sequence[Run]) -> dict[str, list[float]] | None:
    """Marvel's cost-critic Spearman correlations, before and after VPA, on the dataset's and
    random actions (means over the seeds that measured them); None where none did."""
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        diagnostic = (run.summary.get("vpa") or {}).get("diagnostic") or {}
        for when in ("before", "after"):
            for actions in ("dataset", "random"):
                value = (diagnostic.get(when) or {}).get(f"spearman_cost_{actions}")
                if value is not None:
                    values[f"{actions}_{when}"].append(value)
    if len(values) < 4:
        return None
    return {key: [float(np.mean(v)), len(v)] for key, v in sorted(values.items())}


def verdicts(
    entries: Mapping[str, Mapping[str, Any]], rho: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Each claim's verdict (True, False or None: not measurable) and the figures it read."""
    marvel, scratch = entries.get("marvel"), entries.get("from_scratch")
    out: dict[str, dict[str, Any]] = {}
    if marvel is None:
        return {name: {"holds": None, "why": "Marvel not run"} for name, _ in CLAIMS}
    best = max(entry["reward"][0] for entry in entries.values())
    if best < LEARNS:
        why = f"no preset learns: best reward {best:.2f}"
        return {name: {"holds": None, "why": why} for name, _ in CLAIMS}
    cost = marvel["cost"][0]
    out["under_limit"] = {"holds": cost <= 1.0, "why": f"cost {cost:.2f}"}
    safe_baselines = {
        preset: entry["reward"][0]
        for preset, entry in entries.items()
        if preset not in ABLATIONS and entry["cost"][0] <= 1.0
    }
    if cost > 1.0:
        out["best_safe_reward"] = {"holds": False, "why": "Marvel over the limit"}
    elif not safe_baselines:
        out["best_safe_reward"] = {"holds": True, "why": "no safe baseline"}
    else:
        best = max(safe_baselines, key=lambda p: (safe_baselines[p], p))
        reward = marvel["reward"][0]
        out["best_safe_reward"] = {
            "holds": reward >= safe_baselines[best],
            "why": f"{reward:.2f} vs {best} {safe_baselines[best]:.2f}",
        }
    if scratch is None:
        out["cheaper_than_scratch"] = {"holds": None, "why": "from scratch not run"}
    else:
        ours, theirs = marvel["cumulative_cost"][0], scratch["cumulative_cost"][0]
        out["cheaper_than_scratch"] = {"holds": ours < theirs, "why": f"{ours:.0f} vs {theirs:.0f}"}
    if rho is None:
        out["vpa_ranks_costs"] = {"holds": None, "why": "no diagnostic"}
    else:
        out["vpa_ranks_costs"] = {
            "holds": rho["random_after"][0] > rho["random_before"][0],
            "why": ", ".join(
                f"{a} {rho[f'{a}_before'][0]:.2f} -> {rho[f'{a}_after'][0]:.2f}"
                for a in ("dataset", "random")
            ),
        }
    return out


def diagnostics(runs: Sequence[Run]) -> dict[str, float | None]:
    """Marvel's own diagnostics, means over its seeds: final lambda and its maximum; the share of
    iterations with aPID's K_p at its floor K0 / gain_clip; the rollouts' and the evaluations'
    normalized cost over the last third; Q_c against the rollouts' Monte-Carlo cost in the first
    iteration and over the last third; the KL divergence to pi_0 at the end."""

    def mean(values: Sequence[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    per_run: dict[str, list[float | None]] = defaultdict(list)
    for run in runs:
        rows, config = run.rows, run.record.config
        updates = run.summary["online"]["updates"]
        late = [r for r in rows if "online/iteration" in r and 3 * r["online/update"] > 2 * updates]
        lam = [r["lagrange/lambda"] for r in rows if "lagrange/lambda" in r]
        per_run["lambda_final"].append(lam[-1] if lam else None)
        per_run["lambda_max"].append(max(lam) if lam else None)
        kp = [r["lagrange/kp"] for r in rows if "online/iteration" in r and "lagrange/kp" in r]
        if config.get("pid.name") == "adaptive" and kp:
            floor = config["pid.kp"] / config["pid.gain_clip"]
            per_run["kp_floor_share"].append(sum(k <= floor * (1 + 1e-6) for k in kp) / len(kp))
        limit = run.summary["task"]["cost_limit"]
        rollout_cost = mean([r.get("train/episode_cost") for r in late])
        per_run["rollout_cost"].append(None if rollout_cost is None else rollout_cost / limit)
        per_run["eval_cost"].append(last_third(run)[1])
        first = next((r for r in rows if r.get("diag/q_cost") is not None), {})
        per_run["q_cost_first"].append(first.get("diag/q_cost"))
        per_run["mc_cost_first"].append(first.get("diag/mc_cost"))
        per_run["q_cost"].append(mean([r.get("diag/q_cost") for r in late]))
        per_run["mc_cost"].append(mean([r.get("diag/mc_cost") for r in late]))
        kl = [r["diag/kl_to_pi0"] for r in rows if r.get("diag/kl_to_pi0") is not None]
        per_run["kl_final"].append(kl[-1] if kl else None)
    return {key: mean(values) for key, values in per_run.items()}


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def diagnosis_line(entry: Mapping[str, Any], facts: Mapping[str, float | None]) -> str:
    """Marvel's diagnostics on a task as one sentence."""
    parts = [
        f"{entry['safe_seeds']}/{len(entry['seeds'])} seeds under the limit",
        f"λ ends at {_num(facts['lambda_final'])} (max {_num(facts['lambda_max'])})",
    ]
    if facts.get("kp_floor_share") is not None:
        parts.append(f"aPID's K_p at its floor in {facts['kp_floor_share']:.0%} of iterations")
    parts += [
        f"last third: rollout cost {_num(facts['rollout_cost'])} and evaluation cost "
        f"{_num(facts['eval_cost'])} (normalized)",
        f"Q_c against the Monte-Carlo cost of the rollouts: {_num(facts['q_cost_first'])} vs "
        f"{_num(facts['mc_cost_first'])} in the first iteration, {_num(facts['q_cost'])} vs "
        f"{_num(facts['mc_cost'])} over the last third",
        "KL to pi_0 at the end "
        + ("–" if facts["kl_final"] is None else f"{facts['kl_final']:.3g}"),
    ]
    return "; ".join(parts) + "."


# ----------------------------------------------------------------------------- the report


def suite_report(runs: Sequence[Run]) -> dict[str, Any]:
    """Every number of one suite: per task pi_0, the presets, the verdicts, the diagnostics,
    the compatibility study."""
    by_task: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    compat: dict[str, dict[tuple[str, str], list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r.env, method_order(r.experiment), r.record.seed)):
        if run.algo in MAIN_ALGOS:
            by_task[run.env][run.experiment].append(run)
        compat[run.env][(run.algo, run.experiment)].append(run)
    tasks: dict[str, Any] = {}
    for env in sorted(by_task):
        presets = by_task[env]
        entries = {preset: preset_entry(members) for preset, members in presets.items()}
        rho = spearman_cost(presets.get("marvel", []))
        task = {
            "pi0": pi0_entry([r for members in presets.values() for r in members]),
            "presets": entries,
            "spearman_cost": rho,
            "verdicts": verdicts(entries, rho),
        }
        failed = any(
            task["verdicts"][c]["holds"] is False for c in ("under_limit", "best_safe_reward")
        )
        if failed and "marvel" in presets:
            task["diagnostics"] = diagnostics(presets["marvel"])
        tasks[env] = task
    compatibility = {}
    for env, groups in sorted(compat.items()):
        if all(algo in MAIN_ALGOS for algo, _ in groups):
            continue
        compatibility[env] = {
            f"{algo}/{preset}": {
                **preset_entry(members),
                "pi0": pi0_entry(members),
            }
            for (algo, preset), members in sorted(
                groups.items(), key=lambda kv: (kv[0][0], method_order(kv[0][1]))
            )
            if algo != "none"
        }
    return {"tasks": tasks, "compatibility": compatibility}


def _cell(stats: Sequence[float | None], digits: int = 2) -> str:
    mean, std = stats
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _verdict(v: Mapping[str, Any]) -> str:
    mark = {True: "holds", False: "**fails**", None: "n/a"}[v["holds"]]
    return f"{mark} ({v['why']})"


def plot_suite_curves(by_task: Mapping[str, Mapping[str, Sequence[Run]]], path: Path) -> None:
    """Per task (one row), normalized reward and cost against updates, mean ± std per preset."""
    fig = Figure(figsize=(11, 3.2 * len(by_task)))
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(by_task), 2, squeeze=False))
    for (env, presets), (ax_reward, ax_cost) in zip(by_task.items(), axes, strict=True):
        for i, (preset, runs) in enumerate(presets.items()):
            rows = curve_stats([run.record for run in runs])
            draw_mean_std((ax_reward, ax_cost), rows, f"{preset} ({len(runs)})", f"C{i}")
        ax_cost.axhline(1.0, color="gray", linestyle="--", label="cost limit")
        ax_reward.set_ylabel(f"{env}\nnormalized reward")
        ax_cost.set_ylabel("normalized cost")
        for ax in (ax_reward, ax_cost):
            ax.grid(alpha=0.3)
        ax_cost.legend(fontsize="x-small", loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("policy-gradient updates")
    fig.suptitle("mean ± std over seeds (seeds in brackets)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})


def sweep_commands(dirs: Sequence[Path]) -> list[str]:
    """The command of each Hydra sweep under ``dirs`` (its ``multirun.yaml``); runs outside a
    sweep (their ``.hydra/overrides.yaml``) that differ only in preset and seed as one multirun
    command that makes them."""
    commands = []
    singles: dict[tuple[str, ...], dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for top in dirs:
        sweeps = sorted(top.rglob("multirun.yaml"))
        for path in sweeps:
            overrides = yaml.safe_load(path.read_text())["hydra"]["overrides"]["task"]
            commands.append("python run.py -m " + " ".join(overrides))
        roots = [p.parent for p in sweeps]
        for path in sorted(top.rglob(".hydra/overrides.yaml")):
            run_dir = path.parent.parent
            if not (run_dir / "summary.json").is_file() or any(r in run_dir.parents for r in roots):
                continue
            overrides = yaml.safe_load(path.read_text())
            values = dict(o.split("=", 1) for o in overrides if "=" in o)
            rest = tuple(o for o in overrides if not o.startswith(("experiment=", "seed=")))
            singles[rest][values.get("experiment", "marvel")].add(int(values.get("seed", 0)))
    for rest, presets in singles.items():
        by_seeds: dict[tuple[int, ...], list[str]] = defaultdict(list)
        for preset in sorted(presets, key=method_order):
            by_seeds[tuple(sorted(presets[preset]))].append(preset)
        for seeds, names in by_seeds.items():
            multi = "-m " if len(seeds) > 1 or len(names) > 1 else ""
            commands.append(
                f"python run.py {multi}experiment={','.join(names)} {' '.join(rest)} "
                f"seed={','.join(map(str, seeds))}"
            )
    return list(dict.fromkeys(commands))


def render(
    suites: Mapping[str, Mapping[str, Any]],
    runs: Sequence[Run],
    figures: Mapping[str, Mapping[str, str]],
    command: str,
    commands: Sequence[str],
    notes: Mapping[str, str],
) -> str:
    """The page's Markdown."""
    meta = [run.summary["metadata"] for run in runs]
    commits = sorted({m["git_commit"][:7] + (" (dirty)" if m["git_dirty"] else "") for m in meta})
    cpus = sorted({m["numerics"]["cpu"] for m in meta})
    lines = [
        "# Results: the paper's claims, task by task",
        "",
        f"Written by `{command}` from {len(runs)} finetuning runs; every number below is read "
        "from a run's `summary.json` or `metrics.jsonl`. Scores are normalized (reward: DSRL's "
        "normalization, cost: the fraction of the cost limit, so 1 is the limit), mean ± sample "
        "std over seeds.",
        "",
        f"- numerics: `{meta[0]['numerics']['mode']}` (marvel/numerics.py), on {', '.join(cpus)}",
        f"- commits: {', '.join(commits)}",
        "- the runs' commands:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "Claims (per task): "
        + "; ".join(f"{i + 1}. {text}" for i, (_, text) in enumerate(CLAIMS))
        + ". Claim 2's baselines are the presets other than Marvel and its ablations (vpa_pid, "
        "vpa_only, apid_only); claim 4 needs the VPA diagnostic, which Drone tasks skip (their "
        "agent cannot be placed). A task where no preset's mean final normalized reward reaches "
        f"{LEARNS} gets no verdict (n/a): nothing was learnt there to compare.",
        "",
        "The velocity tasks (`sweeps/envs_velocity.yaml`) are not yet run.",
    ]
    for label, suite in suites.items():
        tasks = suite["tasks"]
        missing = sorted(t for t in BULLET_TASKS if t not in tasks)
        lines += ["", f"## {label}", ""]
        if missing:
            lines += [f"Bullet tasks not run in this suite: {', '.join(missing)}.", ""]
        lines += [
            "| task | preset | seeds | updates | final reward | final cost | last-third reward "
            "| last-third cost | cumulative online cost | seeds safe |",
            "|---|---|---|---:|---|---|---|---|---:|---:|",
        ]
        for env, task in tasks.items():
            if (pi0 := task["pi0"]) is not None:
                lines.append(
                    f"| {env} | pi_0 | {len(pi0['seeds'])} | 0 | {pi0['reward']:.2f} | "
                    f"{pi0['cost']:.2f} | | | | |"
                )
            for preset, e in task["presets"].items():
                cost = _cell(e["cost"]) + (" †" if e["cost"][0] > 1.0 else "")
                lines.append(
                    f"| {env} | {preset} | {len(e['seeds'])} | {'/'.join(map(str, e['updates']))}"
                    f" | {_cell(e['reward'])} | {cost} | {_cell(e['last_third_reward'])} | "
                    f"{_cell(e['last_third_cost'])} | {_cell(e['cumulative_cost'], 0)} | "
                    f"{e['safe_seeds']}/{len(e['seeds'])} |"
                )
        lines += [
            "",
            "† over the limit (mean final normalized cost > 1). Last third: the evaluations after "
            "two thirds of the updates. pi_0: the pretrained policy's evaluation before "
            "finetuning, mean over the seeds that started from it.",
            "",
            "### Verdicts",
            "",
            "| task | " + " | ".join(text for _, text in CLAIMS) + " |",
            "|---|" + "---|" * len(CLAIMS),
        ]
        for env, task in tasks.items():
            v = task["verdicts"]
            lines.append(f"| {env} | " + " | ".join(_verdict(v[c]) for c, _ in CLAIMS) + " |")
        counts = []
        for claim, _ in CLAIMS:
            held = [t["verdicts"][claim]["holds"] for t in tasks.values()]
            measured = [h for h in held if h is not None]
            counts.append(f"{sum(measured)} of {len(measured)}")
        lines.append("| **holds on** | " + " | ".join(counts) + " |")
        lines += ["", f"![curves]({figures[label]['curves']})", ""]
        if failing := {env: t for env, t in tasks.items() if "diagnostics" in t}:
            lines += ["### Where Marvel fails", ""]
            for env, task in failing.items():
                note = notes.get(f"{label}/{env}")
                facts = diagnosis_line(task["presets"]["marvel"], task["diagnostics"])
                lines.append(f"- **{env}**: {facts}" + (f" {note}" if note else ""))
            lines.append("")
        if suite.get("iqm"):
            lines += [
                "### Aggregate over tasks",
                "",
                "Interquartile mean of the final scores over tasks x seeds, with rliable's "
                "stratified-bootstrap 95% confidence intervals (presets run on every task):",
                "",
                "| score | preset | IQM | 95% CI | tasks | seeds |",
                "|---|---|---:|---|---:|---:|",
                *(
                    f"| {r['metric'].replace('_', ' ')} | {r['method']} | {r['iqm']:.2f} | "
                    f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {r['n_envs']} | {r['n_seeds']} |"
                    for r in suite["iqm"]
                ),
                "",
                f"![IQM]({figures[label]['iqm']})",
                "",
            ]
        if compat := suite["compatibility"]:
            lines += [
                "### Compatibility with other offline algorithms",
                "",
                "| task | offline algorithm | preset | seeds | pi_0 reward / cost | final reward "
                "| final cost | cumulative online cost | seeds safe |",
                "|---|---|---|---|---|---|---|---:|---:|",
            ]
            for env, entries in compat.items():
                for key, e in entries.items():
                    algo, preset = key.split("/")
                    pi0 = e["pi0"]
                    start = "–" if pi0 is None else f"{pi0['reward']:.2f} / {pi0['cost']:.2f}"
                    cost = _cell(e["cost"]) + (" †" if e["cost"][0] > 1.0 else "")
                    lines.append(
                        f"| {env} | {algo} | {preset} | {len(e['seeds'])} | {start} | "
                        f"{_cell(e['reward'])} | {cost} | {_cell(e['cumulative_cost'], 0)} | "
                        f"{e['safe_seeds']}/{len(e['seeds'])} |"
                    )
            lines.append("")
        run_s = sum(e["run_s"] for t in tasks.values() for e in t["presets"].values())
        lines += [f"Run time of this suite's runs (sum of their `total_s`): {run_s / 3600:.1f} h."]
    return "\n".join(lines) + "\n"


def write_report(
    dirs: Sequence[Path], out: Path, notes: Mapping[str, str], command: str, reps: int = 2000
) -> dict[str, Any]:
    """Write the page ``out``, its figures and ``report.json``; return the numbers."""
    runs = load_runs(dirs)
    figures_dir = out.parent / out.stem.lower()
    figures_dir.mkdir(parents=True, exist_ok=True)
    by_suite: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_suite[run.suite].append(run)

    def suite_order(label: str) -> tuple[int, str]:
        name = by_suite[label][0].summary["budget"]["name"]
        return (BUDGET_ORDER.index(name) if name in BUDGET_ORDER else len(BUDGET_ORDER), label)

    suites, figures = {}, {}
    for i, label in enumerate(sorted(by_suite, key=suite_order)):
        members = by_suite[label]
        suite = suite_report(members)
        main = [r for r in members if r.algo in MAIN_ALGOS]
        by_task: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
        for run in sorted(main, key=lambda r: (r.env, method_order(r.experiment), r.record.seed)):
            by_task[run.env][run.experiment].append(run)
        figures[label] = {"curves": f"{figures_dir.name}/curves_{i}.png"}
        plot_suite_curves(by_task, out.parent / figures[label]["curves"])
        groups = {
            env: {preset: [r.record for r in rs] for preset, rs in presets.items()}
            for env, presets in by_task.items()
        }
        suite["iqm"] = iqm_estimates(groups, reps, seed=0)
        if suite["iqm"]:
            figures[label]["iqm"] = f"{figures_dir.name}/iqm_{i}.png"
            plot_iqm(suite["iqm"], out.parent / figures[label]["iqm"])
        suites[label] = suite
    page = render(suites, runs, figures, command, sweep_commands(dirs), notes)
    out.write_text(page)
    (figures_dir / "report.json").write_text(json.dumps(suites, indent=1, sort_keys=True) + "\n")
    return suites


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, required=True, help="the page, e.g. docs/RESULTS.md")
    parser.add_argument("--notes", type=Path, help="YAML: '<suite>/<task>' -> a sentence")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (2000)")
    args = parser.parse_args(argv)
    try:
        reason = unwritable_reason(args.out.parent)
        if reason is not None or args.out.is_dir():
            raise AnalysisError(
                f"cannot write the page {args.out} ({reason or 'it is a directory'})"
            )
        notes = {}
        if args.notes is not None:
            if not args.notes.is_file():
                raise AnalysisError(f"no such notes file: {args.notes}")
            notes = yaml.safe_load(args.notes.read_text()) or {}
        write_report(args.dirs, args.out, notes, f"python -m {PROG} " + " ".join(argv), args.reps)
    except AnalysisError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{PROG}: error: cannot write the page {args.out} ({err})", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
