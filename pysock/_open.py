"""How a connection opens: the dialer's start, the connect deadline, then OPEN.

A connection to an IP literal whose connect completes at once opens in the
caller's thread with no `pysock._dialer.Dialer` at all (`dial`); a longer
opening keeps its state in one until OPEN, when the connection drops it, so
an idle socket carries none of it. One deadline, ``connect_timeout``, bounds
DNS, every attempt and the TLS handshake: it lives on the dialer, which is
built for it alone when the connect itself was immediate. OPEN is entered
once (`opened`), under the connection's lock, with the socket in its I/O
mode; a half-close asked for while connecting is applied then. A failed
opening gives its descriptors back at once (`fail_open`).

These functions are `Connection` methods (bound there by name);
`TlsConnection` replaces `connected` to run its handshake before OPEN.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any, Optional

from . import _loop
from ._dialer import Dialer, dial
from ._futures import finish
from ._info import SocketInfo, socket_info
from ._opening import tune
from ._state import DescriptorEvent, Event, State, Write

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = [
    "cancel_deadline",
    "connected",
    "connected_failed",
    "fail_open",
    "forget_attempts",
    "handshake_deadline",
    "on_connect_deadline",
    "opened",
    "schedule_connect_deadline",
    "start",
]

_log = logging.getLogger("pysock")


def start(self: Connection) -> None:
    """Begin opening (`pysock._dialer.dial`), under the connect deadline."""
    dial(self)
    if self.options.connect_timeout is not None and self.state is State.CONNECTING:
        self.schedule_connect_deadline()


def schedule_connect_deadline(self: Connection) -> None:
    """Fail the opening with `SocketTimeout` at the connect deadline, if still connecting.

    The deadline covers the TLS handshake too: a connection that had no
    dialer (connected at once, or taken over by `start_tls()`) gets one
    for its deadline.
    """
    with self._lock:
        if self.state is not State.CONNECTING:
            return
        dialer = self._dialer
        if dialer is None:
            dialer = self._dialer = Dialer(self)
    dialer.schedule_deadline()


def connected(self: Connection, sock: socket.socket, peer: Any = None) -> None:
    """The TCP connection (or tunnel) is up: switch the socket to its I/O mode and open.

    `peer` is ``sock.getpeername()`` when the caller has it already.
    """
    try:
        tune(sock, self.options)
        if self._blocking:
            sock.setblocking(True)
        info = socket_info(sock, peer)
    except OSError as exc:
        self._connected_failed(sock, exc)
        return
    self._opened(sock, info)


def connected_failed(self: Connection, sock: socket.socket, exc: OSError) -> None:
    """Setting the connected `sock` up failed: the dialer tries the next address, if any."""
    with self._lock:
        dialer = self._dialer
        if dialer is None and self.state is State.CONNECTING:
            dialer = self._dialer = Dialer(self)  # `sock` was connected at once.
    if dialer is None:
        sock.close()  # Closed meanwhile; never in a dialer's attempts.
        return
    dialer.connected_failed(sock, exc, _loop.get_loop().in_loop_thread())


def forget_attempts(self: Connection) -> None:
    """The winning attempt's socket became ``sock`` (a TLS handshake). Holds ``_lock``."""
    if self._dialer is not None:
        self._dialer.attempts = ()


def cancel_deadline(self: Connection) -> None:
    dialer = self._dialer
    if dialer is not None:
        dialer.cancel_timers()


def opened(self: Connection, sock: socket.socket, info: SocketInfo) -> None:
    """Enter OPEN (any thread) and drop the dialer. TLS calls this after its handshake."""
    with self._lock:
        if self.state is not State.CONNECTING:
            return
        dialer, self._dialer = self._dialer, None
        self.sock = sock
        self.info = info
        # A stream closed while connecting stays closed (its close is applied now).
        self._enter(State.OPEN)
        self._set_hangup_watch(_loop.HANGUP_WITH_EOF, defer=True)
        # The first outcome (`complete`, inline): CONNECTING had none yet, so the
        # slot holds None or the future a caller asked for.
        future: Any = self._opened_future
        if future is None:
            self._opened_future = (info, None)
    if dialer is not None:
        dialer.cancel_timers()
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("%s: open, %s -> %s", self.endpoint, info.local_address, info.remote_address)
    if future is not None:  # A future: CONNECTING had no outcome to keep.
        finish(future, info, None)
    if self._write_side is Write.DONE:  # Else FINISHED cannot apply yet (`finishes`).
        self._send_eof()
        self._maybe_finish()


def fail_open(
    self: Connection, error: BaseException, cause: Optional[BaseException] = None
) -> None:
    if cause is not None:
        error.__cause__ = cause
    if self._transition(Event.OPEN_FAILED, error):
        with self._lock:
            released = self._hand(DescriptorEvent.RELEASE)
        if released:
            self._release()


def handshake_deadline(self: Connection) -> Optional[float]:
    """The connect deadline, which bounds a TLS handshake too (None: no deadline)."""
    dialer = self._dialer  # Kept until the open when there is a deadline.
    return None if dialer is None else dialer.deadline


def on_connect_deadline(self: Connection) -> None:
    """A caller stepping the handshake reached the connect deadline before the loop's timer."""
    dialer = self._dialer
    if dialer is not None:
        dialer.on_deadline()
