"""`Workers`: threads for blocking calls (DNS lookups), one per call in progress.

A `concurrent.futures.ThreadPoolExecutor` has a bound, and the call after it
waits behind the slow ones: with 32 workers, 32 unanswered lookups would hold
the 33rd socket's fast one, and a slow lookup for one socket must never stall
another. So a job starts at once, on an idle thread or on a new one; a thread
that stays idle for `idle_seconds` exits. Bursts of lookups for one name share
a single job (`pysock._opening.resolve`), so the count of threads follows the
count of distinct names being looked up at once, not of sockets.

The threads are daemons: the interpreter's exit never waits for a resolver's
timeout. A job's exceptions are pysock bugs: they are reported through
`sys.unraisablehook` (pytest fails the test) and the thread serves on.
"""

from __future__ import annotations

import collections
import itertools
import threading
from typing import Any, Callable, Optional

from ._bugs import report_bug

__all__ = ["Workers"]

Job = tuple[Callable[..., None], tuple[Any, ...]]


class Workers:
    """Run ``fn(*args)`` in a thread at once: an idle one, or a new one."""

    def __init__(self, name: str, idle_seconds: float) -> None:
        self._name = name
        self._idle_seconds = idle_seconds
        self._cond = threading.Condition(threading.Lock())
        self._jobs: collections.deque[Job] = collections.deque()
        self._idle = 0  # Threads waiting for a job.
        self._numbers = itertools.count()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Start ``fn(*args)`` now; `RuntimeError` if no thread can be started."""
        job: Job = (fn, args)
        with self._cond:
            self._jobs.append(job)
            if self._idle >= len(self._jobs):  # Enough idle threads for every queued job.
                self._cond.notify()
                return
            name = f"{self._name}_{next(self._numbers)}"
        thread = threading.Thread(target=self._work, name=name, daemon=True)
        try:
            thread.start()
        except BaseException:
            with self._cond:
                for index, queued in enumerate(self._jobs):
                    if queued is job:  # No other thread took it meanwhile.
                        del self._jobs[index]
                        break
            raise

    def _work(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except Exception as exc:
                report_bug(exc, fn, f"a {self._name} thread")
            del job, fn, args  # Hold nothing (a socket's weak reference's target) while idle.

    def _next_job(self) -> Optional[Job]:
        with self._cond:
            while not self._jobs:
                self._idle += 1
                try:
                    woken = self._cond.wait(self._idle_seconds)
                finally:
                    self._idle -= 1
                if not woken and not self._jobs:
                    return None  # Idle too long: the thread exits.
            return self._jobs.popleft()

    def __repr__(self) -> str:
        return f"<pysock Workers {self._name} idle={self._idle} queued={len(self._jobs)}>"
