"""What every child program shares: the bounds, the report, and how to tell that a
thread is blocked in a system call."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Final, Optional

# Bound for every wait that should end quickly; a loaded machine may be slow.
WAIT: Final = 10.0
# Bytes the interrupted read has already gathered, and bytes the peer sends after.
PREFIX: Final = b"gathered-before-the-interrupt:"
SUFFIX: Final = b"sent-after-the-interrupt\n"
# Far more than loopback's send and receive buffers hold: the write must block.
BIG_WRITE: Final = 32 * 1024 * 1024
# How long a thread must sit in one unchanged system call to count as blocked.
_BLOCKED_SAMPLES: Final = 3
_SAMPLE_INTERVAL: Final = 0.05

Report = dict[str, Any]


def emit(report: Report) -> None:
    print(json.dumps(report), flush=True)


def wait_blocked(native_id: int, timeout: float = WAIT) -> None:
    """Return once thread `native_id` of this process sits in a blocking system call.

    Linux shows a thread's current system call in ``/proc/self/task/TID/syscall``
    (number, arguments, stack and instruction pointers; ``running`` when it is
    not in one). The same line read several times while this thread sleeps
    (and so leaves the GIL free) means the thread is blocked in that call, not
    waiting for the GIL on its way there. Without that file, fall back to a
    pause.
    """
    path = f"/proc/self/task/{native_id}/syscall"
    deadline = time.monotonic() + timeout
    previous, stable = "", 0
    while time.monotonic() < deadline:
        try:
            with open(path) as file:
                line = file.read().strip()
        except OSError:
            time.sleep(0.3)
            return
        if line == previous and not line.startswith("running"):
            stable += 1
            if stable >= _BLOCKED_SAMPLES:
                return
        else:
            stable = 0
        previous = line
        time.sleep(_SAMPLE_INTERVAL)
    raise RuntimeError(f"thread {native_id} never blocked in a system call")


def error_of(call: Callable[[], object]) -> Optional[str]:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return None
