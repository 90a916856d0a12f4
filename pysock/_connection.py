"""The connection engine: one TCP connection, its state, its futures and its raw I/O.

Theory of operation
===================

A `Connection` owns one stdlib socket. Three kinds of threads touch it:

* **Callers** (any number) read and write. A read calls ``recv_into`` on the
  socket directly; a write calls ``sendall``. With ``timeout=None`` the socket
  is in blocking mode and each call is exactly the stdlib call, one syscall
  when data or buffer space is there. With a timeout the socket is
  non-blocking: the call is tried first, and only ``EAGAIN`` leads to a
  ``poll()`` in the caller's thread, bounded by the call's deadline.
* **The selector thread** (`pysock._loop`) completes connects that did not
  complete at once, fires the connect deadline, and watches idle sockets for
  the peer's FIN or RST so that ``closed`` completes with nobody reading.
* **A DNS worker** resolves names, so a slow lookup never stalls the loop.

Closing from another thread wakes blocked calls without closing the
descriptor under their feet: `pysock._descriptor` says how. How the
selector thread judges an idle socket's end is `pysock._peerend`; the
half-closes are `pysock._halfclose`.

The state machine lives in `pysock._state`; `_transition` is the only place
that changes ``state``, under ``_lock``, and the futures are completed after
the lock is released so that their callbacks can call back into the socket.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import warnings
import weakref
from typing import Any, Optional, TypeVar

from . import _descriptor, _halfclose, _loop, _open, _peerend
from ._address import Endpoint
from ._dialer import Dialer
from ._futures import Lazy, complete, created_future
from ._info import SocketInfo, TLSInfo
from ._opening import reset_dns_after_fork
from ._options import Options
from ._platform import CAN_BLOCK
from ._rawio import Deadline, StreamIO, afresh
from ._state import (
    FAST_FLAGS,
    IN_SELECTOR,
    REGISTRATION_TRANSITIONS,
    TERMINAL,
    Descriptor,
    Event,
    Read,
    Registration,
    RegistrationEvent,
    State,
    Write,
    next_state,
    upgrade_refusal,
)
from .errors import (
    BrokenSocketError,
    SocketClosedError,
)

__all__ = ["Connection", "Deadline"]

_E = TypeVar("_E", bound=BaseException)

# Every connection, for the fork handler: weak references that remove themselves
# (what a WeakSet does, without its two Python-level calls per connection).
_live: set[weakref.ref[Connection]] = set()
# At DEBUG: connects, TLS sessions and how each connection ended. The only
# WARNING is `Socket.stream()`'s mid-response upstream failure, which a WSGI
# server would otherwise drop. Never data, keys or certificates.
_log = logging.getLogger("pysock")


class Connection(StreamIO):
    """One TCP connection; see the module docstring. Internal: `pysock.Socket` wraps it."""

    # Slots: an idle connection must stay small (docs/performance.md, 10,000 idle sockets).
    # Only a TLS connection has a handshake's outcome (`TlsConnection` gives it a slot).
    tls: Optional[TLSInfo] = None

    __slots__ = (
        "__weakref__",
        "_blocking",
        "_closed_future",
        "_descriptor",
        "_dialer",
        "_lock",
        "_opened_future",
        "_read_error",
        "_read_ok",
        "_read_side",
        "_reading",
        "_registration",
        "_reset_error",
        "_write_error",
        "_write_ok",
        "_write_side",
        "_writing",
        "endpoint",
        "info",
        "options",
        "raw_reads",
        "reader_ref",
        "sock",
        "state",
        "timeout",
    )

    def __init__(self, endpoint: Endpoint, options: Options) -> None:
        self.endpoint = endpoint
        self.options = options
        self.state = State.CONNECTING
        # The futures are created on first use (each costs about 1.4 KiB): until
        # then the slot keeps the outcome, if there is one (`_complete`).
        self._opened_future: Lazy = None
        self._closed_future: Lazy = None
        self.reader_ref: Optional[weakref.ref[Any]] = None
        # Raw reads made so far: the idle watch without epoll tells a socket that
        # a thread reads from one whose bytes wait unread (pysock._peekwatch).
        self.raw_reads = 0
        self.sock: Optional[socket.socket] = None
        self.info: Optional[SocketInfo] = None
        self._lock = threading.Lock()
        # Fast-path flags: True while the direction may be used without further checks.
        self._read_ok = False
        self._write_ok = False
        # Why a direction is unusable, raised by the slow path.
        self._read_error: Optional[BaseException] = None
        self._write_error: Optional[BaseException] = None
        self._reset_error: Optional[OSError] = None
        # The directions' own machines (pysock._state); `_enter` derives the two
        # fast-path flags above from them and the state.
        self._read_side = Read.OPEN
        self._write_side = Write.OPEN
        # Who holds the descriptor, and where the loop watches it (pysock._state).
        self._descriptor = Descriptor.HELD
        self._registration = Registration.UNWATCHED
        # A call is inside the descriptor: one half of the close handshake
        # (pysock._descriptor); the other is `_descriptor` reaching LAST_OUT.
        self._reading = False
        self._writing = False
        # The opening's state while it needs one (pysock._dialer); None once open.
        self._dialer: Optional[Dialer] = None
        # The per-call timeout of reads and writes: `Socket.timeout` sets it, and
        # each call reads it once when it starts.
        self.timeout = options.timeout
        # The descriptor's mode: blocking when opened without a timeout (each call
        # is then exactly the stdlib call). A timeout set later is honoured by
        # waiting before each read; the first write under a deadline switches
        # the socket to non-blocking (`leave_blocking_mode`), for good.
        # (Only where one call can still be made non-blocking: see pysock._platform.)
        self._blocking = options.timeout is None and CAN_BLOCK
        _live.add(weakref.ref(self, _live.discard))

    # -- opening (the state of a longer opening is its `Dialer`'s) ----------------------

    # Opening, until OPEN (pysock._open).
    start = _open.start
    schedule_connect_deadline = _open.schedule_connect_deadline
    _connected = _open.connected
    _connected_failed = _open.connected_failed
    _forget_attempts = _open.forget_attempts
    _cancel_deadline = _open.cancel_deadline
    _opened = _open.opened
    _fail_open = _open.fail_open
    handshake_deadline = _open.handshake_deadline
    on_connect_deadline = _open.on_connect_deadline

    def shown_state(self) -> str:
        """The state as a user reads it in a repr.

        ``connecting``, ``open``, ``closed`` (by your code, a clean end, or
        taken over by `start_tls()`), ``broken`` (the peer or the network broke
        it once open) or ``failed`` (it never opened): a failed opening must
        not read like a clean end.
        """
        state = self.state
        if state is State.BROKEN:
            return "broken" if self.info is not None else "failed"
        if state is State.CONNECTING or state is State.OPEN:
            return str(state.value)
        return "closed"

    # -- the loop's view of an open socket ------------------------------------------

    def _watched(self, event: RegistrationEvent) -> None:
        """One step of the registration machine (`pysock._state.Registration`). Holds ``_lock``."""
        self._registration = REGISTRATION_TRANSITIONS.get(
            (self._registration, event), self._registration
        )

    @property
    def in_selector(self) -> bool:
        """Whether the loop's selector holds the descriptor: it then closes on the loop thread."""
        return self._registration in IN_SELECTOR

    # The descriptor's life, from the close handshake to a fork (pysock._descriptor).
    _hand = _descriptor.hand
    _shutdown_sock = _descriptor.shutdown_sock
    take_over = _descriptor.take_over
    close = _descriptor.close
    _release = _descriptor.release
    _release_in_loop = _descriptor.release_in_loop
    _release_now = _descriptor.release_now
    _close_descriptors = _descriptor.close_descriptors
    _descriptors = _descriptor.descriptors
    _after_call = _descriptor.after_call
    inherited_in_child = _descriptor.inherited_in_child

    @property
    def inherited(self) -> bool:
        """A forked child's copy of a parent's connection (see `inherited_in_child`)."""
        return self._descriptor is Descriptor.INHERITED

    def on_ready_in_loop(self, events: int) -> None:
        """Selector callback; plain TCP watches only its attempts (`Attempt`), not itself."""

    # The idle hang-up watch: how the selector thread judges the peer's end of an
    # idle connection, FIN or reset (pysock._peerend).
    _set_hangup_watch = _peerend.set_hangup_watch
    on_hangup_in_loop = _peerend.on_hangup_in_loop
    _settle_hangup_in_loop = _peerend.settle_hangup_in_loop
    hangup_confirmed = _peerend.hangup_confirmed
    peek_in_loop = _peerend.peek_in_loop
    take_unread_in_loop = _peerend.take_unread_in_loop
    _rewatch_later = _peerend.rewatch_later
    _rewatch_in_loop = _peerend.rewatch_in_loop
    reset_seen = _peerend.reset_seen
    on_hangup_eof = _peerend.on_hangup_eof

    # -- direction bookkeeping -----------------------------------------------------

    # The half-closes, and FINISHED once both directions are over (pysock._halfclose).
    on_peer_eof = _halfclose.on_peer_eof
    shutdown_write = _halfclose.shutdown_write
    close_read = _halfclose.close_read
    _maybe_finish = _halfclose.maybe_finish

    def _send_eof(self, wait: bool = False) -> None:
        """Tell the peer we are done writing (TLS adds close_notify first)."""
        self._shutdown_sock(socket.SHUT_WR)

    def check_half_close(self) -> None:
        """Raise if ``writable.close()`` cannot half-close this connection."""

    # -- state ---------------------------------------------------------------------

    def _transition(self, event: Event, error: Optional[BaseException] = None) -> bool:
        """Apply `event` (see `pysock._state`); complete the futures. Returns False if ignored."""
        with self._lock:
            new = next_state(self.state, event)
            if new is None:
                return False
            old = self.state
            # The errors first: a call that finds its flag cleared raises them.
            if new is State.BROKEN:
                self._read_error = self._read_error or error
                self._write_error = error
            elif new is State.UPGRADED:
                self._read_error = self._write_error = SocketClosedError(
                    "start_tls() took this connection over; use the socket it returned"
                )
            elif event is Event.CLOSE:
                self._read_error = self._write_error = SocketClosedError("the socket is closed")
            self._enter(new)
        if old is State.CONNECTING:
            self._cancel_deadline()
            if new is not State.OPEN:
                exc = error or SocketClosedError(
                    f"the socket was closed while connecting to {self.endpoint}"
                )
                complete(self, "_opened_future", None, exc)
        if new is State.BROKEN:
            broken = error or BrokenSocketError("the connection broke")
            complete(self, "_closed_future", None, broken)
        elif new in TERMINAL:
            complete(self, "_closed_future", None, None)
        if new is not State.OPEN and _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "%s: %s -> %s (%s)%s",
                self.endpoint,
                old.value,
                new.value,
                event.value,
                f": {error}" if error is not None else "",
            )
        return True

    def _enter(self, state: State) -> None:
        """Set `state` and derive what reads and writes may do. Holds ``_lock``.

        The one place the fast-path flags are written once open: a read or a
        write checks only its flag, and the slow path raises the matching
        ``_read_error``/``_write_error``, set no later under the same lock.
        """
        self.state = state
        # may_read() and may_write(), precomputed: one lookup instead of two calls.
        read_ok, write_ok = FAST_FLAGS[state, self._read_side, self._write_side]
        inherited = self._descriptor is Descriptor.INHERITED
        self._read_ok = read_ok and not inherited
        self._write_ok = write_ok and not inherited

    # -- the futures, created on first use ------------------------------------------------

    @property
    def opened(self) -> concurrent.futures.Future[SocketInfo]:
        future: Any = self._opened_future  # No call on the way: an attribute test only.
        if future is None or future.__class__ is tuple:
            future = created_future(self, "_opened_future")
        return future  # type: ignore[no-any-return]  # The slot's union, tested above.

    @property
    def closed(self) -> concurrent.futures.Future[None]:
        future: Any = self._closed_future  # No call on the way: an attribute test only.
        if future is None or future.__class__ is tuple:
            future = created_future(self, "_closed_future")
        return future  # type: ignore[no-any-return]  # The slot's union, tested above.

    def _new_future(self, slot: str) -> concurrent.futures.Future[Any]:
        """A new future for `slot` (TLS's ``opened`` lets a waiting caller step the handshake)."""
        return concurrent.futures.Future()

    def upgrade_refusal(self) -> Optional[str]:
        """Why `start_tls()` may not take this connection over (the UPGRADE guard), or None."""
        refusal = upgrade_refusal(self.state, self._read_side, self._write_side)
        return None if refusal is None else f"start_tls(): the socket to {self.endpoint} {refusal}"

    def _broken_by(self, exc: BaseException, message: Optional[str] = None) -> BrokenSocketError:
        """The peer or network broke the connection: fail it and return the error to raise."""
        error = BrokenSocketError(
            message or f"connection to {self.endpoint} broken: {_describe(exc)}"
        )
        return self._fail_with(error, exc, BrokenSocketError)

    def _fail_with(self, error: _E, exc: BaseException, kind: type[_E]) -> _E:
        """Fail the open connection with `error` (caused by `exc`); return the error to raise.

        If the connection had failed already, that first error of `kind` is the one raised.
        """
        error.__cause__ = exc
        if self._transition(Event.FAIL, error):
            self._shutdown_sock(socket.SHUT_RDWR)
        elif isinstance(self._read_error, kind):
            return afresh(self._read_error)
        return error

    def __del__(self) -> None:
        if _loop is None or not hasattr(self, "_descriptor"):  # Interpreter exit; half-built.
            return
        if self._descriptor is not Descriptor.HELD:  # Released, handed off or inherited.
            return
        if self.state not in TERMINAL:
            message = f"unclosed pysock socket to {self.endpoint}"
            warnings.warn(message, ResourceWarning, stacklevel=2, source=self)
        # A connection that already ended (peer EOF, reset) only needs its descriptor back.
        self.close()


# -- helpers ------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _forget_inherited_connections() -> None:
    reset_dns_after_fork()
    for ref in list(_live):
        connection = ref()
        if connection is None:
            continue
        connection.inherited_in_child()


_loop.register_after_fork(_forget_inherited_connections)
