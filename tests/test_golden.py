"""The golden test: the smoke pipeline's numbers are exactly the recorded ones, on every x86-64
CPU with AVX2 and any core count (numerics=portable, marvel/numerics.py).

Collection, pretraining, VPA, finetuning and evaluation for ``GOLDEN_PRESETS`` on BallCircle,
seed 0, budget=smoke, each compared with tests/golden_fingerprints.json value for value. A change
of code meant to change numbers re-records the file in the same commit and says why:
``python benchmarks/fingerprint.py --record-golden``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from benchmarks.fingerprint import GOLDEN, first_difference, golden_fingerprints
from marvel import numerics
from tests.helpers import locked_version_mismatches

GAP = numerics.platform_gap()


def recorded() -> dict:
    return json.loads(GOLDEN.read_text())["fingerprints"]


@pytest.mark.skipif(GAP is not None, reason=f"portable numerics do not cover {GAP}")
def test_smoke_pipeline_gives_the_recorded_numbers(tmp_path: Path) -> None:
    got = golden_fingerprints(tmp_path)
    differences = {
        name: first_difference(prints, got.get(name)) for name, prints in recorded().items()
    }
    differences = {name: where for name, where in differences.items() if where}
    versions = locked_version_mismatches()
    recorded_on = json.loads(GOLDEN.read_text())["recorded_on"]
    assert not differences, (
        f"numbers differ from {GOLDEN.name} (recorded on {recorded_on}, this CPU: "
        f"{numerics.cpu_model()}): {differences}"
        + (f"; installed versions differ from constraints.txt: {versions}" if versions else "")
        + "; a change meant to change numbers re-records them: "
        "python benchmarks/fingerprint.py --record-golden"
    )


def test_an_altered_value_is_caught() -> None:
    prints = recorded()
    altered = copy.deepcopy(prints)
    row = next(r for r in altered["marvel"]["rows"] if "loss/actor" in r)
    row["loss/actor"] = math.nextafter(row["loss/actor"], math.inf)  # one number, its last bit
    assert first_difference(prints["marvel"], altered["marvel"]) is not None
    assert first_difference(prints, copy.deepcopy(prints)) is None
