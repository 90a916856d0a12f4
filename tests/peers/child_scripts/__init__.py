"""Child programs for the process tests: each scenario runs in an interpreter of its own.

Run from the repository root as
``python -m tests.peers.child_scripts SCENARIO ARGS...`` (`runner.run_child`
does). A scenario
prints its observations as JSON objects, one a line, on stdout; the test
merges them and asserts. Durations are measured here with `time.monotonic()`
(CLOCK_MONOTONIC is system-wide on Linux, so a time printed here can also be
compared with the parent's clock, which is how the exit tests time the
interpreter's shutdown).

pysock is imported inside the scenarios, never at the top: a scenario that
needs an `atexit` handler to run *after* pysock's own (which stops the
selector thread) must register it before pysock is imported, since `atexit`
runs its handlers last-in, first-out.

The peers are stdlib sockets on loopback, port 0, in this same process. Every
blocking call here has a timeout and every loop is bounded, and the parent
kills a child that outlives its own generous timeout.

The modules: `basics` (what every scenario shares), `interrupt` (Ctrl-C),
`exiting` (interpreter exit and fork), `runner` (the parent's side).
"""

from __future__ import annotations

from .basics import BIG_WRITE, PREFIX, SUFFIX, WAIT, Report, emit, error_of, wait_blocked
from .interrupt import CONNECTING_OPS, READ_OPS
from .runner import CHILD_TIMEOUT, ROOT, TIMEOUTS, ChildRun, run_child, timeout_id

__all__ = [
    "BIG_WRITE",
    "CHILD_TIMEOUT",
    "CONNECTING_OPS",
    "PREFIX",
    "READ_OPS",
    "ROOT",
    "SUFFIX",
    "TIMEOUTS",
    "WAIT",
    "ChildRun",
    "Report",
    "emit",
    "error_of",
    "run_child",
    "timeout_id",
    "wait_blocked",
]
