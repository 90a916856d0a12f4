"""A connection's side of the idle hang-up watch: judging the peer's end, FIN or reset.

The selector thread watches every idle open socket for the peer's FIN or
reset (epoll's ``EPOLLRDHUP``, kqueue's ``EV_EOF``, or the peek watch:
`pysock._hangups`, `pysock._kqueue`, `pysock._peekwatch`), so that ``closed``
completes with nobody reading. What it then does with the connection is
here. A reset must never be taken for a clean end, and a reset's error is
reported once, to whoever asks first (``SO_ERROR``, a ``recv()``, a
``send()``, a peek); so the judgement takes the connection's ``_lock``,
leaves the end to a reader already inside ``recv()``, and looks again
shortly at an end a writer was inside ``send()`` for.

These functions are `Connection` methods (bound there by name): the loop
calls them on its target, and `TlsConnection` overrides two of them to
decrypt the last records before judging.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import TYPE_CHECKING, Final, Optional

from . import _loop
from ._peekwatch import UNREAD_LIMIT
from ._platform import TELLS_RESET_LATE, hung_up, peek_end, reset_error
from ._state import (
    IN_HANGUP_SET,
    PEER_ENDED,
    TERMINAL,
    Descriptor,
    Read,
    RegistrationEvent,
    State,
    Write,
)

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = [
    "hangup_confirmed",
    "on_hangup_eof",
    "on_hangup_in_loop",
    "peek_in_loop",
    "reset_seen",
    "rewatch_in_loop",
    "rewatch_later",
    "set_hangup_watch",
    "settle_hangup_in_loop",
    "take_unread_in_loop",
]

# Seconds before the selector thread looks again at a hang-up that a reader was
# inside recv() for (it usually handles it first; this covers one just leaving).
_HANGUP_RECHECK: Final = 0.05


def set_hangup_watch(self: Connection, mask: Optional[int], defer: bool = False) -> None:
    """Add, change (`mask`) or remove (None) the idle hang-up watch. Holds ``_lock``.

    `defer`: a new connection's watch reaches the kernel after a grace period
    (`pysock._loop.HANGUP_GRACE`), so short-lived connections never pay for it.
    """
    sock = self.sock
    if sock is None or self._descriptor is Descriptor.INHERITED:
        return  # Never touch the parent's epoll set from a forked child.
    loop = _loop.get_loop()
    if mask is None:
        if self._registration in IN_HANGUP_SET:
            loop.unwatch_hangup_threadsafe(sock)
            self._watched(RegistrationEvent.UNWATCH_HANGUP)
    elif self.state is State.OPEN:
        if loop.watch_hangup_threadsafe(sock, self, mask, defer):
            self._watched(RegistrationEvent.WATCH_HANGUP)
            if loop.watches_in_selector:  # The descriptor now closes on the loop thread.
                self._watched(RegistrationEvent.ENTER_SELECTOR)
        else:
            self._watched(RegistrationEvent.UNWATCH_HANGUP)


def on_hangup_in_loop(
    self: Connection, error: Optional[OSError] = None, settled: bool = False
) -> None:
    """Hang-up set callback: the peer sent FIN or reset, or an error came.

    `error`: a reset the watch consumed to see the hang-up (a peek, where
    the platform has no other way to tell). `settled`: this is the second
    look at an end a writer was inside ``send()`` for (below).
    """
    with self._lock:
        if error is not None:
            self._reset_error = error
        sock = self.hangup_confirmed()
        if sock is None:
            return
        if self._reading and self._read_side is not Read.WAKING:
            # A reset's error is reported once, to SO_ERROR or to recv(): a
            # reader inside recv() meets the FIN or reset itself, unless it is
            # just leaving. Look again shortly; epoll is level-triggered.
            self._set_hangup_watch(None)
            self._rewatch_later()
            return
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not code and self._reset_error is not None:
            code = self._reset_error.errno or errno.ECONNRESET  # A peek took it.
        if not code and self._write_side is Write.OPEN and reset_error(sock) is not None:
            code = errno.ECONNRESET  # A writer's send() took the error first.
        if not code and self._writing and not settled and not TELLS_RESET_LATE:
            # A reset's error is reported once: a writer inside send() may just
            # have taken it, and the socket now looks as a FIN leaves it. The
            # writer reports a reset at once; look again shortly, then judge.
            self._set_hangup_watch(None)
            _loop.get_loop().call_later_in_loop(_HANGUP_RECHECK, self._settle_hangup_in_loop)
            return
        if code:
            self._reset_error = OSError(code, os.strerror(code))  # For a late reader.
        # EPOLLRDHUP is level-triggered: stop asking for it; keep watching for
        # a reset while the write side is open.
        self._set_hangup_watch(_loop.HANGUP_ERRORS_ONLY if not code else None)
    if code:
        self._broken_by(OSError(code, os.strerror(code)))
    elif self._read_side is not Read.WAKING:
        # After our own SHUT_RD (readable.close() waking a reader) epoll
        # reports the same event: only then is a FIN not the peer's.
        self.on_hangup_eof()


def settle_hangup_in_loop(self: Connection) -> None:
    self._rewatch_in_loop()  # Unless the writer reported the reset, or a close came.
    self.on_hangup_in_loop(settled=True)


def hangup_confirmed(self: Connection) -> Optional[socket.socket]:
    """The socket, if its hang-up event is real; None for a late one. Holds ``_lock``.

    An event can come late, for a descriptor that was closed and reused
    meanwhile (see `pysock._loop`): the hang-up is confirmed on our own
    socket, with a zero-timeout poll, before anything acts on it.
    """
    sock = self.sock
    if self._registration not in IN_HANGUP_SET or sock is None:
        return None
    ended, error = hung_up(sock)
    if error is not None:  # Consumed by the check: kept for whoever judges the end.
        self._reset_error = error
    return sock if ended else None


def peek_in_loop(self: Connection, sock: socket.socket) -> tuple[str, Optional[OSError]]:
    """The idle watch's peek (`pysock._peekwatch`): data, the end, or nothing.

    Under ``_lock``, with the reset a peek consumes recorded before the lock
    is released: a reader whose ``recv()`` returned 0 right after that peek
    then finds it (`reset_seen`) instead of taking the reset for a FIN.
    """
    with self._lock:
        answer, error = peek_end(sock)
        if error is not None:
            self._reset_error = error
    return answer, error


def take_unread_in_loop(self: Connection, sock: socket.socket) -> None:
    """Move the bytes an idle socket holds into the reader's stash (`pysock._peekwatch`).

    `sock` is ours: while the watch holds it, it is closed only on the loop
    thread, so it stays open while this runs.
    """
    reader = self.reader_ref() if self.reader_ref is not None else None
    if reader is None or self.state is not State.OPEN or self._read_side is not Read.OPEN:
        return
    error = reader._take_unread_in_loop(sock, UNREAD_LIMIT)
    if error is not None:
        with self._lock:
            self._reset_error = error


def rewatch_later(self: Connection) -> None:
    when = time.monotonic() + _HANGUP_RECHECK
    _loop.get_loop().call_at_threadsafe(when, self._rewatch_in_loop)


def rewatch_in_loop(self: Connection) -> None:
    with self._lock:
        if self.state is State.OPEN and self._registration not in IN_HANGUP_SET:
            ended = self._read_side in PEER_ENDED
            mask = _loop.HANGUP_ERRORS_ONLY if ended else _loop.HANGUP_WITH_EOF
            self._set_hangup_watch(mask)


def reset_seen(self: Connection) -> Optional[OSError]:
    """The reset behind a read's EOF, if the selector thread or the TCP state saw one.

    Called by a reader whose ``recv()`` returned 0: the selector thread may
    have taken the reset's error from ``SO_ERROR`` first (it records it
    under ``_lock``); without our own FIN sent, the TCP state tells too.
    """
    with self._lock:
        if self._reset_error is not None:
            return self._reset_error
    return None if self._write_side is Write.DONE else reset_error(self.sock)


def on_hangup_eof(self: Connection) -> None:
    """The loop saw the peer's FIN (TLS first decrypts the last records)."""
    self.on_peer_eof()
    if self.state in TERMINAL:
        with self._lock:
            self._set_hangup_watch(None)
