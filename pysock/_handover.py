"""Who steps a TLS handshake: the caller who waits for it, or the loop after a grace.

Theory of operation
===================

A handshake's turn (`pysock._handshake.Turn`) decides who may step it; this
module decides who *asks*. A thread that waits for a TLS connection to open
does so through its ``opened`` future, a `HandshakeFuture`: its ``result()``
and ``exception()`` (which a read or a write waiting for the open calls too)
first step the handshake in the waiting thread (`TlsHandshake.drive`), and
only then wait as any future does. Callbacks and `concurrent.futures.wait`
step nothing: the loop does.

The loop must step a handshake nobody waits for, yet waking it for every
handshake is what a waiting caller makes unnecessary. So a handshake whose
first flight left from a caller's thread is queued here (`hand_over_later`)
and handed to the selector thread by one timer per `HANDOVER_GRACE`, which
skips those a caller claimed meanwhile. A caller that finds no handshake
yet (the name is still being resolved, the TCP connect is in progress) marks
the connection as awaited, and its handshake then goes to the loop at once.
"""

from __future__ import annotations

import concurrent.futures
import selectors
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final, Optional

from . import _loop
from ._info import SocketInfo

if TYPE_CHECKING:
    from ._handshake import TlsHandshake
    from ._tls import TlsConnection

__all__ = ["HANDOVER_GRACE", "HandshakeFuture", "hand_over_later"]

# How long a handshake whose first flight left from a caller's thread may wait
# for the selector thread while nobody waits for it: one wake-up of the loop
# per this period hands over every such handshake. Shorter than an Internet
# round trip, so the peer's answer rarely comes first; on loopback it delays
# the end of an unawaited handshake by that much at most.
HANDOVER_GRACE: Final = 0.005

_handovers: list[tuple[weakref.ref[TlsConnection], TlsHandshake]] = []
_handovers_lock = threading.Lock()
_handover_scheduled = False


def hand_over_later(conn: TlsConnection, handshake: TlsHandshake) -> None:
    """Queue `handshake` for the loop's next hand-over (any thread); held weakly."""
    global _handover_scheduled
    with _handovers_lock:
        _handovers.append((weakref.ref(conn), handshake))
        if _handover_scheduled:
            return
        _handover_scheduled = True
    loop = _loop.get_loop()
    loop.call_at_threadsafe(time.monotonic() + HANDOVER_GRACE, _hand_over_in_loop)


def _hand_over_in_loop() -> None:
    """Watch every queued handshake still waiting for the loop (a claimed one is skipped)."""
    global _handover_scheduled
    with _handovers_lock:
        queued = _handovers[:]
        del _handovers[:]
        _handover_scheduled = False
    for ref, handshake in queued:
        conn = ref()
        if conn is not None:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if handshake.out else 0)
            handshake.watch_in_loop(conn, wanted)


def _forget_handovers_after_fork() -> None:
    """In a forked child: the queued handshakes are the parent's, and so was the timer."""
    global _handovers_lock, _handover_scheduled
    _handovers_lock = threading.Lock()
    del _handovers[:]
    _handover_scheduled = False


_loop.register_after_fork(_forget_handovers_after_fork)


class HandshakeFuture(concurrent.futures.Future[SocketInfo]):
    """A TLS connection's ``opened``: a thread that waits on it steps the handshake itself.

    Any other use (callbacks, `concurrent.futures.wait`) leaves it to the loop.
    Holds the connection weakly: a future kept after the socket is dropped
    keeps nothing else alive.
    """

    def __init__(self, conn: TlsConnection) -> None:
        super().__init__()
        self._connection = weakref.ref(conn)

    def result(self, timeout: Optional[float] = None) -> SocketInfo:
        return super().result(self._drive(timeout))

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        return super().exception(self._drive(timeout))

    def _drive(self, timeout: Optional[float]) -> Optional[float]:
        """Step the handshake here if it waits; return what is left of `timeout`."""
        conn = self._connection()
        if conn is None or self.done() or _loop.get_loop().in_loop_thread():
            return timeout
        if timeout is not None and timeout <= 0:
            return timeout  # A look, not a wait (a loop polling result(0)): the loop steps.
        handshake = conn.handshake_for_waiter()
        if handshake is None:
            return timeout
        if timeout is None:
            handshake.drive(conn, None)
            return None
        deadline = time.monotonic() + timeout
        handshake.drive(conn, deadline)
        return max(0.0, deadline - time.monotonic())
