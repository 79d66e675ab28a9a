"""marvel: offline-to-online safe RL (Marvel: offline pretraining, VPA, aPID SAC-Lagrangian)."""

import os

# dsrl imports its safety-gymnasium and MetaDrive parts eagerly; neither installs on Python 3.11
# and marvel uses neither (its velocity tasks run on gymnasium's MuJoCo envs, marvel.envs).
# Silence dsrl's warning about them.
os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")

__version__ = "0.1.0"
