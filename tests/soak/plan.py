"""What the soak runs (transports, operations, sizes and bounds), what counts as a
failure, and the ledger the workers count into."""

from __future__ import annotations

import collections
import gc
import os
import threading
from typing import Final, Optional

# Each blocking call (connect, read, write, futures): generous for a loaded machine.
TIMEOUT: Final = 30.0
REPORT_EVERY: Final = 60.0
# After the time is up, operations in progress get this long to finish.
DRAIN: Final = 180.0
SLOW: Final = 20.0  # An operation slower than this is reported (not failed).
MAX_FAILURES: Final = 20  # Stop early after this many: the first ones tell the story.
MAX_SIZE_LOG2: Final = 22  # Transfers of 0 B .. 4 MiB, log-uniform.
HUGE: Final = 256 * 1024 * 1024  # A transfer that a close or a reset always cuts short.
CHUNKS: Final = (512, 4096, 16384, 32768)  # Write sizes; with LAGS, <= 64 KiB in flight.
MAX_WRITES: Final = 128  # Chunks grow for large transfers: bounded round trips per operation.
LAGS: Final = (1, 1024, 32768)  # How far a half-close echo's writes run ahead of its reads.

TRANSPORTS: Final = ("off", "on-1.2", "on-1.3", "starttls-1.2", "starttls-1.3")
# (operation, weight, transports it runs over)
OPERATIONS: Final = (
    ("echo", 3, TRANSPORTS),
    ("half_close", 2, ("off", "on-1.3", "starttls-1.3")),
    ("duplex", 2, TRANSPORTS),
    ("download", 3, TRANSPORTS),
    ("close_read", 1, TRANSPORTS),
    ("close_write", 1, TRANSPORTS),
    ("reset_read", 1, TRANSPORTS),
    ("reset_write", 1, TRANSPORTS),
)
# The peer's header operation behind each client operation.
PEER_OP: Final = {
    "echo": "ECHO",
    "half_close": "ECHO",
    "duplex": "ECHO",
    "download": "SEND",
    "close_read": "SENDX",
    "close_write": "SINK",
    "reset_read": "RSTS",
    "reset_write": "RSTR",
}


class Failure(AssertionError):
    """An outcome pysock's docs do not allow (wrong bytes, wrong error, wrong result)."""


# -- bookkeeping ---------------------------------------------------------------------------


class Ledger:
    """Counts kept by every worker, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = collections.Counter[str]()
        self.failures: list[str] = []
        self.slow: list[str] = []

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def note(self, into: list[str], what: str) -> None:
        with self.lock:
            into.append(what)


def snapshot(label: str, ledger: Optional[Ledger] = None) -> dict[str, int]:
    """Print and return the process's descriptor and thread counts and memory."""
    gc.collect()
    info = {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tasks": len(os.listdir("/proc/self/task")),
    }
    with open("/proc/self/status") as file:
        for line in file:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                info[key] = int(value.split()[0])
    ops = f" ops {ledger.counts['ops']}" if ledger is not None else ""
    print(
        f"[{label:>9}] fds {info['fds']} threads {info['threads']} (tasks {info['tasks']}) "
        f"VmRSS {info['VmRSS'] / 1024:.0f} MiB VmHWM {info['VmHWM'] / 1024:.0f} MiB{ops}",
        flush=True,
    )
    return info
