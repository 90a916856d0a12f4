"""The selector thread's idle hang-up watch where epoll is missing: readiness plus a peek.

Theory of operation
===================

On Linux the loop watches idle sockets in an epoll set for ``EPOLLRDHUP``:
it wakes for the peer's FIN or a reset and never for data (`pysock._loop`).
``poll()`` and ``select()`` (macOS and the BSDs without kqueue in Python's
reach here, Windows) have no such event, so this watch asks for readability
and then *peeks* (`pysock._platform.peek_end`): an empty peek is a FIN, an
error a reset, and bytes mean the socket simply holds data a reader has not
taken yet. Nothing is consumed, so no byte is stolen from the reader.

A socket holding unread bytes stays readable, and a level-triggered wait
would report it again at once: the watch would spin. So after a peek that
finds data the socket leaves the selector for a while, and comes back after
a delay that doubles each time (`FIRST_BACKOFF` to `MAX_BACKOFF`): 1,000
sockets that hold data nobody reads cost the thread about a peek each per
second.

A FIN behind unread bytes is invisible to a peek, yet ``closed`` must
complete for it: a pooled connection whose server sent a last reply and hung
up is idle, not open. So when the peek finds data *and nobody has read from
the socket for `IDLE_BEFORE_TAKING` seconds* (the connection counts its raw
reads), the thread takes the unread bytes itself, up to `UNREAD_LIMIT`, into the
reader's stash, which the next read serves first, in order
(`Target.take_unread_in_loop`); then it peeks again, now at the FIN or reset
if one came. A socket that a thread keeps reading is not drained: its bytes
do not pass through this thread, and its reader meets the end itself. Past
the limit the rest stays in the kernel, as it would in asyncio's paused
transport, and a FIN behind it is the reader's to meet.

The loop's selector belongs to its thread, while connections come and go in
any thread, and ``select()`` fails as a whole on a closed descriptor. So a
watched socket's descriptor is closed on the loop thread, after it left the
selector: a connection whose socket this watch holds releases it through
the loop, as it does a socket with a connect or a handshake in the selector
(`Loop.watches_in_selector`). New watches wait `pysock._loop.HANGUP_GRACE`
seconds before they reach the selector, as the epoll set's do, so a
connection that lives shorter costs nothing, and closes without the hop.

``select()`` has a fixed capacity (``FD_SETSIZE``: descriptors below 1024
on Linux and macOS, 512 sockets per call in CPython's Windows build). A
socket that ``select()`` cannot take is not watched (its reader still meets
the end), and on a select-only platform at most `SELECT_WATCHES` sockets are
watched at once, leaving room for connects and handshakes.
"""

from __future__ import annotations

import select
import selectors
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final, Optional, Protocol

from ._platform import Peek

if TYPE_CHECKING:
    from ._loop import Loop

__all__ = ["UNREAD_LIMIT", "PeekWatch", "Target", "Watched"]

# Seconds a socket holding unread bytes stays out of the selector after a
# peek, doubling to the maximum: short enough that a FIN after the reader
# drained the bytes is seen soon, long enough that idle data costs nothing.
FIRST_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 1.0
# Bytes an idle socket may hold in pysock's memory, taken by this thread to
# reach a FIN behind them (asyncio's default high-water mark is 64 KiB too).
UNREAD_LIMIT: Final = 64 * 1024
# Seconds bytes must wait with no raw read before this thread takes them: a
# thread that reads the socket reads again long before that, even on a loaded
# machine, so its bytes never pass through here.
IDLE_BEFORE_TAKING: Final = 0.25
# Idle sockets watched at once with a select() selector (module docstring).
SELECT_WATCHES: Final = 384


class Target(Protocol):
    """What the watch asks of a connection; every method runs on the loop thread."""

    @property
    def raw_reads(self) -> int:
        """How many raw reads the connection has made (any thread increments it)."""

    def peek_in_loop(self, sock: socket.socket) -> tuple[str, Optional[OSError]]:
        """`pysock._platform.peek_end` on `sock`, keeping a reset it consumes."""

    def take_unread_in_loop(self, sock: socket.socket) -> None:
        """Move the bytes `sock` holds into the reader, up to `UNREAD_LIMIT` (if idle)."""

    def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None:
        """The peer's FIN or a reset (`error`, if the peek consumed it)."""


class Watched:
    """One watched socket: its target, and whether it is in the selector now."""

    __slots__ = ("backoff", "dropped", "fd", "reads", "ref", "registered", "since", "sock")

    def __init__(self, sock: socket.socket, ref: weakref.ref[Target]) -> None:
        self.fd = sock.fileno()  # The key it is filed under while watched.
        self.sock = sock
        self.ref = ref
        self.registered = False  # Loop thread only.
        self.backoff = FIRST_BACKOFF
        self.dropped = False
        # The target's raw read count when a peek found data, and since when
        # (`time.monotonic()`) that count stands (-1: no data waiting).
        self.reads = -1
        self.since = 0.0


class PeekWatch:
    """The hang-up watch of `Loop` without epoll; see the module docstring."""

    def __init__(self, loop: Loop, selector: selectors.BaseSelector, grace: float) -> None:
        self._loop = loop
        self._selector = selector
        self._grace = grace
        self._select_only = isinstance(selector, selectors.SelectSelector)
        # Keyed by the connection's descriptor; guarded by _lock (any thread).
        self._watched: dict[int, Watched] = {}
        self._new: list[Watched] = []
        self._flush_scheduled = False
        self._lock = threading.Lock()

    # -- any thread ---------------------------------------------------------------

    def watch_threadsafe(self, sock: socket.socket, target: Any) -> bool:
        """Start watching `sock` for `target`, a `Target`; False if it cannot be watched.

        Typed loosely: the loop hands over its own, narrower ``Target``. The
        caller closes `sock` only through the loop thread from now on.
        """
        fd = sock.fileno()
        with self._lock:
            if fd in self._watched:
                return True
            if self._select_only and len(self._watched) >= SELECT_WATCHES:
                return False
            watched = self._watched[fd] = Watched(sock, weakref.ref(target))
            self._new.append(watched)
            if self._flush_scheduled:
                return True
            self._flush_scheduled = True
        self._loop.call_at_threadsafe(time.monotonic() + self._grace, self._flush_in_loop)
        return True

    def unwatch_threadsafe(self, sock: socket.socket) -> None:
        """Stop watching `sock`; the loop thread takes it out of the selector."""
        with self._lock:
            watched = self._watched.pop(sock.fileno(), None)
            if watched is None:
                return
            watched.dropped = True
        self._loop.call_soon_threadsafe(self._drop_in_loop, watched)

    # -- loop thread only ---------------------------------------------------------

    def _flush_in_loop(self) -> None:
        with self._lock:
            new, self._new = self._new, []
            self._flush_scheduled = False
        for watched in new:
            if not watched.dropped and self._selectable(watched.sock):
                self._rearm_in_loop(watched)

    def _selectable(self, sock: socket.socket) -> bool:
        """False for a descriptor beyond ``select()``'s reach (module docstring)."""
        if not self._select_only:
            return True
        try:
            select.select([sock], [], [], 0)
        except ValueError:
            return False
        return True

    def _drop_in_loop(self, watched: Watched) -> None:
        if watched.registered:
            watched.registered = False
            self._selector.unregister(watched.sock)

    def ready_in_loop(self, watched: Watched, events: int) -> None:
        """The selector says the socket is readable: data, or the end.

        ``EVENT_WRITE`` in `events` (only reading is asked for) is how a poll
        selector reports ``POLLERR`` or ``POLLHUP``: the end, which the target
        then reads from the socket itself, with nothing consumed here.
        """
        sock = watched.sock
        target = watched.ref()
        if watched.dropped:
            return
        if target is None:  # Forgotten: its finalizer unwatches it.
            return
        if events & selectors.EVENT_WRITE:
            answer, error = Peek.FIN, None
        else:
            answer, error = target.peek_in_loop(sock)
        if answer == Peek.DATA:
            answer, error = self._data_in_loop(watched, target)
        if answer == Peek.NOTHING:
            watched.reads = -1
            return  # A reader took the bytes meanwhile, or they wait in pysock now.
        watched.registered = False  # Quiet until handled, or for the back-off.
        self._selector.unregister(sock)
        if answer == Peek.DATA:
            delay, watched.backoff = watched.backoff, min(watched.backoff * 2, MAX_BACKOFF)
            self._loop.call_later_in_loop(delay, lambda: self._rearm_in_loop(watched))
            return
        # The end: the target confirms it on its own socket and decides (it
        # unwatches, or watches again); the socket stays out until then.
        target.on_hangup_in_loop(error)
        self._rearm_in_loop(watched)

    def _data_in_loop(self, watched: Watched, target: Target) -> tuple[str, Optional[OSError]]:
        """Bytes wait: take them if nobody has read for a while; then peek again."""
        reads, now = target.raw_reads, time.monotonic()
        if reads != watched.reads:
            if watched.reads >= 0:
                watched.backoff = FIRST_BACKOFF  # Someone reads it: look soon again.
            watched.reads, watched.since = reads, now
            return Peek.DATA, None
        if now - watched.since < IDLE_BEFORE_TAKING:
            return Peek.DATA, None
        target.take_unread_in_loop(watched.sock)
        return target.peek_in_loop(watched.sock)

    def _rearm_in_loop(self, watched: Watched) -> None:
        if not watched.dropped and not watched.registered:
            self._selector.register(watched.sock, selectors.EVENT_READ, watched)
            watched.registered = True

    def close_all(self) -> None:
        """Forget every watch (the loop is stopping, or this is a forked child).

        The sockets are their connections', never closed here; the selector
        goes with the loop.
        """
        with self._lock:
            watched, self._watched = list(self._watched.values()), {}
            self._new = []
        for entry in watched:
            entry.dropped = True
