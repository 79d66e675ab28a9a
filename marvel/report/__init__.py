"""The reproduction report, top down: ``cli`` (``python -m marvel.report``), ``page`` (the
Markdown, its figures and ``report.json``), ``verdicts`` (every number of a suite and each claim's
verdict), ``suites`` (the runs read, checked to pool, grouped into suites)."""
