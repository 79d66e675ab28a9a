"""Reading finished runs: curves, tables and IQM over many runs (``python -m marvel.analysis``),
one run's curves, and the W&B workspace of a sweep. Nothing is imported here, so a module that
draws one run's curves does not load the rest."""
