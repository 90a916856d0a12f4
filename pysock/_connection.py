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

Closing from another thread must wake a blocked reader or writer without
closing the descriptor under its feet (the number could be reused by an
unrelated file before the blocked call returns). So `close()` shuts the
socket down, which wakes every blocked call, and the descriptor itself is
released only when the loop has forgotten it *and* no call is inside it: the
``_reading``/``_writing`` flags and ``_release_pending`` form a Dekker-style
handshake (each side writes its own flag, then reads the other's), which is
sound because every bytecode is atomic under the GIL.

The state machine lives in `pysock._state`; `_transition` is the only place
that changes ``state``, under ``_lock``, and the futures are completed after
the lock is released so that their callbacks can call back into the socket.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import struct
import threading
import warnings
import weakref
from typing import Any, Final, Optional, TypeVar

from . import _loop, _peerend
from ._address import Endpoint
from ._dialer import Dialer, dial
from ._futures import Lazy, complete, created_future, finish
from ._info import SocketInfo, TLSInfo, socket_info
from ._opening import reset_dns_after_fork, tune
from ._options import Options
from ._platform import CAN_BLOCK
from ._rawio import Deadline, StreamIO, afresh
from ._state import (
    DESCRIPTOR_TRANSITIONS,
    FAST_FLAGS,
    IN_SELECTOR,
    PEER_ENDED,
    READ_TRANSITIONS,
    READER_CLOSED,
    REGISTRATION_TRANSITIONS,
    TERMINAL,
    WRITE_TRANSITIONS,
    Descriptor,
    DescriptorEvent,
    Event,
    Read,
    ReadEvent,
    Registration,
    RegistrationEvent,
    State,
    Write,
    WriteEvent,
    finishes,
    next_state,
    step,
    upgrade_refusal,
)
from .errors import (
    BrokenSocketError,
    SocketClosedError,
    StartTlsError,
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
_LINGER_ABORT: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST.


class Connection(StreamIO):
    """One TCP connection; see the module docstring. Internal: `pysock.Socket` wraps it."""

    # Slots: an idle connection must stay small (docs/performance.md, 10,000 idle sockets).
    __slots__ = (
        "__weakref__",
        "_blocking",
        "_closed_future",
        "_descriptor",
        "_dialer",
        "_lock",
        "_opened_future",
        "_parked",
        "_read_error",
        "_read_ok",
        "_read_side",
        "_reading",
        "_registration",
        "_release_pending",
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
        "tls",
        "writer_gone",
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
        self.writer_gone = False  # Set by the writer's finalizer: nothing can write any more.
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
        # The descriptor hand-off (module docstring): a call is inside the
        # descriptor; and, derived from `_descriptor` by `_hand`, the last call
        # out closes it (read on every call's way out, so one attribute).
        self._reading = False
        self._writing = False
        self._release_pending = False
        # The opening's state while it needs one (pysock._dialer); None once open.
        self._dialer: Optional[Dialer] = None
        self.tls: Optional[TLSInfo] = None
        # A read failure waiting for the reader to raise it (see pysock._rawio).
        # Written and read only under the reader's lock.
        self._parked: Optional[BaseException] = None
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

    def start(self) -> None:
        """Begin opening (`pysock._dialer.dial`), under the connect deadline."""
        dial(self)
        if self.options.connect_timeout is not None and self.state is State.CONNECTING:
            self.schedule_connect_deadline()

    def schedule_connect_deadline(self) -> None:
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

    def _connected(self, sock: socket.socket, peer: Any = None) -> None:
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

    def _connected_failed(self, sock: socket.socket, exc: OSError) -> None:
        """Setting the connected `sock` up failed: the dialer tries the next address, if any."""
        with self._lock:
            dialer = self._dialer
            if dialer is None and self.state is State.CONNECTING:
                dialer = self._dialer = Dialer(self)  # `sock` was connected at once.
        if dialer is None:
            sock.close()  # Closed meanwhile; never in a dialer's attempts.
            return
        dialer.connected_failed(sock, exc, _loop.get_loop().in_loop_thread())

    def _forget_attempts(self) -> None:
        """The winning attempt's socket became ``sock`` (a TLS handshake). Holds ``_lock``."""
        if self._dialer is not None:
            self._dialer.attempts = ()

    def _cancel_deadline(self) -> None:
        dialer = self._dialer
        if dialer is not None:
            dialer.cancel_timers()

    def _opened(self, sock: socket.socket, info: SocketInfo) -> None:
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
            future = self._opened_future
            if future is None:
                self._opened_future = (info, None)
        if dialer is not None:
            dialer.cancel_timers()
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "%s: open, %s -> %s", self.endpoint, info.local_address, info.remote_address
            )
        if isinstance(future, concurrent.futures.Future):  # CONNECTING had no outcome.
            finish(future, info, None)
        if self._write_side is Write.DONE:  # Else FINISHED cannot apply yet (`finishes`).
            self._send_eof()
            self._maybe_finish()

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

    def _fail_open(self, error: BaseException, cause: Optional[BaseException] = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        if self._transition(Event.OPEN_FAILED, error):
            with self._lock:
                released = self._hand(DescriptorEvent.RELEASE)
            if released:
                self._release()

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

    def _hand(self, event: DescriptorEvent) -> bool:
        """One step of the descriptor's machine (`pysock._state.Descriptor`). Holds ``_lock``.

        Returns False when `event` does not apply (released or handed off already).
        """
        new = DESCRIPTOR_TRANSITIONS.get((self._descriptor, event))
        if new is None:
            return False
        self._descriptor = new
        self._release_pending = new is Descriptor.LAST_OUT
        return True

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

    def on_peer_eof(self) -> None:
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

    def shutdown_write(self, reason: BaseException, wait: bool = False) -> None:
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

    def close_read(self) -> None:
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

    def _send_eof(self, wait: bool = False) -> None:
        """Tell the peer we are done writing (TLS adds close_notify first)."""
        self._shutdown_sock(socket.SHUT_WR)

    def check_half_close(self) -> None:
        """Raise if ``writable.close()`` cannot half-close this connection."""

    def _maybe_finish(self) -> None:
        """The FINISHED rule (`pysock._state.finishes`), checked after each half-close."""
        if not finishes(self._read_side, self._write_side) or not self._transition(Event.FINISHED):
            return
        if self._read_side not in READER_CLOSED:
            return
        with self._lock:
            released = self._hand(DescriptorEvent.RELEASE)
        if released:
            self._release()  # Nothing is left to read: give the descriptor back now.

    def _shutdown_sock(self, how: int) -> None:
        sock = self.sock
        if sock is None or self._descriptor is Descriptor.INHERITED:
            return  # Never shut down a connection inherited from the parent process.
        try:
            sock.shutdown(how)
        except OSError:
            pass  # ENOTCONN: the peer reset it first; the reader reports that.

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
        future = self._opened_future
        if future is None or isinstance(future, tuple):
            future = created_future(self, "_opened_future")
        return future

    @property
    def closed(self) -> concurrent.futures.Future[None]:
        future = self._closed_future
        if future is None or isinstance(future, tuple):
            future = created_future(self, "_closed_future")
        return future

    def _new_future(self, slot: str) -> concurrent.futures.Future[Any]:
        """A new future for `slot` (TLS's ``opened`` lets a waiting caller step the handshake)."""
        return concurrent.futures.Future()

    def upgrade_refusal(self) -> Optional[str]:
        """Why `start_tls()` may not take this connection over (the UPGRADE guard), or None."""
        refusal = upgrade_refusal(self.state, self._read_side, self._write_side)
        return None if refusal is None else f"start_tls(): the socket to {self.endpoint} {refusal}"

    def take_over(self) -> socket.socket:
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
                raise StartTlsError(
                    refusal or f"start_tls(): the socket to {self.endpoint} is gone"
                )
            self._set_hangup_watch(None)  # The new connection watches once it opens.
            self.sock = None
            # Nothing is left for close() or the finalizer to release.
            self._hand(DescriptorEvent.HAND_OFF)
        self._transition(Event.UPGRADE)
        return sock

    def close(self) -> None:
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

    def _release(self) -> None:
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

    def _release_in_loop(self) -> None:
        loop = _loop.get_loop()
        with self._lock:
            for sock in self._descriptors():
                loop.unwatch(sock)
            self._watched(RegistrationEvent.LEAVE_SELECTOR)
        self._release_now()

    def _release_now(self) -> None:
        with self._lock:
            self._hand(DescriptorEvent.LET_GO)
        # The flag above first, then the calls' flags (module docstring).
        if not (self._reading or self._writing):
            self._close_descriptors()

    def _close_descriptors(self) -> None:
        dialer = self._dialer
        if dialer is None:  # Opened, or opened at once: the one socket (`_descriptors`).
            sock = self.sock
            if sock is not None:
                sock.close()
            return
        for sock in self._descriptors():
            sock.close()
        self._dialer = None  # Its attempts' descriptors were the last of the opening.

    def _descriptors(self) -> list[socket.socket]:
        """The open socket and every connect attempt's."""
        sock = self.sock
        dialer = self._dialer
        if dialer is None or not dialer.attempts:
            return [] if sock is None else [sock]
        socks = [attempt.sock for attempt in dialer.attempts]
        if sock is not None:
            socks.append(sock)
        return socks

    def _after_call(self) -> None:
        # The other half of the hand-off: the last call out closes a released socket.
        if self._release_pending and not (self._reading or self._writing):
            self._close_descriptors()

    def inherited_in_child(self) -> None:
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
