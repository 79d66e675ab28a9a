"""How the commands of the analysis and the report end: with the line they print, or with one line
``<prog>: error: ...`` on stderr and exit status 2, never a traceback, for an error a user can act
on (``AnalysisError``) or a write that failed."""

from __future__ import annotations

import sys
from collections.abc import Callable

from marvel.errors import AnalysisError


def fail(prog: str, message: str) -> int:
    """Print ``<prog>: error: <message>`` on stderr; returns the exit status, 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def run_command(prog: str, target: str, work: Callable[[], str]) -> int:
    """Run ``work``, which writes ``target`` ("to --out figures", "the page RESULTS.md"), and print
    the text it returns: exit status 0. An ``AnalysisError`` or an ``OSError`` ends in one line
    instead: exit status 2."""
    try:
        done = work()
    except AnalysisError as err:
        return fail(prog, str(err))
    except OSError as err:
        return fail(prog, f"cannot write {target} ({err})")
    print(done)
    return 0
