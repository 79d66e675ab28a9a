"""``python -m marvel.analysis``: the command of ``marvel.analysis.cli``."""

import sys

from marvel.analysis.cli import main

if __name__ == "__main__":
    sys.exit(main())
