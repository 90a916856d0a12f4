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
second. A FIN behind unread bytes is the reader's to meet after them.

The loop's selector belongs to its thread, while connections come and go in
any thread. So a watch registers a *duplicate* of the socket (``dup()``),
made and closed by the loop thread: the connection may close its own
descriptor the moment it unwatches, and the selector never holds a closed
file (``select()`` fails on one). The duplicate keeps the kernel's socket
alive until the loop closes it, one loop turn later. New watches wait
`pysock._loop.HANGUP_GRACE` seconds before the first duplicate is made, as
the epoll set's do, so a connection that lives shorter costs nothing.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final, Optional

from ._platform import Peek, peek_end

if TYPE_CHECKING:
    from ._loop import Loop, Target

__all__ = ["PeekWatch", "Watched"]

# Seconds a socket holding unread bytes stays out of the selector after a
# peek, doubling to the maximum: short enough that a FIN after the reader
# drained the bytes is seen soon, long enough that idle data costs nothing.
FIRST_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 1.0


class Watched:
    """One watched socket: its target, and the duplicate the loop thread registers."""

    __slots__ = ("backoff", "dropped", "dup", "fd", "ref", "sock")

    def __init__(self, sock: socket.socket, ref: weakref.ref[Target]) -> None:
        self.fd = sock.fileno()  # The connection's descriptor: the key it is filed under.
        self.sock: Optional[socket.socket] = sock  # Until the duplicate is made.
        self.ref = ref
        self.dup: Optional[socket.socket] = None
        self.backoff = FIRST_BACKOFF
        self.dropped = False


class PeekWatch:
    """The hang-up watch of `Loop` without epoll; see the module docstring."""

    def __init__(self, loop: Loop, selector: selectors.BaseSelector, grace: float) -> None:
        self._loop = loop
        self._selector = selector
        self._grace = grace
        # Keyed by the connection's descriptor; guarded by _lock (any thread).
        self._watched: dict[int, Watched] = {}
        self._new: list[Watched] = []
        self._flush_scheduled = False
        self._lock = threading.Lock()

    # -- any thread ---------------------------------------------------------------

    def watch_threadsafe(self, sock: socket.socket, target: Target) -> bool:
        """Start watching `sock` for `target` (no-op if it is watched already)."""
        fd = sock.fileno()
        with self._lock:
            if fd in self._watched:
                return True
            watched = self._watched[fd] = Watched(sock, weakref.ref(target))
            self._new.append(watched)
            if self._flush_scheduled:
                return True
            self._flush_scheduled = True
        self._loop.call_at_threadsafe(time.monotonic() + self._grace, self._flush_in_loop)
        return True

    def unwatch_threadsafe(self, sock: socket.socket) -> None:
        """Stop watching `sock`; its descriptor may be closed as soon as this returns."""
        with self._lock:
            watched = self._watched.pop(sock.fileno(), None)
            if watched is None:
                return
            watched.dropped = True
            watched.sock = None
            if watched.dup is None:
                return  # Never reached the selector.
        self._loop.call_soon_threadsafe(self._drop_in_loop, watched)

    # -- loop thread only ---------------------------------------------------------

    def _flush_in_loop(self) -> None:
        with self._lock:
            new, self._new = self._new, []
            self._flush_scheduled = False
            for watched in new:
                if watched.dropped or watched.sock is None:
                    continue
                try:
                    watched.dup = watched.sock.dup()
                except OSError:
                    continue  # Out of descriptors: the reader meets the end itself.
                watched.sock = None
        for watched in new:
            if watched.dup is not None and not watched.dropped:
                self._selector.register(watched.dup, selectors.EVENT_READ, watched)

    def _drop_in_loop(self, watched: Watched) -> None:
        dup = watched.dup
        if dup is None:
            return
        watched.dup = None
        try:
            self._selector.unregister(dup)
        except (KeyError, ValueError):
            pass  # Out for a back-off.
        dup.close()

    def ready_in_loop(self, watched: Watched, events: int) -> None:
        """The selector says the duplicate is readable: data, or the end.

        ``EVENT_WRITE`` in `events` (only reading is asked for) is how a poll
        selector reports ``POLLERR`` or ``POLLHUP``: the end, which the target
        then reads from the socket itself, with nothing consumed here.
        """
        dup = watched.dup
        target = watched.ref()
        if dup is None or watched.dropped:
            return
        if target is None:  # Forgotten: its finalizer unwatches it.
            return
        if events & selectors.EVENT_WRITE:
            answer, error = Peek.FIN, None
        else:
            answer, error = peek_end(dup)
        if answer == Peek.NOTHING:
            return  # A reader took the bytes meanwhile.
        self._selector.unregister(dup)  # Quiet until handled, or for the back-off.
        if answer == Peek.DATA:
            delay, watched.backoff = watched.backoff, min(watched.backoff * 2, MAX_BACKOFF)
            self._loop.call_later_in_loop(delay, lambda: self._rearm_in_loop(watched))
            return
        # The end: the target confirms it on its own socket and decides (it
        # unwatches, or watches again); the duplicate stays out until then.
        target.on_hangup_in_loop(error)
        with self._lock:
            still = self._watched.get(watched.fd) is watched
        if still and watched.dup is not None:
            self._rearm_in_loop(watched)

    def _rearm_in_loop(self, watched: Watched) -> None:
        dup = watched.dup
        if dup is None or watched.dropped:
            return
        try:
            self._selector.register(dup, selectors.EVENT_READ, watched)
        except KeyError:
            pass  # Registered already.

    def close_all(self) -> None:
        """Close every duplicate (the loop is stopping, or this is a forked child)."""
        with self._lock:
            watched, self._watched = list(self._watched.values()), {}
            self._new = []
        for entry in watched:
            entry.dropped = True
            dup, entry.dup = entry.dup, None
            if dup is not None:
                dup.close()
