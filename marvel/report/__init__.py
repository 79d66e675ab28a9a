"""The reproduction report (``python -m marvel.report``)."""
