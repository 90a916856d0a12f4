"""Raw I/O on the socket for the streams: reads, writes and their waits.

With ``timeout=None`` the socket is in blocking mode and each call is exactly
the stdlib call: one syscall when data or buffer space is there. With a
timeout the socket is non-blocking: the call is tried first, and only
``EAGAIN`` leads to a ``poll()`` in the caller's thread, bounded by the call's
deadline.

``Socket.timeout`` may change between calls, like ``socket.settimeout()``. A
socket opened without a timeout stays in blocking mode until a write with a
deadline switches it (`leave_blocking_mode`); only a writer may switch it,
under its lock, because a ``sendall()`` in blocking mode that met ``EAGAIN``
halfway would not say how much it sent. Until then a read with a deadline
polls first and then reads, which cannot block; a read that finds the mode
switched under it (``EAGAIN`` from a "blocking" call) goes on waiting with
``poll()``.

A read that fails does not raise through `io.BufferedReader`'s C code, whose
``readline()`` and ``readinto()`` drop what the call had gathered when the
raw read raises. `recv_into` *parks* the error instead (the reader's ``_parked``) and
returns 0, so the C call returns every byte it gathered; the reader then
raises the parked error with those bytes in its ``partial``. A timeout and
Ctrl-C (``KeyboardInterrupt`` raised inside the ``recv()``) are parked too:
the socket stays usable, so the reader puts the gathered bytes back for the
next call. That is what lets ``readline()`` stay one C call with a timeout.

``_reading``/``_writing`` tell `Connection.close()` that a call is inside the
descriptor (see the handshake in `pysock._connection`).
"""

from __future__ import annotations

import concurrent.futures
import copy
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any, Final, Optional, TypeVar

from ._platform import MSG_DONTWAIT, deadline_wait
from ._state import PEER_ENDED, Descriptor, Read, State
from .errors import BrokenSocketError, PysockError, SocketClosedError, SocketTimeout

if TYPE_CHECKING:
    from ._address import Endpoint
    from ._info import SocketInfo, TLSInfo
    from ._options import Options

__all__ = ["Deadline", "StreamIO", "afresh"]

Deadline = Optional[float]
_E = TypeVar("_E", bound=BaseException)

# Compared on every call's way out (the close handshake, pysock._descriptor).
_LAST_OUT: Final = Descriptor.LAST_OUT


class StreamIO:
    """The I/O half of `Connection` (a mixin: every method runs on a Connection)."""

    if not TYPE_CHECKING:  # Connection declares every slot; mypy checks them there.
        __slots__ = ()

    if TYPE_CHECKING:  # Provided by Connection.
        endpoint: Endpoint
        options: Options
        state: State
        sock: Optional[socket.socket]
        tls: Optional[TLSInfo]
        timeout: Optional[float]
        _blocking: bool

        @property
        def inherited(self) -> bool: ...

        raw_reads: int
        reader_ref: Optional[weakref.ref[Any]]
        _read_ok: bool
        _write_ok: bool
        _read_error: Optional[BaseException]
        _write_error: Optional[BaseException]
        _read_side: Read
        _reading: bool
        _writing: bool
        _descriptor: Descriptor

        @property
        def opened(self) -> concurrent.futures.Future[SocketInfo]: ...
        def on_peer_eof(self) -> None: ...
        def reset_seen(self) -> Optional[OSError]: ...
        def _after_call(self) -> None: ...
        def _broken_by(
            self, exc: BaseException, message: Optional[str] = None
        ) -> BrokenSocketError: ...

    def recv_into(self, buffer: Any, deadline: Deadline = None) -> int:
        """Read once into `buffer`; 0 at EOF. The only place reads touch the socket.

        A failure other than a timeout is parked, with 0 returned (module docstring).
        """
        self._reading = True
        try:
            if not self._read_ok:
                nbytes = self._read_after_break(buffer)
                if nbytes:
                    return nbytes
                self._check_readable(deadline)
            sock = self.sock
            assert sock is not None
            if self._blocking and deadline is None:
                try:
                    nbytes = sock.recv_into(buffer)
                except BlockingIOError:  # A writer switched the mode (module docstring).
                    nbytes = self._recv_into_nonblocking(sock, buffer, deadline)
            else:
                nbytes = self._recv_into_nonblocking(sock, buffer, deadline)
            if nbytes == 0:
                return self._on_recv_eof(buffer)
            return nbytes
        except PysockError as exc:  # A timeout too: the reader keeps what it gathered.
            return self.park(exc)
        except OSError as exc:
            return self.park(self._read_failure(exc), exc)
        except KeyboardInterrupt as exc:  # Ctrl-C inside recv(): nothing was received.
            return self.park(exc)
        finally:
            # Counted once the read is over: a read that waits when the idle watch
            # looks still counts as the one that takes the bytes it then finds.
            self.raw_reads += 1
            self._reading = False
            if self._descriptor is _LAST_OUT:
                self._after_call()

    def _recv_into_nonblocking(self, sock: socket.socket, buffer: Any, deadline: Deadline) -> int:
        """One ``recv_into`` bounded by `deadline`: try it, and wait for data on ``EAGAIN``.

        On a socket still in blocking mode the wait comes first: there the call
        itself would block past the deadline.
        """
        wait_first = self._blocking
        while True:
            if wait_first:
                self._wait_readable(sock, deadline)
            try:
                return sock.recv_into(buffer)
            except BlockingIOError:
                pass
            if not wait_first:
                self._wait_readable(sock, deadline)

    def _wait_readable(self, sock: socket.socket, deadline: Deadline) -> None:
        _wait(sock, False, deadline, "read", self.timeout)

    def _on_recv_eof(self, buffer: Any) -> int:
        if len(buffer) == 0:
            return 0
        if not self._read_ok:  # Woken by our own shutdown: close() or readable.close().
            raise afresh(self._read_error or SocketClosedError("the socket is closed"))
        if self._read_side not in PEER_ENDED:
            reset = self.reset_seen()
            if reset is not None:
                raise self._broken_by(reset)
            self.on_peer_eof()
        return 0

    def _read_after_break(self, buffer: Any) -> int:
        """What the kernel still holds for us after the connection broke, or 0.

        The bytes the peer sent before its reset (or before a write timeout
        broke the connection) are still queued in the kernel; they are the
        peer's data and are read before the error is raised. After the break
        the socket is shut down, so this never waits: it ends in 0 or an error.
        TLS keeps its own (`TlsConnection` decrypts them in the loop).
        """
        sock = self.sock
        if (
            self.state is not State.BROKEN
            or sock is None
            or self.tls is not None
            or not isinstance(self._read_error, BrokenSocketError)
            or len(buffer) == 0
        ):
            return 0
        try:
            return sock.recv_into(buffer, len(buffer), MSG_DONTWAIT)
        except OSError:
            return 0  # Drained (EAGAIN), or the reset itself: the stored error follows.

    def park(self, failure: BaseException, exc: Optional[BaseException] = None) -> int:
        """Leave `failure` for the reader to raise after the C call; see the module docstring."""
        if failure.__cause__ is None and exc is not None and exc is not failure:
            failure.__cause__ = exc
        reader = self.reader_ref() if self.reader_ref is not None else None
        if reader is None:  # No reader, no buffer: nothing to hand back first.
            raise failure
        reader._parked = failure
        return 0

    def _read_failure(self, exc: OSError) -> BaseException:
        if not self._read_ok and self._read_error is not None:
            return afresh(self._read_error)
        return self._broken_by(exc)

    def _check_readable(self, deadline: Deadline) -> None:
        if self.state is State.CONNECTING and not self.inherited:
            self.wait_opened(deadline, "read")
            if self._read_ok:
                return
        raise afresh(self._read_error or SocketClosedError("the socket is closed"))

    def wait_opened(self, deadline: Deadline, what: str) -> None:
        """Block until the connection opens; raise the opening error if it fails."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        future = self.opened
        try:
            error = future.exception(timeout)
        except concurrent.futures.TimeoutError:
            # Since 3.11 this is the builtin TimeoutError, which the opening's own
            # SocketTimeout (the connect deadline) also is: that one is raised as is.
            if future.done():
                raise
            message = f"{what} timed out after {self.timeout}s waiting for the open"
            raise SocketTimeout(message) from None
        except concurrent.futures.CancelledError:
            raise SocketClosedError("the socket is closed") from None
        if error is not None:
            raise afresh(error)  # The future keeps the original, and its traceback.

    def send_all(self, data: Any, deadline: Deadline = None) -> None:
        """Hand all of `data` to the kernel. On timeout or interrupt the socket is broken."""
        self._writing = True
        try:
            if not self._write_ok:
                self._check_writable(deadline)
            if deadline is not None and self._blocking:
                self.leave_blocking_mode()
            try:
                if self._blocking and self.tls is None and self.sock is not None:
                    self.sock.sendall(data)  # Plain TCP, no timeout: the stdlib call itself.
                else:
                    self._transmit(data, deadline)
            except BaseException as exc:
                failure = self._write_failure(exc)
                if failure is exc:
                    raise
                raise failure from cause_of(failure, exc)
        finally:
            self._writing = False
            if self._descriptor is _LAST_OUT:
                self._after_call()

    def _transmit(self, data: Any, deadline: Deadline) -> None:
        sock = self.sock
        assert sock is not None
        if self._blocking:
            sock.sendall(data)
        else:
            self._send_all_nonblocking(sock, data, deadline)

    def _write_failure(self, exc: BaseException) -> BaseException:
        """Map an error from the middle of a write, where an unknown amount was sent."""
        if isinstance(exc, SocketTimeout):
            self._broken_by(exc, f"write to {self.endpoint} timed out; an unknown amount was sent")
            return exc
        if isinstance(exc, OSError):
            if not self._write_ok and self._write_error is not None:
                # Closed by your code while the write was blocked.
                return afresh(self._write_error)
            return self._broken_by(exc)
        # KeyboardInterrupt (or any other interruption) between two sends.
        self._broken_by(
            exc, f"write to {self.endpoint} was interrupted; an unknown amount was sent"
        )
        return exc

    def _send_all_nonblocking(self, sock: socket.socket, data: Any, deadline: Deadline) -> None:
        with memoryview(data) as view, view.cast("B") as octets:
            total = len(octets)
            sent = 0
            while sent < total:
                try:
                    sent += sock.send(octets[sent:])
                    continue
                except BlockingIOError:
                    pass
                _wait(sock, True, deadline, "write", self.timeout)

    def _check_writable(self, deadline: Deadline) -> None:
        if self.state is State.CONNECTING and not self.inherited:
            self.wait_opened(deadline, "write")
            if self._write_ok:
                return
        raise afresh(self._write_error or SocketClosedError("the socket is closed"))

    def call_deadline(self) -> Deadline:
        """The deadline of one blocking call under the current ``timeout``."""
        timeout = self.timeout
        return None if timeout is None else time.monotonic() + timeout

    def leave_blocking_mode(self) -> None:
        """Switch the socket to non-blocking mode, for good (a timeout was set).

        Only a writer calls this, under its lock: no ``sendall()`` of another
        thread can be inside the descriptor then (module docstring).
        """
        sock = self.sock
        if sock is not None and self._blocking:
            # The socket first, then the flag: a reader that still sees the flag
            # set meets EAGAIN and waits with poll(); the other order would let a
            # reader that sees it cleared call recv() on a blocking socket.
            sock.setblocking(False)
            self._blocking = False


def _wait(
    sock: socket.socket, write: bool, deadline: Deadline, what: str, timeout: Optional[float]
) -> None:
    """Wait for `sock` (see `pysock._platform`); raise `SocketTimeout` once `deadline` passed."""
    ready = deadline_wait(sock, write, deadline)
    if not ready and deadline is not None and time.monotonic() >= deadline:
        raise SocketTimeout(f"{what} timed out after {timeout}s")


def afresh(error: _E) -> _E:
    """A copy of the stored `error`, to raise again: its class, message, fields and cause.

    Raising one exception object from several calls would chain each call's
    frames onto its traceback (and keep their locals alive); a copy starts
    with this call's traceback only. `partial` starts empty: it belongs to the
    read that raises.
    """
    try:
        copied = copy.copy(error)
    except Exception:  # An exception class that cannot be rebuilt from its args.
        return error
    if copied is error:
        return error
    vars(copied).update(vars(error))
    vars(copied).pop("partial", None)
    copied.__cause__ = error.__cause__
    return copied


def cause_of(failure: BaseException, exc: BaseException) -> BaseException:
    """The cause to raise `failure` from: its own if it has one, else `exc`.

    A stored error (the opening's `ConnectError`, a `BrokenSocketError` the
    selector thread found) is raised again by every later call: its cause stays
    the OS error that made it, never the error of a later call, nor itself.
    """
    return failure.__cause__ if failure.__cause__ is not None else exc
