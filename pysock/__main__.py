"""``python -m pysock HOST:PORT``: the command-line client (see `pysock.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
