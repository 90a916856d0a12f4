"""A pytest plugin for the portable runs: a pytest that cannot exit is stopped, and says why.

When a profile breaks pysock, a failed test may leave a peer thread blocked
(the leak check reports it, but cannot stop it), and the interpreter then waits
for it at exit, after the summary has been printed. A watchdog started after the
last test gives the exit `EXIT_GRACE` seconds, then names the threads still
running, with their stacks, and ends the process with `EXIT_HUNG`.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Final

import pytest

EXIT_GRACE: Final = 60.0  # A clean exit takes well under a second.
EXIT_HUNG: Final = 75  # Not one of pytest's own exit codes (0-5).


def pytest_unconfigure(config: pytest.Config) -> None:
    threading.Thread(target=_stop_a_hung_exit, name="portable-exit-watchdog", daemon=True).start()


def _stop_a_hung_exit() -> None:
    threading.Event().wait(EXIT_GRACE)
    frames = sys._current_frames()
    lines = [f"\ntests/portable: the interpreter has not exited {EXIT_GRACE:.0f} s after pytest:"]
    for thread in threading.enumerate():
        if thread.daemon or thread is threading.main_thread():
            continue
        lines.append(f"-- thread {thread.name!r} is still running:")
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            lines.extend(line.rstrip() for line in traceback.format_stack(frame))
    os.write(2, ("\n".join(lines) + "\n").encode(errors="replace"))
    os._exit(EXIT_HUNG)
