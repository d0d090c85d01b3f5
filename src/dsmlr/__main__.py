"""``python -m dsmlr``: the command-line interface (see :mod:`dsmlr.cli`)."""

import sys

from dsmlr.cli import main

if __name__ == "__main__":
    sys.exit(main())
