"""Tuning a task: a constraint-aware Optuna search over the finetuning settings, run as a Hydra
sweeper (``python run.py -m +sweep=tune``; docs/USAGE.md, Tuning a task). The plugin that
Hydra instantiates is ``hydra_plugins/marvel_tune``; everything it does is here."""
