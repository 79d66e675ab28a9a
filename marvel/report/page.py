"""The report's page: its Markdown (per suite the scores, the verdicts, where Marvel fails, the
IQM over tasks and the compatibility table), its figures and ``report.json``."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from marvel.analysis.figures import draw_mean_std, plot_iqm
from marvel.analysis.runs import method_order
from marvel.analysis.stats import curve_stats, iqm_estimates
from marvel.envs import BULLET_TASKS
from marvel.report.suites import MAIN_ALGOS, Run, load_runs, sweep_commands
from marvel.report.verdicts import CLAIMS, LEARNS, suite_report

BUDGET_ORDER = ("smoke", "default", "paper")


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
        + ("–" if facts["kl_final"] is None else f"{facts['kl_final']:.3g}")
        + f", with the policy's entropy {_num(facts['entropy_first'])} in the first iteration "
        f"and {_num(facts['entropy_final'])} at the end",
    ]
    return "; ".join(parts) + "."


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
                "stratified-bootstrap 95% confidence intervals (presets run on every task; each "
                "preset draws its own resamples, so its interval does not depend on the others):",
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
        hours = suite["run_s"] / 3600
        lines += [f"Run time of this suite's runs (sum of their `total_s`): {hours:.1f} h."]
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
