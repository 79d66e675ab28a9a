"""marvel: offline-to-online safe RL (Marvel: offline pretraining, VPA, aPID SAC-Lagrangian)."""

import os

from marvel import numerics

# dsrl imports its safety-gymnasium and MetaDrive parts eagerly; neither installs on Python 3.11
# and marvel uses neither (its velocity tasks run on gymnasium's MuJoCo envs, marvel.envs).
# Silence dsrl's warning about them.
os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")
# The CPU code paths numpy and torch read when they load: the numerics mode (marvel/numerics.py).
numerics.select_at_import()

__version__ = "0.1.0"
