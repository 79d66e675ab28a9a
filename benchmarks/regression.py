"""The no-regression check: each throughput, time and memory figure against the one recorded in
``benchmarks/records/`` (or ``--baseline``) on the same machine and mode, and the table that
prints the figures beside it."""

from __future__ import annotations

from typing import Any


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"update": {"updates_per_s": x}} -> {"update.updates_per_s": x}"""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Figures where more is better (throughputs) or less is better (time, memory); the rest (ratios
# to a reference measured in the same run, FLOP counts) are not compared across runs.
HIGHER_IS_BETTER = ("_per_s", "_per_s_b256")
LOWER_IS_BETTER = ("wall_s", "peak_rss_mb", "s_per_100k_transitions")
REGRESSION = 0.9  # slower than 0.9x the recorded figure: flagged


def speedups(now: dict[str, Any], before: dict[str, Any]) -> dict[str, float]:
    """Each throughput, time and memory figure of ``now`` relative to ``before`` (both flattened;
    > 1: ``now`` is better), where both are positive floats."""
    ratios = {}
    for key, value in now.items():
        old = before.get(key)
        if not isinstance(value, float) or not isinstance(old, float) or old <= 0 or value <= 0:
            continue
        if key.endswith(HIGHER_IS_BETTER):
            ratios[key] = value / old
        elif key.endswith(LOWER_IS_BETTER):
            ratios[key] = old / value
    return ratios


def compare_with_baseline(results: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Speed-up of each throughput, time and memory figure over ``baseline`` (> 1: better),
    and the figures that regressed; empty when the baseline ran on another machine or mode."""
    recorded_settings = {"numerics": "native", **baseline["settings"]}  # recorded before issue 28
    same = (
        baseline["machine"]["cpu"] == results["machine"]["cpu"]
        and baseline["machine"]["cores"] == results["machine"]["cores"]
        and recorded_settings == results["settings"]
    )
    if not same:
        return {"comparable": False}
    speedup = speedups(flatten(results), flatten(baseline))
    return {
        "comparable": True,
        "recorded": baseline["machine"]["date"],
        "speedup": speedup,
        "regressions": sorted(k for k, v in speedup.items() if v < REGRESSION),
    }


def print_table(results: dict[str, Any]) -> None:
    flat = flatten({k: v for k, v in results.items() if k != "vs_baseline"})
    speedups = results.get("vs_baseline", {}).get("speedup", {})
    width = max(map(len, flat))
    for name, value in flat.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        if name in speedups:
            flag = "  REGRESSION" if speedups[name] < REGRESSION else ""
            text = f"{text:<12} {speedups[name]:.2f}x the recorded figure{flag}"
        print(f"{name:<{width}}  {text}")
    comparison = results.get("vs_baseline")
    if comparison is None:
        print("no recorded figures to compare with")
    elif not comparison["comparable"]:
        print("recorded figures are from another machine or mode: not compared")
    else:
        regressions = comparison["regressions"]
        print(
            f"against the figures recorded {comparison['recorded']}: "
            + (f"REGRESSION in {', '.join(regressions)}" if regressions else "no regression")
        )
