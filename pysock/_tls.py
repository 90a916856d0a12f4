"""TLS: a record layer without a socket (`TlsRecords`), and the socket beside it.

Theory of operation
===================

OpenSSL forbids concurrent calls on one SSL object, yet pysock lets one thread
read while another writes (a protocol client's reader and writer).
``ssl.SSLSocket`` cannot give that (its read and write share the SSL object
*and* block inside OpenSSL), so a `TlsConnection` keeps the SSL object away
from the socket. Its record layer, a `pysock._records.TlsRecords` held in
``_records``, is an SSL object over two `ssl.MemoryBIO`s that knows nothing
of sockets; its lock (``_ssl_lock``) is held only for in-memory work, so a
writer blocked on a full socket never stops a reader from decrypting and vice
versa. The connection moves ciphertext between the record layer and the
socket through three parts, each with one job:

* the handshake, a phase object (`pysock._handshake.TlsHandshake`, in
  ``_handshake`` while it lasts), stepped by the selector thread or by the
  caller who waits for ``opened``;
* the sending side (`pysock._wire.RecordWire`, in ``_wire``): records onto the
  wire in OpenSSL's order, one sender at a time, and our close_notify (the
  *farewell*) after them;
* the receiving side, here: ``_sock_rlock`` makes the reader the only thread
  that pulls ciphertext from the socket; the selector thread takes it without
  blocking to drain an idle socket's last records when the peer hangs up.

A read first asks the record layer for plaintext, and only when OpenSSL needs
more receives ciphertext, handed in with the next decrypt: decrypted bytes
that OpenSSL already holds are never missed by a wait on the socket, and the
TCP EOF is handed in only after every whole record was read, which is what
tells a close_notify from a truncation (`pysock._records`). A TCP EOF without
close_notify is a `BrokenSocketError` (a truncation attack looks exactly like
it). `close()` enters CLOSED first and then sends close_notify as far as it
fits at once, so no answer of the peer's can break a connection we closed.

Two TLS threads use the descriptor outside a read or a write: a caller
stepping the handshake, and ``writable.close()`` sending close_notify. Each
*borrows* it (`borrow`, `give_back`, the `Loan` states): ``close()`` from
another thread then shuts the socket down, which wakes the borrower, and
leaves the closing of the descriptor to it, as it does for a read or a write
(`pysock._connection`'s close handshake).
"""

from __future__ import annotations

import concurrent.futures
import enum
import socket
import ssl
import threading
from typing import Any, Callable, Final, Optional

from . import _loop
from ._address import Endpoint
from ._connection import Connection, Deadline
from ._handover import HandshakeFuture
from ._handshake import TlsHandshake
from ._opening import tune
from ._options import Options
from ._peekwatch import UNREAD_LIMIT
from ._records import TlsRecords
from ._state import Descriptor, Event, Read, State
from ._tlscontext import OP_IGNORE_UNEXPECTED_EOF, default_context
from ._tlsend import decrypt_after_break, examine_hangup_in_loop, failed_by
from ._wire import FarewellEvent, RecordWire
from .errors import BrokenSocketError, PysockError, SocketClosedError

__all__ = ["OP_IGNORE_UNEXPECTED_EOF", "Loan", "TlsConnection", "default_context"]

# Plaintext encrypted per step of a write: bounds the ciphertext held in memory
# for a large write while keeping the per-step overhead negligible.
_WRITE_CHUNK: Final = 256 * 1024
# One receive of ciphertext: up to eight full TLS records (RFC 8446 section 5.1).
# Measured on the 512 MiB TLS 1.3 receive: 64 KiB gave 0.92x of ssl.SSLSocket,
# 128 KiB 1.03x, 256 KiB 1.06x; allocated on a socket's first read.
_CIPHER_BUFFER_SIZE: Final = 128 * 1024

# Compared on every call's way out (the close handshake, pysock._descriptor).
_LAST_OUT: Final = Descriptor.LAST_OUT


class Loan(enum.Enum):
    """Whether a TLS thread outside reads and writes holds the descriptor (`borrow`)."""

    FREE = "nobody borrows it"
    LENT = "a caller stepping the handshake, or writable.close() sending close_notify"
    RECALLED = "released meanwhile: the borrower closes the descriptor when it gives it back"


class TlsConnection(Connection):
    """A `Connection` whose bytes go through TLS; see the module docstring."""

    __slots__ = (
        "_awaited",
        "_cipher_buffer",
        "_handshake",
        "_loan",
        "_records",
        "_sock_rlock",
        "_wire",
        "tls",
    )

    def __init__(self, endpoint: Endpoint, options: Options) -> None:
        # The SSL object first: if the ssl module refuses the name, nothing exists
        # yet that a finalizer would have to close (Connection.__init__ registers).
        context = options.tls_context or default_context(options.alpn_protocols)
        hostname = options.expected_server_hostname or endpoint.host
        if endpoint.is_unix and not options.expected_server_hostname:
            raise ValueError(
                f"TLS over the Unix socket {endpoint} needs expected_server_hostname: "
                "the name to verify the server's certificate against"
            )
        try:
            self._records = TlsRecords(context, hostname, options.ignore_unexpected_eof)
        except (TypeError, UnicodeError) as exc:  # Caught by check_name(); a last guard.
            raise ValueError(f"the ssl module refuses the name {hostname!r}: {exc}") from exc
        super().__init__(endpoint, options)
        self.tls = None  # The handshake's outcome, once it is done.
        self._wire = RecordWire(self._records)
        self._sock_rlock = threading.Lock()
        self._handshake: Optional[TlsHandshake] = None
        self._awaited = False  # A caller waits for the open before the handshake began.
        self._loan = Loan.FREE
        self._cipher_buffer: Optional[memoryview] = None

    # -- the handshake (`pysock._handshake`) ------------------------------------------

    def _connected(self, sock: socket.socket, peer: Any = None) -> None:
        try:
            tune(sock, self.options)
        except OSError as exc:
            self._connected_failed(sock, exc)
            return
        self.begin_handshake(sock)

    def begin_handshake(self, sock: socket.socket) -> None:
        """Take `sock` (connected, non-blocking), send the ClientHello, hand the rest on.

        The first flight leaves from this thread, usually the caller's: the peer
        starts its work one thread hand-off sooner.
        """
        handshake = TlsHandshake()
        with self._lock:
            if self.state is not State.CONNECTING:
                sock.close()
                return
            self._forget_attempts()
            self.sock = sock
            self._handshake = handshake
            awaited = self._awaited
        handshake.first_step(self, sock, awaited)

    def handshake_for_waiter(self) -> Optional[TlsHandshake]:
        """The handshake a waiting caller may step; if none began yet, note that one waits."""
        with self._lock:
            if self._handshake is None:
                self._awaited = True  # Its first step then hands it to the loop at once.
            return self._handshake

    def _new_future(self, slot: str) -> concurrent.futures.Future[Any]:
        if slot == "_opened_future":
            return HandshakeFuture(self)
        return super()._new_future(slot)

    def on_ready_in_loop(self, events: int) -> None:
        handshake = self._handshake
        if handshake is not None:
            handshake.ready_in_loop(self, events)

    # -- the descriptor lent outside reads and writes --------------------------------------

    def borrow(self) -> bool:
        """Hold the descriptor as a read would (a `Loan`). Holds ``_lock``."""
        if self._loan is not Loan.FREE or self._descriptor is not Descriptor.HELD:
            return False
        self._loan = Loan.LENT
        return True

    def give_back(self) -> None:
        """End the loan; close the descriptor if it was released meanwhile."""
        with self._lock:
            recalled = self._loan is Loan.RECALLED
            self._loan = Loan.FREE
        if recalled:
            self._close_descriptors()

    def _release(self) -> None:
        if self._loan is not Loan.FREE:
            self._shutdown_sock(socket.SHUT_RDWR)  # Wakes the borrower's poll() or send().
        super()._release()

    def _close_descriptors(self) -> None:
        with self._lock:
            if self._loan is Loan.LENT:
                self._loan = Loan.RECALLED  # The borrower closes them in give_back().
                return
        super()._close_descriptors()

    # -- the peer's FIN or reset on an idle socket (selector thread) -------------------

    def on_hangup_in_loop(self, error: Optional[OSError] = None, settled: bool = False) -> None:
        """The peer sent FIN or reset: decrypt its last records before judging.

        Unlike plain TCP, the reset is not taken from ``SO_ERROR`` first: the
        records that came before it may hold the peer's close_notify, and a
        reset after a clean close_notify (the peer refusing our own
        close_notify, say) ends the read side cleanly.
        """
        if self._read_side is Read.WAKING:  # Our readable.close() woke a reader: TCP rules.
            super().on_hangup_in_loop(error, settled)
            return
        with self._lock:
            if error is not None:
                self._reset_error = error
            if self.hangup_confirmed() is None:
                return
            self._set_hangup_watch(None)  # Level-triggered: quiet until handled.
        examine_hangup_in_loop(self)

    def take_unread_in_loop(self, sock: socket.socket) -> None:
        """Decrypt the records an idle socket holds (`pysock._peekwatch`), to reach its end.

        Until `UNREAD_LIMIT` bytes of plaintext wait: past that, the rest stays
        in the kernel for the reader. `sock` is ours.
        """
        if self._records.unread < UNREAD_LIMIT and self._read_side is Read.OPEN:
            examine_hangup_in_loop(self)

    # -- reading (caller's thread) ----------------------------------------------------

    def recv_into(self, buffer: Any, deadline: Deadline = None) -> int:
        self._reading = True
        try:
            layer = self._records
            if not self._read_ok:
                if isinstance(self._read_error, BrokenSocketError):
                    # Whole records that came before a ragged EOF, a reset or a
                    # write timeout are the peer's data, as they are to a reader who
                    # was waiting: deliver them, then the error: no byte received
                    # is dropped.
                    if not layer.unread:
                        decrypt_after_break(self)
                    if layer.unread:
                        return layer.take_plain(buffer)
                self._check_readable(deadline)
            if len(buffer) == 0:
                return 0
            with self._sock_rlock:
                # Handed in with the next decrypt: one trip through the lock per receive.
                received: Optional[memoryview] = None
                while True:
                    nbytes = layer.decrypt_into(buffer, received)
                    if nbytes is not None:
                        return nbytes if nbytes else self._on_recv_eof(buffer)
                    if layer.outq:
                        self._flush_nowait()
                    received = self._receive_ciphertext(deadline)
        except ssl.SSLError as exc:
            return self.park(failed_by(self, exc), exc)
        except PysockError as exc:  # A timeout too: the reader keeps what it gathered.
            return self.park(exc)
        except OSError as exc:
            return self.park(self._read_failure(exc), exc)
        except KeyboardInterrupt as exc:  # Ctrl-C inside recv(): see pysock._rawio.
            return self.park(exc)
        finally:
            # Counted once the read is over: a read that waits when the idle watch
            # looks still counts as the one that takes the bytes it then finds.
            self.raw_reads += 1
            self._reading = False
            if self._descriptor is _LAST_OUT:
                self._after_call()

    def _receive_ciphertext(self, deadline: Deadline) -> memoryview:
        """Receive ciphertext, returned as a view of ``_cipher_buffer``: empty at the EOF.

        The EOF comes only once OpenSSL asked for more, that is after every
        whole record was read: the end-of-records judgement relies on it.
        """
        view = self._cipher_buffer
        if view is None:
            view = self._cipher_buffer = memoryview(bytearray(_CIPHER_BUFFER_SIZE))
        sock = self.sock
        assert sock is not None
        if self._blocking and deadline is None:
            try:
                nbytes = sock.recv_into(view)
            except BlockingIOError:  # A writer switched the mode (see pysock._rawio).
                nbytes = self._recv_into_nonblocking(sock, view, deadline)
        else:
            nbytes = self._recv_into_nonblocking(sock, view, deadline)
        if nbytes == 0 and not self._read_ok:
            raise self._read_error or SocketClosedError("the socket is closed")
        return view[:nbytes]

    # -- writing (caller's thread) ----------------------------------------------------

    def _transmit(self, data: Any, deadline: Deadline) -> None:
        sock = self.sock
        assert sock is not None
        send = self._sender(sock, deadline)
        with memoryview(data) as view, view.cast("B") as octets:
            for start in range(0, len(octets), _WRITE_CHUNK):
                self._records.encrypt(octets[start : start + _WRITE_CHUNK])
                self._wire.drain(sock, send)

    def _sender(self, sock: socket.socket, deadline: Deadline) -> Callable[[bytes], None]:
        """How a writer sends records: the stdlib call, or bounded by `deadline`."""
        if self._blocking:
            return sock.sendall
        return lambda records: self._send_all_nonblocking(sock, records, deadline)

    def leave_blocking_mode(self) -> None:
        # Under the send lock too: whoever holds it may be in a blocking sendall().
        with self._wire.send_lock:
            super().leave_blocking_mode()

    def _flush_nowait(self) -> None:
        """A reader sends what is queued (a KeyUpdate answer) without ever blocking."""
        sock = self.sock
        assert sock is not None
        self._wire.flush_nowait(sock)

    # -- closing ------------------------------------------------------------------------

    def check_half_close(self) -> None:
        if self.state is State.CONNECTING:
            # The version is known after the handshake: wait for it as a write would.
            self.wait_opened(self.call_deadline(), "writable.close()")
        version = self.tls.version if self.tls else None
        if self.state is State.OPEN and version != "TLSv1.3":
            raise PysockError(
                f"writable.close() cannot half-close {version or 'this'} TLS: only TLS 1.3 "
                "lets a peer go on sending after close_notify (RFC 8446 section 6.1); "
                "close the whole socket instead"
            )

    def _send_eof(self, wait: bool = False) -> None:
        """close_notify, then the FIN.

        With `wait` (``writable.close()``) the caller blocks until close_notify
        is sent, as a write would, holding the descriptor on loan: a
        concurrent ``close()`` wakes it and leaves the descriptor to it.
        Otherwise (the selector thread, a reader seeing the peer's end) it goes
        out only as far as it fits now. Errors are never raised: either way the
        connection is ending.
        """
        sock = self.sock
        if sock is None or self.tls is None:
            super()._send_eof()
            return
        if not wait or _loop.get_loop().in_loop_thread():
            if self._wire.say(FarewellEvent.CLOSE, self._lock):
                self._wire.flush_nowait(sock)
            super()._send_eof()
            return
        with self._lock:
            if not self.borrow():
                return  # Closed meanwhile: close() sent what it could.
        try:
            if self._wire.say(FarewellEvent.HALF_CLOSE, self._lock):
                with self._wire.send_lock:  # Sent as a write's records are.
                    self._wire.send_queued(sock, self._sender(sock, self.call_deadline()))
        except OSError:
            pass  # The peer is gone, or close() woke us: the connection is ending anyway.
        finally:
            super()._send_eof()
            self.give_back()

    def close(self) -> None:
        # Enter CLOSED before close_notify goes out: the peer's answer to it (its own
        # close_notify, a FIN, a reset) must not look like a broken connection.
        if not self.inherited and self._transition(Event.CLOSE):
            sock = self.sock
            farewell = sock is not None and self.tls is not None
            if farewell and self._wire.say(FarewellEvent.CLOSE, self._lock):
                assert sock is not None
                self._wire.flush_nowait(sock)
        super().close()
