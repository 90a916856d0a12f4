"""The background selector thread: one per process, serving every socket.

Theory of operation
===================

pysock does its I/O in the caller's thread. A read first tries the socket and
only then waits; a write hands the caller's buffer to the kernel; a connect to
an IP literal is started by `connect()` itself. The background thread,
``pysock-selector``, exists for the events that nobody may be waiting for:

* a connect that did not complete at once (it completes ``opened``), and its
  ``connect_timeout`` deadline;
* the peer's FIN or RST arriving on a socket that no thread is reading, which
  must still complete ``closed`` (a web view or a pool learns of it with no
  thread reading);
* releasing the descriptor of a socket that is registered in the selector
  (closing a registered descriptor first would leave epoll watching a file
  that another process, after ``fork()``, may still hold open).

`Loop` is the selector, the timers and the command queue. Only its thread
touches the selector; other threads hand it commands with
`Loop.call_soon_threadsafe`, which appends to a deque and wakes the thread
through a socketpair (CPython's asyncio ``_write_to_self``). A flag keeps a
burst of commands down to one wake-up byte.

Idle sockets are watched for hang-ups only, by one of two composed objects,
each with its own theory of operation: the *hang-up set*
(`pysock._hangups`: epoll, or a kqueue on macOS and the BSDs), which the
thread waits on with the selector nested inside it and which any thread may
change; or, with neither, readiness plus a peek in the selector itself
(`pysock._peekwatch`), whose sockets are closed on this thread
(`watches_in_selector`). A callback that raises is a pysock bug, reported
through `pysock._bugs`; a forked child drops the parent's loop and starts
its own (`pysock._fork`).

Targets registered here are held through weak references, so the loop never
keeps a forgotten socket alive; the socket's finalizer closes it.
"""

from __future__ import annotations

import atexit
import collections
import heapq
import itertools
import os
import selectors
import socket
import threading
import time
import weakref
from typing import Any, Callable, Final, Optional, Protocol

from ._bugs import guarded, report_bug
from ._fork import fork_generation, register_after_fork
from ._hangups import (
    HANGUP_ERRORS_ONLY,
    HANGUP_GRACE,
    HANGUP_WITH_EOF,
    HangupSet,
    open_hangup_set,
)
from ._peekwatch import PeekWatch, Watched

# The fork, bug and mask names are the loop's too: the engine calls them as
# `_loop.fork_generation()`, `_loop.report_bug(...)`, `_loop.HANGUP_WITH_EOF`.
__all__ = [
    "HANGUP_ERRORS_ONLY",
    "HANGUP_GRACE",
    "HANGUP_WITH_EOF",
    "Loop",
    "Timer",
    "fork_generation",
    "get_loop",
    "register_after_fork",
    "report_bug",
]

_MAX_WAIT: Final = 86400.0  # Seconds: the longest single wait of the loop thread.
_ERROR_PAUSE: Final = 0.01  # Seconds after an unexpected wait error: no busy loop.
# How long the exiting interpreter waits for the thread to stop: it only has to leave select().
_STOP_JOIN_TIMEOUT: Final = 1.0


class Target(Protocol):
    """What the loop calls back when a watched socket is ready."""

    def on_ready_in_loop(self, events: int) -> None: ...

    def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None: ...


class Timer:
    """A callback scheduled on the loop; `cancel()` is safe from any thread."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """The process's background selector thread; see the module docstring."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._hangups: Optional[HangupSet] = open_hangup_set(self, self._selector)
        # Without epoll or kqueue: readiness plus a peek, in the selector (pysock._peekwatch).
        self._peek_watch = (
            PeekWatch(self, self._selector, HANGUP_GRACE) if self._hangups is None else None
        )
        if self._hangups is not None:
            # Every open and close calls these: bound to the set itself, not
            # through a method of ours that would add a Python frame to each.
            self.watch_hangup_threadsafe = self._hangups.watch_threadsafe  # type: ignore[method-assign]
            self.unwatch_hangup_threadsafe = self._hangups.unwatch_threadsafe  # type: ignore[method-assign]
        self._closed = False
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self._selector.register(self._wake_recv, selectors.EVENT_READ, None)
        self._commands: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._wakeup_pending = False
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._stopping = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="pysock-selector", daemon=True)
        self._thread.start()

    # -- any thread ---------------------------------------------------------------

    def call_soon_threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread, soon."""
        self._commands.append((callback, args))
        if not self._wakeup_pending:
            self._wakeup_pending = True
            try:
                self._wake_send.send(b"\0")
            except OSError:
                pass  # Full buffer: a wake-up is already pending. Closed: the loop is gone.

    def call_at_threadsafe(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the loop thread at `deadline` (`time.monotonic()`)."""
        timer = Timer(deadline, callback)
        self.call_soon_threadsafe(self._add_timer, timer)
        return timer

    def watch_hangup_threadsafe(
        self, sock: socket.socket, target: Target, mask: int, defer: bool = False
    ) -> bool:
        """Watch idle `sock` for the peer's FIN or a reset, or change its `mask`.

        With epoll or kqueue, `__init__` replaces this method with
        `HangupSet.watch_threadsafe` (see there); this body is the peek watch's
        (`pysock._peekwatch`), which `defer` does not concern: its watches
        always wait `HANGUP_GRACE`. The caller holds the target's lock. Returns
        False if nothing watches it: a mask of `HANGUP_ERRORS_ONLY` (a readable
        socket at EOF would wake it for ever; the next read or write meets a
        later reset), a socket that ``select()`` cannot take, or a stopped loop.
        """
        if self._peek_watch is None or self._closed:
            return False
        if not mask:
            self._peek_watch.unwatch_threadsafe(sock)
            return False
        return self._peek_watch.watch_threadsafe(sock, target)

    def unwatch_hangup_threadsafe(self, sock: socket.socket) -> None:
        """Stop watching `sock` (`HangupSet.unwatch_threadsafe` with epoll or kqueue)."""
        if self._peek_watch is not None and sock.fileno() >= 0 and not self._closed:
            self._peek_watch.unwatch_threadsafe(sock)

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    @property
    def watches_in_selector(self) -> bool:
        """True if the idle watch holds sockets in the selector (no epoll: `pysock._peekwatch`).

        A watched socket's descriptor must then be closed on this thread,
        after it left the selector: ``select()`` fails on a closed one.
        """
        return self._peek_watch is not None

    @property
    def stopped(self) -> bool:
        """True once the loop stopped (interpreter exit): its callbacks no longer run."""
        return self._stopping

    def stop_threadsafe(self, timeout: float = _STOP_JOIN_TIMEOUT) -> None:
        self._stopping = True
        self.call_soon_threadsafe(_noop)
        if not self.in_loop_thread():
            self._thread.join(timeout)

    # -- loop thread only ---------------------------------------------------------

    def watch_writable(self, sock: socket.socket, target: Target) -> None:
        """Call ``target.on_ready_in_loop`` when `sock` is writable (a connect ended)."""
        self._register(sock, selectors.EVENT_WRITE, target)

    def watch(self, sock: socket.socket, events: int, target: Target) -> None:
        """Call ``target.on_ready_in_loop`` for the selector `events` (a TLS handshake)."""
        self._register(sock, events, target)

    def unwatch(self, sock: socket.socket) -> None:
        """Forget `sock` if registered. Call before its descriptor is closed."""
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _register(self, sock: socket.socket, events: int, target: Target) -> None:
        ref = weakref.ref(target)
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            self._selector.register(sock, events, ref)
            return
        self._selector.modify(key.fileobj, events, ref)

    def _add_timer(self, timer: Timer) -> None:
        heapq.heappush(self._timers, (timer.deadline, next(self._sequence), timer))

    def _run(self) -> None:
        monotonic = time.monotonic
        while not self._stopping:
            timeout: Optional[float] = None
            if self._timers:
                # At most a day per wait: a huge deadline must not overflow epoll.
                timeout = min(max(0.0, self._timers[0][0] - monotonic()), _MAX_WAIT)
            try:
                if self._hangups is None:
                    self._dispatch_selector(timeout)
                else:
                    self._hangups.dispatch_in_loop(timeout, self._dispatch_selector)
            except Exception as exc:  # A pysock bug: report it, never let the thread die.
                report_bug(exc, self)
                time.sleep(_ERROR_PAUSE)
            # Helpers, not inline code: no local of this frame may keep a
            # forgotten socket alive while select() waits.
            self._run_timers(monotonic())
            self._run_commands()
        self._close_resources()

    def call_later_in_loop(self, delay: float, callback: Callable[[], None]) -> None:
        """Loop thread: run `callback` on this thread `delay` seconds from now."""
        self._add_timer(Timer(time.monotonic() + delay, callback))

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        ref = key.data
        if ref is None:
            self._drain_wakeups()
            return
        if type(ref) is Watched:
            assert self._peek_watch is not None
            self._peek_watch.ready_in_loop(ref, events)
            return
        target = ref()
        if target is None:
            self.unwatch(key.fileobj)  # type: ignore[arg-type]
        else:
            guarded(target.on_ready_in_loop, events)

    def _dispatch_selector(self, timeout: Optional[float]) -> None:
        for key, events in self._selector.select(timeout):
            self._dispatch(key, events)

    def _run_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                guarded(timer.callback)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_recv.recv(4096):
                pass
        except OSError:
            pass

    def _run_commands(self) -> None:
        # Clear the flag before draining, so a command appended after this point
        # always writes a new wake-up byte (see call_soon_threadsafe).
        self._wakeup_pending = False
        commands = self._commands
        while commands:
            callback, args = commands.popleft()
            guarded(callback, *args)

    def _close_resources(self) -> None:
        if self._peek_watch is not None:
            self._peek_watch.close_all()
        self._selector.close()
        self._closed = True  # Sockets closed later (at exit) must not touch the watch.
        if self._hangups is not None:
            self._hangups.close()
        self._wake_recv.close()
        self._wake_send.close()

    def abandon_after_fork(self) -> None:
        """In a forked child: drop the parent's loop without touching its thread."""
        self._stopping = True
        self._close_resources()


def _noop() -> None:
    pass


_loop: Optional[Loop] = None
_loop_lock = threading.Lock()


def get_loop() -> Loop:
    """Return the process's loop, starting its thread on first use (never at import)."""
    loop = _loop
    if loop is not None:
        return loop
    return _start_loop()


def _start_loop() -> Loop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = Loop()
        return _loop


def _forget_loop_in_child() -> None:
    """In a forked child: the parent's loop thread is not there; the next use starts one."""
    global _loop, _loop_lock
    _loop_lock = threading.Lock()  # A parent thread may have held it at the fork.
    loop, _loop = _loop, None
    if loop is not None:
        loop.abandon_after_fork()


def _stop_at_exit() -> None:
    loop = _loop
    if loop is not None and loop._pid == os.getpid():
        loop.stop_threadsafe()


# First of the after-fork callbacks: the others may use the child's new loop.
register_after_fork(_forget_loop_in_child)
atexit.register(_stop_at_exit)
