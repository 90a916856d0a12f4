"""The descriptor's life: who closes it, and when, from the close handshake to a fork.

Closing from another thread must wake a blocked reader or writer without
closing the descriptor under its feet: the number could be reused by an
unrelated file before the blocked call returns. So `close` shuts the socket
down, which wakes every blocked call, and the descriptor itself is closed
only once the loop has let go of it *and* no call is inside it. Who holds it
is the `pysock._state.Descriptor` machine, stepped by `hand` under the
connection's lock: RELEASE once (one thread takes charge), LET_GO when
nothing watches it any more, then the releaser or the last call out
(`after_call`) closes it. The ``_reading``/``_writing`` flags and
``_descriptor`` reaching LAST_OUT form a Dekker-style handshake (each side writes its own
flag, then reads the other's), sound because every bytecode is atomic under
the GIL (pysock._gil refuses a build without it). `take_over` hands the
socket to `start_tls()`'s new connection; `inherited_in_child` makes a
forked child's copy the parent's.

These functions are `Connection` methods (bound there by name);
`TlsConnection` extends `close`, `release` and `close_descriptors` to send
close_notify and to respect a descriptor lent to a TLS thread.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import TYPE_CHECKING, Final

from . import _loop
from ._state import (
    DESCRIPTOR_TRANSITIONS,
    IN_SELECTOR,
    PEER_ENDED,
    Descriptor,
    DescriptorEvent,
    Event,
    RegistrationEvent,
)
from .errors import SocketClosedError, StartTlsError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = [
    "after_call",
    "close",
    "close_descriptors",
    "descriptors",
    "hand",
    "inherited_in_child",
    "release",
    "release_in_loop",
    "release_now",
    "shutdown_sock",
    "take_over",
]

_LINGER_ABORT: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST.


def hand(self: Connection, event: DescriptorEvent) -> bool:
    """One step of the descriptor's machine (`pysock._state.Descriptor`). Holds ``_lock``.

    Returns False when `event` does not apply (released or handed off already).
    """
    new = DESCRIPTOR_TRANSITIONS.get((self._descriptor, event))
    if new is None:
        return False
    self._descriptor = new
    return True


def shutdown_sock(self: Connection, how: int) -> None:
    sock = self.sock
    if sock is None or self._descriptor is Descriptor.INHERITED:
        return  # Never shut down a connection inherited from the parent process.
    try:
        sock.shutdown(how)
    except OSError:
        pass  # ENOTCONN: the peer reset it first; the reader reports that.


def take_over(self: Connection) -> socket.socket:
    """`start_tls()`: hand the stdlib socket to a new connection; this one is UPGRADED.

    The hang-up watch is removed here (the new connection adds its own once
    its handshake is done); the new connection's handshake registration in
    the selector replaces any of this one's (see `Loop.watch`).
    """
    with self._lock:
        sock = self.sock
        refusal = self.upgrade_refusal()
        if sock is None or refusal is not None:
            # Broken, closed or half-closed since start_tls() checked it (the
            # selector thread saw a reset or the FIN, another thread called
            # close()): the guard of UPGRADE, under the lock this time.
            raise StartTlsError(refusal or f"start_tls(): the socket to {self.endpoint} is gone")
        self._set_hangup_watch(None)  # The new connection watches once it opens.
        self.sock = None
        # Nothing is left for close() or the finalizer to release.
        self._hand(DescriptorEvent.HAND_OFF)
    self._transition(Event.UPGRADE)
    return sock


def close(self: Connection) -> None:
    """Close both directions now; wake blocked callers; idempotent."""
    if self._descriptor is Descriptor.INHERITED:
        # The child's view only: ``closed`` is done, as after any close(); the
        # descriptor (the child's copy, closed at the fork) and the peer are
        # the parent's and untouched.
        self._transition(Event.CLOSE)
        return
    self._transition(Event.CLOSE)
    with self._lock:
        # Whatever ended the connection before, from now on your code closed it.
        self._read_error = self._write_error = SocketClosedError("the socket is closed")
        if not self._hand(DescriptorEvent.RELEASE):
            return
        # A reader woken by our shutdown(SHUT_RD) drains what the peer sent
        # meanwhile, so the descriptor closes with nothing unread and the kernel
        # sends a FIN, not the RST a close with unread data gets: a peer blocked
        # sending to our zero window would then wait for FIN_WAIT2's timeout (60
        # s). Abort as a plain close with unread data would. SO_LINGER acts only
        # when the descriptor closes, so it is set now, while it is surely open.
        if self._reading and self._read_side not in PEER_ENDED and self.sock is not None:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
            except OSError:
                pass  # Already reset: nothing to abort.
    self._release()


def release(self: Connection) -> None:
    """Give the descriptor back once no watch holds it and no call is inside it."""
    if self._descriptor is Descriptor.INHERITED:
        return
    with self._lock:
        # First: our own shutdown below must not look like the peer's FIN.
        self._set_hangup_watch(None)
        in_selector = self._registration in IN_SELECTOR
    if self._reading or self._writing:
        self._shutdown_sock(socket.SHUT_RDWR)  # Wake them; the last one out closes.
    if in_selector:
        loop = _loop.get_loop()
        if not loop.stopped:
            loop.call_soon_threadsafe(self._release_in_loop)
            return
        with self._lock:  # A finalizer at exit: the loop stopped, nothing watches.
            self._watched(RegistrationEvent.LEAVE_SELECTOR)
    self._release_now()


def release_in_loop(self: Connection) -> None:
    loop = _loop.get_loop()
    with self._lock:
        for sock in self._descriptors():
            loop.unwatch(sock)
        self._watched(RegistrationEvent.LEAVE_SELECTOR)
    self._release_now()


def release_now(self: Connection) -> None:
    with self._lock:
        self._hand(DescriptorEvent.LET_GO)
    # The flag above first, then the calls' flags (module docstring).
    if not (self._reading or self._writing):
        self._close_descriptors()


def close_descriptors(self: Connection) -> None:
    dialer = self._dialer
    if dialer is None:  # Opened, or opened at once: the one socket (`_descriptors`).
        sock = self.sock
        if sock is not None:
            sock.close()
        return
    for sock in self._descriptors():
        sock.close()
    self._dialer = None  # Its attempts' descriptors were the last of the opening.


def descriptors(self: Connection) -> list[socket.socket]:
    """The open socket and every connect attempt's."""
    sock = self.sock
    dialer = self._dialer
    if dialer is None or not dialer.attempts:
        return [] if sock is None else [sock]
    socks = [attempt.sock for attempt in dialer.attempts]
    if sock is not None:
        socks.append(sock)
    return socks


def after_call(self: Connection) -> None:
    # The other half of the hand-off: the last call out closes a released socket.
    if self._descriptor is Descriptor.LAST_OUT and not (self._reading or self._writing):
        self._close_descriptors()


def inherited_in_child(self: Connection) -> None:
    """After fork(), in the child: this connection belongs to the parent."""
    self._lock = threading.Lock()  # A parent thread may have held the old one.
    self._hand(DescriptorEvent.INHERIT)
    self._read_ok = self._write_ok = False
    self._read_error = self._write_error = SocketClosedError(
        "this socket was inherited from the parent process; open a new one in the child"
    )
    reader = self.reader_ref() if self.reader_ref is not None else None
    if reader is not None:
        reader._detach_buffer()  # Its buffered bytes are the parent's too.
        reader._reset_lock_after_fork()  # A parent thread may have held it.
    # Closing our copy of the descriptor sends nothing: the parent still holds it.
    for sock in self._descriptors():
        sock.close()
    self._dialer = None  # Its timers and lookups were the parent's.
