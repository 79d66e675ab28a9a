"""Every number of one suite, task by task: pi_0's score, each preset's final and last-third
scores and cumulative online cost, VPA's rank correlations, each claim's verdict, and Marvel's
own diagnostics where it fails."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from marvel.analysis.runs import method_order
from marvel.analysis.stats import last_third, mean_std
from marvel.report.suites import MAIN_ALGOS, Run

ABLATIONS = ("marvel", "vpa_pid", "vpa_only", "apid_only")  # not baselines of claim 2
LEARNS = 0.05  # a task where no preset's mean final normalized reward reaches it: no verdict
CLAIMS = (
    ("under_limit", "Marvel under the limit"),
    ("best_safe_reward", "reward >= every safe baseline"),
    ("cheaper_than_scratch", "cumulative cost < from scratch"),
    ("vpa_ranks_costs", "VPA raises the cost critic's rank correlation (random actions)"),
)
# The claims on what finetuning achieves; the fourth is about VPA's mechanism.
OUTCOMES = ("under_limit", "best_safe_reward", "cheaper_than_scratch")


def fails(claims: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether Marvel fails a task: one of its outcome claims does (the page then gives why)."""
    return any(claims[name]["holds"] is False for name in OUTCOMES)


def preset_entry(runs: Sequence[Run]) -> dict[str, Any]:
    """A preset's scores on a task: means and sample stds over its seeds."""

    finals = [run.summary["eval"] for run in runs]
    thirds = [last_third(run.record) for run in runs]
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
    iteration and over the last third; the KL divergence to pi_0 at the end, and the policy's
    entropy in the first iteration and at the end (the scale of that KL)."""

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
        per_run["eval_cost"].append(last_third(run.record)[1])
        first = next((r for r in rows if r.get("diag/q_cost") is not None), {})
        per_run["q_cost_first"].append(first.get("diag/q_cost"))
        per_run["mc_cost_first"].append(first.get("diag/mc_cost"))
        per_run["q_cost"].append(mean([r.get("diag/q_cost") for r in late]))
        per_run["mc_cost"].append(mean([r.get("diag/mc_cost") for r in late]))
        kl = [r["diag/kl_to_pi0"] for r in rows if r.get("diag/kl_to_pi0") is not None]
        per_run["kl_final"].append(kl[-1] if kl else None)
        entropy = [r["diag/entropy"] for r in rows if r.get("diag/entropy") is not None]
        per_run["entropy_first"].append(entropy[0] if entropy else None)
        per_run["entropy_final"].append(entropy[-1] if entropy else None)
    return {key: mean(values) for key, values in per_run.items()}


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
        if fails(task["verdicts"]) and "marvel" in presets:
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
    run_s = float(sum(run.summary["timings"]["total_s"] for run in runs))
    return {"tasks": tasks, "compatibility": compatibility, "run_s": run_s}
