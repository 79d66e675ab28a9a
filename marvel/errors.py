"""Errors a user can act on: ``run.py`` prints their one-line message and exits non-zero."""


class MarvelError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class CheckpointError(MarvelError):
    """A checkpoint that cannot be used (missing, corrupt, or for another task/algorithm)."""
