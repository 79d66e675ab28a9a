"""The docs say what the repo holds: the budget table of docs/USAGE.md matches
conf/budget/*.yaml value by value; every repo path, relative link (its anchor too), ``python -m``
module and ``from marvel... import`` in the README, the changelog and docs/*.md exists; and the
README stays a front door."""

from __future__ import annotations

import importlib
import re
from importlib.util import find_spec
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220

# The repo's folders: a word that starts with one of them and a slash is a repo-relative path.
REPO_PATH = re.compile(
    r"(?<![\w./~$-])((?:benchmarks|conf|docs|hydra_plugins|marvel|sweeps|tests)/[\w./-]*)"
)
LINK = re.compile(r"\]\(([^)\s]+)\)")
MODULE_COMMAND = re.compile(r"python -m (marvel[\w.]*)")
IMPORT = re.compile(r"from (marvel[\w.]*) import (\w+(?:, \w+)*)")
FENCE = "```"

# docs/USAGE.md's budget columns -> the keys of conf/budget/<option>.yaml
BUDGET_COLUMNS = {
    "finetuning iterations": "online_iterations",
    "evaluated every": "eval_every",
    "evaluation episodes": "eval_episodes",
    "checkpoint every": "checkpoint_every",
    "collected episodes": "collect_episodes",
    "offline steps": "offline_steps",
    "VPA iterations": "vpa_iterations",
    "diagnostic states": "vpa_diagnostic_states",
    "diagnostic horizon": "vpa_diagnostic_horizon",
    "seeds per sweep configuration": "seeds",
}


def section(doc: Path, heading: str) -> list[str]:
    """The lines of ``doc`` under ``## <heading>``, up to the next heading of that level."""
    lines = doc.read_text().splitlines()
    start = lines.index(f"## {heading}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def table(lines: list[str]) -> list[dict[str, str]]:
    """The first Markdown table in ``lines``, one dict per row keyed by the header's cells."""
    rows = [line for line in lines if line.startswith("|")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    header, body = cells[0], cells[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    """The anchors of ``doc``'s headings (outside code blocks), numbered as GitHub numbers
    repeats (``name``, ``name-1``, ...)."""
    found: set[str] = set()
    in_code = False
    for line in doc.read_text().splitlines():
        if line.startswith(FENCE):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6} (.+)", line)):
            name, n = slug(match.group(1)), 0
            while (anchor := name if n == 0 else f"{name}-{n}") in found:
                n += 1
            found.add(anchor)
    return found


def test_the_budget_table_is_conf_budget() -> None:
    rows = {
        row["option"].strip("`"): row for row in table(section(ROOT / "docs/USAGE.md", "Budgets"))
    }
    budgets = {p.stem: p for p in (ROOT / "conf/budget").glob("*.yaml")}
    assert sorted(rows) == sorted(budgets)
    task_iterations = [
        OmegaConf.load(p).finetune.iterations for p in (ROOT / "conf/env").glob("*.yaml")
    ]
    for option, path in budgets.items():
        budget = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        assert set(budget) - {"name"} == set(BUDGET_COLUMNS.values()), path
        for column, key in BUDGET_COLUMNS.items():
            value, cell = budget[key], rows[option][column]
            if isinstance(value, str):  # an interpolation: budget=paper's per-task iterations
                assert value == "${env.finetune.iterations}", (option, key)
                lo, hi = min(task_iterations), max(task_iterations)
                assert "`env.finetune.iterations`" in cell and f"({lo} to {hi}" in cell, cell
            else:  # null: vpa_diagnostic_horizon, the episode length
                expected = "episode length" if value is None else str(value)
                assert cell == expected, (option, column, cell, value)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_and_link_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = [
        path
        for path in {m.rstrip(".") for m in REPO_PATH.findall(text)}
        if not (ROOT / path).exists()
    ]
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (doc.parent / file).resolve() if file else doc
        if not linked.exists():
            missing.append(target)
        elif anchor and anchor not in anchors(linked):
            missing.append(f"{target} (no such heading)")
    assert not missing, f"{doc.relative_to(ROOT)} names what the repo does not have: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_and_import_exists(doc: Path) -> None:
    """``python -m marvel.<module>`` and ``from marvel.<module> import <name>`` as the docs
    write them."""
    text = doc.read_text()
    missing = [m for m in MODULE_COMMAND.findall(text) if find_spec(m) is None]
    for module, names in IMPORT.findall(text):
        imported = importlib.import_module(module)
        missing += [f"{module}.{n}" for n in names.split(", ") if not hasattr(imported, n)]
    assert not missing, f"{doc.relative_to(ROOT)} names modules the code does not have: {missing}"


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    assert lines[2:6] == [
        "```bash",
        "make run    # fresh machine: set up .venv and run the main job (python run.py)",
        "make test   # fresh machine: set up .venv and run the test suite",
        "```",
    ]


def test_the_slug_is_githubs() -> None:
    assert slug("VPA's diagnostic") == "vpas-diagnostic"
    assert slug("W&B") == "wb"
    assert slug("Issue 28: the default run's settings (2026-12-06)") == (
        "issue-28-the-default-runs-settings-2026-12-06"
    )
