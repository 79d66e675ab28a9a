"""The benchmark suite runs (``--quick``) and writes the figures benchmarks/README.md names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import ROOT

CONTRACT = (
    ("update", "updates_per_s"),
    ("update", "ratio_to_minimal"),
    ("update", "fraction_of_gemm_peak"),
    ("rollout", "ratio_to_bare_env"),
    ("eval", "ratio_to_bare_env"),
)


def test_quick_benchmark_writes_the_contract_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    for mode, threads in (("portable", 1), ("native", torch.get_num_threads())):
        figures = results[mode]  # each numerics mode measured in a process of its own
        for section, key in CONTRACT:
            assert figures[section][key] > 0, (mode, section, key)
        assert figures["main_command"] == {"wall_s": None, "peak_rss_mb": None}  # quick: none
        assert figures["machine"]["cores"] >= 1 and figures["machine"]["cpu"]
        assert figures["settings"]["numerics"] == mode
        assert figures["machine"]["torch_threads"] == threads
    assert results["portable_speed"]["update.updates_per_s"] > 0  # portable / native
    assert "update.updates_per_s" in proc.stdout and "portable / native" in proc.stdout
