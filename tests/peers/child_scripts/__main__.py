"""``python -m tests.peers.child_scripts SCENARIO ARGS...``: run one scenario."""

from __future__ import annotations

import sys
from typing import Callable, Final

from .exiting import exit_blocked, exit_idle, exit_peer_reset, fork_exit_normally
from .interrupt import interrupt

SCENARIOS: Final[dict[str, Callable[..., None]]] = {
    "interrupt": interrupt,
    "exit_blocked": exit_blocked,
    "exit_idle": exit_idle,
    "exit_peer_reset": exit_peer_reset,
    "fork_exit_normally": fork_exit_normally,
}


SCENARIOS[sys.argv[1]](*sys.argv[2:])
