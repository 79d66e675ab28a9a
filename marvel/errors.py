"""Errors a user can act on: ``run.py`` prints their one-line message and exits non-zero."""


class MarvelError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class NotAvailableError(MarvelError):
    """A stage or option that a later release delivers."""


class CheckpointError(MarvelError):
    """A checkpoint that cannot be used (missing, corrupt, or for another task/algorithm)."""
