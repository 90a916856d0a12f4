"""What the ``pysock`` command tells its user: exit statuses and stderr lines.

stdout carries the server's bytes alone, so everything else goes to stderr:
``* `` lines for what happens to the connection (`say`), and one
``pysock: error: ...`` line for the error that ends the command (`fail`).
Peer-controlled text is escaped first (`escape`), so a server cannot move
the cursor, clear the screen or forge a line of ours.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = [
    "EXIT_BROKEN",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OPEN_FAILED",
    "EXIT_TIMED_OUT",
    "EXIT_USAGE",
    "escape",
    "fail",
    "say",
]

# The exit statuses, as the `pysock.cli._main` docstring and ``--help`` list them.
EXIT_OK: Final = 0
EXIT_OPEN_FAILED: Final = 1
EXIT_USAGE: Final = 2  # argparse's own status for bad arguments.
EXIT_BROKEN: Final = 3
EXIT_TIMED_OUT: Final = 4
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it.


def say(message: str) -> None:
    print(f"* {message}", file=sys.stderr, flush=True)


def fail(status: int, message: str) -> int:
    """Print the error line and return `status`, for ``return fail(...)``."""
    # escape(): one line whatever the message holds (a name, a peer's answer).
    print(f"pysock: error: {escape(message)}", file=sys.stderr, flush=True)
    return status


def escape(text: str) -> str:
    """Peer-controlled text for a terminal: no control characters or escape sequences."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
