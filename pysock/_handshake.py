"""The TLS handshake as a phase object: stepped by the loop, or by the caller who waits.

Theory of operation
===================

A `TlsHandshake` exists from the moment a `pysock._tls.TlsConnection` takes
its connected socket (`begin_handshake`) to the end of the handshake, and is
dropped then. Each *step* is non-blocking: receive what the socket holds, let
OpenSSL answer it (`pysock._records.TlsRecords.handshake`), send the flight it
produced as far as the socket takes it (the rest waits in ``out``), and say
what to wait for next. Whose turn it is to step is ``turn`` (`Turn`), changed
only under the connection's ``_lock`` along `TURNS`, so exactly one thread
steps at a time:

* The loop's side. The thread that finished the TCP connect makes the first
  step (the ClientHello leaves at once), then hands the socket to the
  selector thread (HANDED; from a caller's thread within
  `pysock._handover.HANDOVER_GRACE`), which watches it (WATCHED) and steps
  on each readiness (STEPPING).
* A caller who waits for the open (`opened.result()`, `opened.exception()`,
  or a read or write waiting for it: `pysock._handover.HandshakeFuture`)
  claims the turn while no loop step runs (CLAIM), and steps the handshake
  in its own thread, waiting with ``poll()``. Connect-then-wait, the common
  case, so costs no thread hand-off and usually no wake-up of the loop at
  all; if the loop had registered the socket first, it drops its watch when
  it sees the socket ready in the caller's turn. The
  caller holds the descriptor as a read does (`TlsConnection.borrow`):
  ``close()`` from another thread shuts the socket down, which wakes its
  ``poll()``, and the caller closes the descriptor on its way out. A caller
  that stops waiting first (its own timeout, or Ctrl-C in ``poll()``) hands
  the turn back to the loop (LEAVE); one interrupted inside a step may have
  lost a flight, and fails the opening rather than leave it stuck.

The connect deadline bounds both sides: the loop's timer fails the opening
(which shuts a borrowed socket down), and a caller's ``poll()`` ends at it.
The handshake ends (END) by entering OPEN (`finish`) or failing the opening
(`fail`, with the reason a user can act on); over a socket still registered
in the selector the end is left to the selector thread, which alone may
drop the registration.
"""

from __future__ import annotations

import enum
import errno
import logging
import selectors
import socket
import ssl
from typing import TYPE_CHECKING, Final, Optional

from . import _loop
from ._handover import hand_over_later
from ._info import SocketInfo, format_sockaddr
from ._platform import MSG_DONTWAIT, deadline_wait
from ._records import Handshake
from ._state import RegistrationEvent, State, step
from ._tlsend import handshake_reason
from .errors import TLSError

if TYPE_CHECKING:
    from ._tls import TlsConnection

__all__ = ["TURNS", "TlsHandshake", "Turn", "TurnEvent"]

_log = logging.getLogger("pysock")

# One receive of the peer's flight: a server's certificate chain fits many times.
_RECEIVE: Final = 128 * 1024


class Turn(enum.Enum):
    """Who steps the handshake now."""

    STEPPING = "a loop-side step runs (the first in the thread that connected)"
    HANDED = "the selector thread is asked to watch the socket"
    WATCHED = "the selector thread watches the socket"
    CALLER = "a caller waiting for the open steps it"
    OVER = "the handshake ended"


class TurnEvent(enum.Enum):
    """What moves the turn."""

    PAUSE = "a loop-side step waits for the peer"
    WATCH = "the selector thread registers the socket"
    READY = "the selector thread finds the socket ready"
    CLAIM = "a caller waits for the open"
    LEAVE = "the caller stops waiting before the end"
    END = "the handshake is done or failed"


TURNS: Final[dict[tuple[Turn, TurnEvent], Turn]] = {
    (Turn.STEPPING, TurnEvent.PAUSE): Turn.HANDED,
    (Turn.HANDED, TurnEvent.WATCH): Turn.WATCHED,
    (Turn.WATCHED, TurnEvent.READY): Turn.STEPPING,
    (Turn.HANDED, TurnEvent.CLAIM): Turn.CALLER,
    (Turn.WATCHED, TurnEvent.CLAIM): Turn.CALLER,
    (Turn.CALLER, TurnEvent.LEAVE): Turn.HANDED,
    (Turn.STEPPING, TurnEvent.END): Turn.OVER,
    (Turn.CALLER, TurnEvent.END): Turn.OVER,
}


class TlsHandshake:
    """One connection's handshake in progress; see the module docstring."""

    __slots__ = ("out", "turn")

    def __init__(self) -> None:
        self.turn = Turn.STEPPING  # The first step runs in the thread that creates it.
        self.out = b""  # Handshake bytes OpenSSL produced that the socket did not take yet.

    def move(self, event: TurnEvent) -> bool:
        """Take `event` if it applies (`TURNS`). Holds the connection's ``_lock``."""
        turn = step(TURNS, self.turn, event)
        if turn is None:
            return False
        self.turn = turn
        return True

    def step(self, conn: TlsConnection, sock: socket.socket, events: int) -> int:
        """Receive and send as `events` allow, then let OpenSSL answer.

        Returns the selector events to wait for next, or 0 once the handshake
        is done (the caller of this then calls `finish`) or failed (done here).
        """
        try:
            if events & selectors.EVENT_WRITE:
                self._flush(sock)
            if events & selectors.EVENT_READ:
                data = sock.recv(_RECEIVE)
                if data:
                    conn._records.feed(data)
                else:
                    conn._records.feed_eof()
            progress, flight = conn._records.handshake()
            self.out += flight
            self._flush(sock)
        except BlockingIOError:  # Not ready after all.
            return selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0)
        except (ssl.SSLError, OSError) as exc:
            self.fail(conn, sock, exc)
            return 0
        if progress is Handshake.DONE and not self.out:
            return 0
        waiting = 0 if progress is Handshake.DONE else selectors.EVENT_READ
        return waiting | (selectors.EVENT_WRITE if self.out else 0)

    def _flush(self, sock: socket.socket) -> None:
        while self.out:
            try:
                sent = sock.send(self.out)
            except BlockingIOError:
                return
            self.out = self.out[sent:]

    # -- the loop's side ------------------------------------------------------------------

    def first_step(self, conn: TlsConnection, sock: socket.socket, awaited: bool) -> None:
        """The ClientHello, from the thread that connected; then the loop's turn.

        From a caller's thread (`connect()`, `start_tls()`) the socket reaches
        the loop within `pysock._handover.HANDOVER_GRACE`, unless a caller
        claims the turn first, as one who waits for the open does: waking the
        loop for each handshake cost about a twentieth of a loopback connect.
        If a caller already waits (`awaited`: it found no handshake to step),
        or the thread is the loop, the socket goes to the loop at once.
        """
        wanted = self.step(conn, sock, 0)
        if wanted == 0:
            if self.turn is Turn.STEPPING:  # Done at once (no server answers so), or failed.
                self.finish(conn, sock)
            return
        with conn._lock:
            paused = conn.state is State.CONNECTING and self.move(TurnEvent.PAUSE)
        if not paused:
            return
        if awaited or _loop.get_loop().in_loop_thread():
            self.hand_to_loop(conn, wanted)
        else:
            hand_over_later(conn, self)

    def hand_to_loop(self, conn: TlsConnection, events: int) -> None:
        """After a loop-side step (or a caller's leave): let the selector thread watch."""
        loop = _loop.get_loop()
        if loop.in_loop_thread():
            self.watch_in_loop(conn, events)
        else:
            loop.call_soon_threadsafe(self.watch_in_loop, conn, events)

    def watch_in_loop(self, conn: TlsConnection, events: int) -> None:
        with conn._lock:  # close() decides under this lock who releases the descriptor.
            sock = conn.sock
            if conn.state is State.CONNECTING and sock is not None and self.move(TurnEvent.WATCH):
                _loop.get_loop().watch(sock, events, conn)
                conn._watched(RegistrationEvent.ENTER_SELECTOR)

    def ready_in_loop(self, conn: TlsConnection, events: int) -> None:
        """The selector found the socket ready: step, or drop the watch in a caller's turn."""
        loop = _loop.get_loop()
        with conn._lock:
            sock = conn.sock
            if sock is None or conn.state is not State.CONNECTING:
                return
            if not self.move(TurnEvent.READY):
                if self.turn is Turn.CALLER:  # Level-triggered: it would fire again and again.
                    loop.unwatch(sock)
                    conn._watched(RegistrationEvent.LEAVE_SELECTOR)
                return
        wanted = self.step(conn, sock, events)
        if wanted == 0:
            if self.turn is Turn.STEPPING:  # Done, not failed.
                self.finish(conn, sock)
            return
        with conn._lock:
            if conn.state is State.CONNECTING and self.move(TurnEvent.PAUSE):
                self.move(TurnEvent.WATCH)
                loop.watch(sock, wanted, conn)

    # -- a caller's turn --------------------------------------------------------------------

    def drive(self, conn: TlsConnection, deadline: Optional[float]) -> None:
        """Step the handshake in this thread until it ends or `deadline` passes.

        Does nothing if the turn cannot be claimed (a loop step runs, the
        handshake is over): the caller then waits for ``opened`` as before.
        """
        with conn._lock:
            sock = conn.sock
            if sock is None or conn.state is not State.CONNECTING:
                return
            before = self.turn
            if not self.move(TurnEvent.CLAIM):
                return
            if not conn.borrow():  # A release under way: leave the turn as it was.
                self.turn = before
                return
        in_step = False
        try:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0)
            limit = conn.handshake_deadline()
            if deadline is not None and (limit is None or deadline < limit):
                limit = deadline
            while _connecting(conn):
                write = bool(wanted & selectors.EVENT_WRITE)
                if not deadline_wait(sock, write, limit):
                    if limit is not None and limit != deadline:
                        conn.on_connect_deadline()  # The connect deadline, not the caller's.
                    return
                if not _connecting(conn):  # close() woke us, or the deadline's timer.
                    return
                in_step = True
                wanted = self.step(conn, sock, selectors.EVENT_WRITE if write else wanted)
                if wanted == 0:
                    if self.turn is Turn.CALLER:  # Done, not failed.
                        self.finish(conn, sock)
                    return
                in_step = False
        except BaseException as exc:
            if in_step:  # A flight may be lost: fail rather than leave it stuck.
                self.fail(conn, sock, exc)
            raise
        finally:
            self._leave(conn)

    def _leave(self, conn: TlsConnection) -> None:
        with conn._lock:
            handed = conn.state is State.CONNECTING and self.move(TurnEvent.LEAVE)
        conn.give_back()
        if handed:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0)
            self.hand_to_loop(conn, wanted)

    # -- the end ----------------------------------------------------------------------------

    def finish(self, conn: TlsConnection, sock: socket.socket) -> None:
        """The handshake is done: enter OPEN, on the selector thread if it watches the socket."""
        loop = _loop.get_loop()
        with conn._lock:
            if not self.move(TurnEvent.END):
                return
            conn._handshake = None
            if conn.in_selector and not loop.in_loop_thread():
                # Only that thread may drop the watch; a caller's turn meets this
                # when the loop had registered before the claim and saw no readiness.
                loop.call_soon_threadsafe(self._open_connection, conn, sock)
                return
        self._open_connection(conn, sock)

    def _open_connection(self, conn: TlsConnection, sock: socket.socket) -> None:
        with conn._lock:
            if conn.in_selector:
                _loop.get_loop().unwatch(sock)
                conn._watched(RegistrationEvent.LEAVE_SELECTOR)
        tls = conn._records.describe()
        try:
            info = SocketInfo(
                format_sockaddr(sock.getpeername()), format_sockaddr(sock.getsockname()), tls.alpn
            )
            if conn._blocking:
                sock.setblocking(True)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:  # Reset already: a server refusing our certificate.
                reason = "the peer closed the connection at the end of the handshake"
                cut = ConnectionResetError(errno.ECONNRESET, reason)
                cut.__cause__ = exc
                exc = cut
            self.fail(conn, sock, exc)
            return
        conn.tls = tls
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: TLS %s, %s, ALPN %s", conn.endpoint, tls.version, tls.cipher, tls.alpn)
        conn._opened(sock, info)

    def fail(self, conn: TlsConnection, sock: socket.socket, exc: BaseException) -> None:
        """Fail the opening with a `TLSError` whose reason a user can act on.

        OpenSSL's alert for our own refusal (a certificate we cannot verify)
        goes out first, best effort: the server then logs why, not a lost
        connection.
        """
        with conn._lock:
            self.move(TurnEvent.END)
            conn._handshake = None
        _log.debug("%s: TLS handshake failed: %r", conn.endpoint, exc)
        outq = conn._records.outq  # The alert, if OpenSSL produced one.
        try:
            while outq:
                sock.send(outq.popleft(), MSG_DONTWAIT)
        except OSError:
            pass  # Best effort: the peer may be gone already.
        reason = handshake_reason(exc)
        cause = exc
        if not isinstance(exc, ssl.SSLError):  # A reset, an EOF, an interrupt.
            # A TLSError's cause is always an ssl error (code that inspects it needs
            # one type); the OS error is behind it.
            cause = ssl.SSLError(getattr(exc, "errno", None) or 0, f"TLS handshake: {reason}")
            cause.__cause__ = exc
        conn._fail_open(TLSError(f"TLS handshake with {conn.endpoint} failed: {reason}"), cause)


def _connecting(conn: TlsConnection) -> bool:
    """Whether the opening goes on (another thread may end it at any moment)."""
    return conn.state is State.CONNECTING
