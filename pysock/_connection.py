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
import errno
import logging
import os
import socket
import struct
import threading
import time
import warnings
import weakref
from typing import Any, Final, Optional, TypeVar

from . import _loop
from ._address import Endpoint
from ._info import SocketInfo, TLSInfo
from ._opening import Attempt, Opening, Sockaddr, reset_dns_after_fork
from ._options import Options
from ._peekwatch import UNREAD_LIMIT
from ._platform import CAN_BLOCK, TELLS_RESET_LATE, hung_up, peek_end, reset_error
from ._rawio import Deadline, StreamIO, afresh
from ._state import (
    PEER_ENDED,
    READ_TRANSITIONS,
    READER_CLOSED,
    TERMINAL,
    WRITE_TRANSITIONS,
    Event,
    Read,
    ReadEvent,
    State,
    Write,
    WriteEvent,
    finishes,
    may_read,
    may_write,
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

_live: weakref.WeakSet[Connection] = weakref.WeakSet()
# At DEBUG: connects, TLS sessions and how each connection ended. The only
# WARNING is `Socket.stream()`'s mid-response upstream failure, which a WSGI
# server would otherwise drop. Never data, keys or certificates.
_log = logging.getLogger("pysock")
# Seconds before the selector thread looks again at a hang-up that a reader was
# inside recv() for (it usually handles it first; this covers one just leaving).
_HANGUP_RECHECK: Final = 0.05
_LINGER_ABORT: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST.


class Connection(Opening, StreamIO):
    """One TCP connection; see the module docstring. Internal: `pysock.Socket` wraps it."""

    # Slots: an idle connection must stay small (docs/performance.md, 10,000 idle sockets).
    __slots__ = (
        "__weakref__",
        "_abort",
        "_addresses",
        "_attempts",
        "_blocking",
        "_closed_future",
        "_closed_outcome",
        "_closing",
        "_connect_deadline",
        "_deadline_timer",
        "_errors",
        "_generation",
        "_hangup_watched",
        "_in_selector",
        "_inherited",
        "_lock",
        "_opened_future",
        "_opened_outcome",
        "_parked",
        "_read_error",
        "_read_ok",
        "_read_side",
        "_reading",
        "_release_pending",
        "_reset_error",
        "_stagger_timer",
        "_via",
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
        # The futures are created on first use (each costs about 1.4 KiB); the
        # outcome is kept until then.
        self._opened_future: Optional[concurrent.futures.Future[SocketInfo]] = None
        self._opened_outcome: Optional[tuple[Optional[SocketInfo], Optional[BaseException]]] = None
        self._closed_future: Optional[concurrent.futures.Future[None]] = None
        self._closed_outcome: Optional[tuple[None, Optional[BaseException]]] = None
        self.reader_ref: Optional[weakref.ref[Any]] = None
        # Raw reads made so far: the idle watch without epoll tells a socket that
        # a thread reads from one whose bytes wait unread (pysock._peekwatch).
        self.raw_reads = 0
        self.writer_gone = False  # Set by the writer's finalizer: nothing can write any more.
        self.sock: Optional[socket.socket] = None
        self.info: Optional[SocketInfo] = None
        self._lock = threading.Lock()
        self._generation = _loop.fork_generation()
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
        self._closing = False
        self._abort = False
        self._inherited = False
        # The descriptor hand-off (module docstring).
        self._reading = False
        self._writing = False
        self._release_pending = False
        self._in_selector = False
        self._hangup_watched = False
        self._attempts: tuple[Attempt, ...] = ()
        self._stagger_timer: Optional[_loop.Timer] = None
        self._via: Optional[str] = None  # The destination a proxy is asked for.
        self._addresses: list[tuple[int, Sockaddr]] = []
        self._errors: list[OSError] = []
        self._deadline_timer: Optional[_loop.Timer] = None
        self._connect_deadline: Optional[float] = None
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
        _live.add(self)

    def _opened(self, sock: socket.socket, info: SocketInfo) -> None:
        """Enter OPEN (any thread). TLS calls this after its handshake."""
        with self._lock:
            if self.state is not State.CONNECTING:
                return
            self._attempts = ()
            self.sock = sock
            self.info = info
            # A stream closed while connecting stays closed (its close is applied now).
            self._enter(State.OPEN)
            self._set_hangup_watch(_loop.HANGUP_WITH_EOF, defer=True)
        self._cancel_deadline()
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "%s: open, %s -> %s", self.endpoint, info.local_address, info.remote_address
            )
        self._complete("_opened_future", "_opened_outcome", info, None)
        if self._write_side is Write.DONE:
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
            self._release()

    # -- the loop's view of an open socket ------------------------------------------

    def _set_hangup_watch(self, mask: Optional[int], defer: bool = False) -> None:
        """Add, change (`mask`) or remove (None) the idle hang-up watch. Holds ``_lock``.

        `defer`: a new connection's watch reaches the kernel after a grace period
        (`pysock._loop.HANGUP_GRACE`), so short-lived connections never pay for it.
        """
        sock = self.sock
        if sock is None or self._generation != _loop.fork_generation():
            return  # Never touch the parent's epoll set from a forked child.
        loop = _loop.get_loop()
        if mask is None:
            if self._hangup_watched:
                loop.unwatch_hangup_threadsafe(sock)
                self._hangup_watched = False
        elif self.state is State.OPEN:
            self._hangup_watched = loop.watch_hangup_threadsafe(sock, self, mask, defer)
            if self._hangup_watched and loop.watches_in_selector:
                self._in_selector = True  # The descriptor now closes on the loop thread.

    def on_ready_in_loop(self, events: int) -> None:
        """Selector callback; plain TCP watches only its attempts (`Attempt`), not itself."""

    def on_hangup_in_loop(self, error: Optional[OSError] = None, settled: bool = False) -> None:
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

    def _settle_hangup_in_loop(self) -> None:
        self._rewatch_in_loop()  # Unless the writer reported the reset, or a close came.
        self.on_hangup_in_loop(settled=True)

    def hangup_confirmed(self) -> Optional[socket.socket]:
        """The socket, if its hang-up event is real; None for a late one. Holds ``_lock``.

        An event can come late, for a descriptor that was closed and reused
        meanwhile (see `pysock._loop`): the hang-up is confirmed on our own
        socket, with a zero-timeout poll, before anything acts on it.
        """
        sock = self.sock
        if not self._hangup_watched or sock is None:
            return None
        ended, error = hung_up(sock)
        if error is not None:  # Consumed by the check: kept for whoever judges the end.
            self._reset_error = error
        return sock if ended else None

    def peek_in_loop(self, sock: socket.socket) -> tuple[str, Optional[OSError]]:
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

    def take_unread_in_loop(self, sock: socket.socket) -> None:
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

    def _rewatch_later(self) -> None:
        when = time.monotonic() + _HANGUP_RECHECK
        _loop.get_loop().call_at_threadsafe(when, self._rewatch_in_loop)

    def _rewatch_in_loop(self) -> None:
        with self._lock:
            if self.state is State.OPEN and not self._hangup_watched:
                ended = self._read_side in PEER_ENDED
                mask = _loop.HANGUP_ERRORS_ONLY if ended else _loop.HANGUP_WITH_EOF
                self._set_hangup_watch(mask)

    def reset_seen(self) -> Optional[OSError]:
        """The reset behind a read's EOF, if the selector thread or the TCP state saw one.

        Called by a reader whose ``recv()`` returned 0: the selector thread may
        have taken the reset's error from ``SO_ERROR`` first (it records it
        under ``_lock``); without our own FIN sent, the TCP state tells too.
        """
        with self._lock:
            if self._reset_error is not None:
                return self._reset_error
        return None if self._write_side is Write.DONE else reset_error(self.sock)

    def on_hangup_eof(self) -> None:
        """The loop saw the peer's FIN (TLS first decrypts the last records)."""
        self.on_peer_eof()
        if self.state in TERMINAL:
            with self._lock:
                self._set_hangup_watch(None)

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
        if self._read_side in READER_CLOSED and not self._closing:
            self._closing = True
            self._release()  # Nothing is left to read: give the descriptor back now.

    def _shutdown_sock(self, how: int) -> None:
        sock = self.sock
        if sock is None or self._generation != _loop.fork_generation():
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
                self._complete("_opened_future", "_opened_outcome", None, exc)
        if new is State.BROKEN:
            broken = error or BrokenSocketError("the connection broke")
            self._complete("_closed_future", "_closed_outcome", None, broken)
        elif new in TERMINAL:
            self._complete("_closed_future", "_closed_outcome", None, None)
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
        self._read_ok = may_read(state, self._read_side) and not self._inherited
        self._write_ok = may_write(state, self._write_side) and not self._inherited

    # -- the futures, created on first use ------------------------------------------------

    @property
    def opened(self) -> concurrent.futures.Future[SocketInfo]:
        future = self._opened_future
        if future is None:
            future = self._created_future("_opened_future", "_opened_outcome")
        return future

    @property
    def closed(self) -> concurrent.futures.Future[None]:
        future = self._closed_future
        if future is None:
            future = self._created_future("_closed_future", "_closed_outcome")
        return future

    def _created_future(self, future_slot: str, outcome_slot: str) -> Any:
        """Create the future in `future_slot` on first use, completed with the outcome so far."""
        with self._lock:
            future = getattr(self, future_slot)
            if future is None:
                future = self._new_future(future_slot)
                setattr(self, future_slot, future)
                outcome = getattr(self, outcome_slot)
                if outcome is not None:
                    _finish(future, *outcome)
        return future

    def _new_future(self, slot: str) -> concurrent.futures.Future[Any]:
        """A new future for `slot` (TLS's ``opened`` lets a waiting caller step the handshake)."""
        return concurrent.futures.Future()

    def _complete(
        self, future_slot: str, outcome_slot: str, result: Any, error: Optional[BaseException]
    ) -> None:
        """Record the first outcome; complete the future if it exists (outside the lock)."""
        with self._lock:
            if getattr(self, outcome_slot) is not None:
                return
            setattr(self, outcome_slot, (result, error))
            future = getattr(self, future_slot)
        if future is not None:
            _finish(future, result, error)

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
        self._transition(Event.UPGRADE)
        self._closing = True  # Nothing is left for close() or the finalizer to release.
        return sock

    def close(self) -> None:
        """Close both directions now; wake blocked callers; idempotent."""
        if self._inherited:
            # The child's view only: ``closed`` is done, as after any close(); the
            # descriptor (the child's copy, closed at the fork) and the peer are
            # the parent's and untouched.
            self._transition(Event.CLOSE)
            return
        self._transition(Event.CLOSE)
        with self._lock:
            # Whatever ended the connection before, from now on your code closed it.
            self._read_error = self._write_error = SocketClosedError("the socket is closed")
            if self._closing:
                return
            self._closing = True
            # A reader woken by our shutdown(SHUT_RD) drains what the peer sent
            # meanwhile, so the descriptor closes with nothing unread and the kernel
            # sends a FIN, not the RST a close with unread data gets: a peer blocked
            # sending to our zero window would then wait for FIN_WAIT2's timeout (60
            # s). Abort as a plain close with unread data would.
            self._abort = self._reading and self._read_side not in PEER_ENDED
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
        if self._generation != _loop.fork_generation():
            return
        with self._lock:
            # First: our own shutdown below must not look like the peer's FIN.
            self._set_hangup_watch(None)
            in_selector = self._in_selector
        if self._reading or self._writing:
            self._shutdown_sock(socket.SHUT_RDWR)  # Wake them; the last one out closes.
        if in_selector:
            loop = _loop.get_loop()
            if not loop.stopped:
                loop.call_soon_threadsafe(self._release_in_loop)
                return
            with self._lock:  # A finalizer at exit: the loop stopped, nothing watches.
                self._in_selector = False
        self._release_now()

    def _release_in_loop(self) -> None:
        loop = _loop.get_loop()
        with self._lock:
            for sock in self._descriptors():
                loop.unwatch(sock)
            self._in_selector = False
        self._release_now()

    def _release_now(self) -> None:
        self._release_pending = True
        if not (self._reading or self._writing):
            self._close_descriptors()

    def _close_descriptors(self) -> None:
        sock = self.sock
        if sock is not None and self._abort:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
            except OSError:
                pass  # Already reset: nothing to abort.
        for sock in self._descriptors():
            sock.close()

    def _descriptors(self) -> list[socket.socket]:
        """The open socket and every connect attempt's."""
        sock = self.sock
        if not self._attempts:
            return [] if sock is None else [sock]
        socks = [attempt.sock for attempt in self._attempts]
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
        self._inherited = True
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

    def __del__(self) -> None:
        if _loop is None or not hasattr(self, "_closing"):  # Interpreter exit; half-built.
            return
        if self._inherited or self._closing:
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


def _finish(
    future: concurrent.futures.Future[Any], result: Any, error: Optional[BaseException]
) -> None:
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # Cancelled by its user: there is nobody left to tell.


def _forget_inherited_connections() -> None:
    reset_dns_after_fork()
    for connection in list(_live):
        connection.inherited_in_child()


_loop.register_after_fork(_forget_inherited_connections)
