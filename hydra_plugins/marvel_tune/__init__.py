"""marvel's tuning sweeper for Hydra (``hydra/sweeper=marvel_tune``; its logic: marvel.tune)."""
