"""The half-closes: each direction ends on its own, and the connection once both have.

A half-close does not change the lifecycle: it steps its direction's machine
(`pysock._state.Read`, `pysock._state.Write`) under the connection's lock,
and FINISHED fires by rule (`pysock._state.finishes`) once both directions
are over. The peer's FIN is seen by a reader's ``recv()`` or by the selector
thread, whichever comes first: the step is taken once. With
``allow_half_open=False`` the peer's FIN also closes our write side.
``readable.close()`` while a reader is inside ``recv()`` wakes it with
``shutdown(SHUT_RD)``, and the EOF that follows is ours (Read.WAKING), not
the peer's. A half-close asked for while connecting is applied at the open.

These functions are `Connection` methods (bound there by name); TLS adds
close_notify through the `Connection._send_eof` hook.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from ._state import (
    READ_TRANSITIONS,
    READER_CLOSED,
    WRITE_TRANSITIONS,
    DescriptorEvent,
    Event,
    Read,
    ReadEvent,
    State,
    WriteEvent,
    finishes,
    step,
)
from .errors import BrokenSocketError, SocketClosedError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["close_read", "maybe_finish", "on_peer_eof", "shutdown_write"]


def on_peer_eof(self: Connection) -> None:
    """The peer sent FIN (seen by a reader or the loop). Any thread."""
    with self._lock:
        side = step(READ_TRANSITIONS, self._read_side, ReadEvent.PEER_EOF)
        if side is None:
            return  # Seen already, or the EOF is our own SHUT_RD's.
        self._read_side = side
    if not self.options.allow_half_open:
        self.shutdown_write(
            BrokenSocketError(
                f"the peer closed the connection to {self.endpoint} "
                "(allow_half_open=False closes the write side too)"
            )
        )
    self._maybe_finish()


def shutdown_write(self: Connection, reason: BaseException, wait: bool = False) -> None:
    """Close the write side: the peer sees EOF; later writes raise `reason`.

    `wait` (``writable.close()``): TLS sends close_notify as a write would.
    """
    with self._lock:
        side = step(WRITE_TRANSITIONS, self._write_side, WriteEvent.SHUT)
        if side is None or self.state not in (State.OPEN, State.CONNECTING):
            return
        self._write_side = side
        self._write_error = reason
        self._enter(self.state)
        if self.state is State.CONNECTING:
            return  # _opened() shuts the write side down.
    self._send_eof(wait)
    self._maybe_finish()


def close_read(self: Connection) -> None:
    """``readable.close()``: later reads raise; a blocked reader wakes."""
    with self._lock:
        if self._read_error is None:
            self._read_error = SocketClosedError("the readable side was closed")
        # The flag first, then `_reading`: a reader that enters after this
        # sees the flag cleared and never blocks in recv() (see the handshake
        # in the module docstring).
        self._read_ok = False
        waking = self._reading and self.state is State.OPEN
        event = ReadEvent.STOP_WAKING if waking else ReadEvent.STOP
        side = step(READ_TRANSITIONS, self._read_side, event)
        if side is not None:
            self._read_side = side
        self._enter(self.state)
        if self.state is not State.OPEN:
            return  # Applied by _opened; or nothing is left to stop.
    if side is Read.WAKING:
        self._shutdown_sock(socket.SHUT_RD)
    self._maybe_finish()


def maybe_finish(self: Connection) -> None:
    """The FINISHED rule (`pysock._state.finishes`), checked after each half-close."""
    if not finishes(self._read_side, self._write_side) or not self._transition(Event.FINISHED):
        return
    if self._read_side not in READER_CLOSED:
        return
    with self._lock:
        released = self._hand(DescriptorEvent.RELEASE)
    if released:
        self._release()  # Nothing is left to read: give the descriptor back now.
