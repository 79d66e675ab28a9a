"""The benchmark suite runs (``--quick``) and writes the figures benchmarks/README.md names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    for section, key in CONTRACT:
        assert results[section][key] > 0, (section, key)
    assert results["main_command"] == {"wall_s": None, "peak_rss_mb": None}  # quick: skipped
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu"]
    assert "update.updates_per_s" in proc.stdout  # the printed table
