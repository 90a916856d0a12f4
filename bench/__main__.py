"""Entry point: ``python -m bench [--quick] [--case NAME] ...``."""

from __future__ import annotations

import sys

if __name__ == "__main__":  # Also imported as __mp_main__ by spawned peer processes.
    from bench.cli import main

    sys.exit(main())
