"""``python -m marvel.report``: the command of ``marvel.report.cli``."""

import sys

from marvel.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
