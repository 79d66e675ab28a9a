"""What the search needs beyond marvel's own dependencies: Optuna, the ``tune`` extra."""

from __future__ import annotations

from marvel.errors import MissingExtraError


def require_optuna() -> None:
    """Raise ``MissingExtraError`` naming the extra when Optuna cannot be imported."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise MissingExtraError('the search needs Optuna: pip install -e ".[tune]"') from None
