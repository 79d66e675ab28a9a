"""Offline datasets: DSRL's files (fetch, validate, load) and collected ones in DSRL's schema."""
