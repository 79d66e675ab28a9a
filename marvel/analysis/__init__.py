"""Reading finished runs, top down: ``cli`` (``python -m marvel.analysis``: curves, tables and
IQM over many runs, or one run's curves), ``figures``, ``stats`` and ``tables``, ``runs`` (finished
runs as records, from run dirs or W&B); ``dashboard`` (``python -m marvel.analysis.dashboard``:
a sweep's W&B workspace); beside the training stages ``run_plot`` (one run's curves) and
``command`` (how the commands end). Nothing is imported here, so a module that imports one of
them loads no other."""
