"""The environment is the locked one: every version in constraints.txt is the one installed
(`make setup` installs them; `make lock` refreshes the file)."""

from __future__ import annotations

from tests.helpers import locked_version_mismatches


def test_installed_versions_are_the_locked_ones() -> None:
    mismatches = locked_version_mismatches()
    assert not mismatches, f"installed versions differ from constraints.txt: {mismatches}"
