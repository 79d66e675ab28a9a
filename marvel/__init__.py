"""marvel: offline-to-online safe RL (Marvel: offline pretraining, VPA, aPID SAC-Lagrangian)."""

import os

# dsrl imports its safety-gymnasium and MetaDrive parts eagerly; marvel uses only the Bullet part,
# and those two cannot be installed on Python 3.11. Silence dsrl's warning about them.
os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")

__version__ = "0.1.0"
