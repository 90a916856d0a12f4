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
versa. This module moves ciphertext between the record layer and the socket,
with two locks of its own, each with one job:

* ``_send_lock`` orders ciphertext on the wire. Whoever produces records
  (a writer, a reader answering a TLS 1.3 KeyUpdate, the closer) has them
  appended to the record layer's ``outq`` in the order OpenSSL produced them;
  whoever holds ``_send_lock`` drains the queue. A thread that finds the lock
  taken leaves its records to the holder, which re-checks the queue after
  releasing it (no lost records).
* ``_sock_rlock`` makes the reader the only thread that pulls ciphertext from
  the socket; the selector thread takes it without blocking to drain an idle
  socket's last records when the peer hangs up.

A read first asks the record layer for plaintext, and only when OpenSSL needs
more receives ciphertext, handed in with the next decrypt: decrypted bytes
that OpenSSL already holds are never missed by a wait on the socket, and the
TCP EOF is handed in only after every whole record was read, which is what
tells a close_notify from a truncation (`pysock._records`).

The handshake runs on the selector thread (``opened`` completes after it);
it is a few small flights, and each step is non-blocking. A TCP EOF without
close_notify is a `BrokenSocketError` (a truncation attack looks exactly like
it). `close()` enters CLOSED first and then sends close_notify as far as it
fits at once, so no answer of the peer's can break a connection we closed.
Our close_notify (the *farewell*) goes out after every record produced before
it and never fails the writer that happens to send it. Before unwrap(),
the record layer decrypts the records already received: SSL_shutdown would
read and drop them, and over TLS 1.3 (half-close) they are still the peer's
data.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import ssl
import threading
from typing import Any, Final, Optional, Sequence

from . import _loop
from ._address import Endpoint
from ._connection import Connection, Deadline
from ._info import SocketInfo, format_sockaddr
from ._opening import tune
from ._options import Options
from ._peekwatch import UNREAD_LIMIT
from ._platform import MSG_DONTWAIT
from ._records import Handshake, Records, TlsRecords, ragged_eof
from ._state import Event, Read, RegistrationEvent, State
from .errors import BrokenSocketError, PysockError, SocketClosedError, TLSError

__all__ = ["OP_IGNORE_UNEXPECTED_EOF", "TlsConnection", "default_context"]

# Plaintext encrypted per step of a write: bounds the ciphertext held in memory
# for a large write while keeping the per-step overhead negligible.
_WRITE_CHUNK: Final = 256 * 1024
# One receive of ciphertext: up to eight full TLS records (RFC 8446 section 5.1).
# Measured on the 512 MiB TLS 1.3 receive: 64 KiB gave 0.92x of ssl.SSLSocket,
# 128 KiB 1.03x, 256 KiB 1.06x; allocated on a socket's first read.
_CIPHER_BUFFER_SIZE: Final = 128 * 1024

# OpenSSL 3's SSL_OP_IGNORE_UNEXPECTED_EOF turns a truncated stream into a clean
# EOF. Python 3.8 and 3.9 set it in every new context; 3.10+ leave it clear. A
# build too old to name it gets OpenSSL 3's value.
OP_IGNORE_UNEXPECTED_EOF: Final = getattr(
    ssl, "OP_IGNORE_UNEXPECTED_EOF", 0x80 if ssl.OPENSSL_VERSION_INFO >= (3,) else 0
)

_log = logging.getLogger("pysock")

_contexts: dict[Optional[tuple[str, ...]], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def default_context(alpn_protocols: Optional[Sequence[str]] = None) -> ssl.SSLContext:
    """pysock's secure default context: one per process and ALPN list, never modified after.

    ``ssl.create_default_context()`` (system CAs, hostname check, verification
    required), TLS 1.2 at least, and ``OP_IGNORE_UNEXPECTED_EOF`` cleared so a
    truncated stream is an error, not an EOF.
    """
    key = tuple(alpn_protocols) if alpn_protocols else None
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.check_hostname = True
            context.verify_mode = ssl.CERT_REQUIRED
            context.options &= ~OP_IGNORE_UNEXPECTED_EOF
            if key:
                context.set_alpn_protocols(list(key))
            _contexts[key] = context
        return context


class TlsConnection(Connection):
    """A `Connection` whose bytes go through TLS; see the module docstring."""

    __slots__ = (
        "_cipher_buffer",
        "_close_notify_sent",
        "_farewell",
        "_handshake_out",
        "_handshaking",
        "_records",
        "_send_lock",
        "_sock_rlock",
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
        self._send_lock = threading.Lock()
        self._sock_rlock = threading.Lock()
        self._handshake_out = b""
        self._handshaking = False
        self._close_notify_sent = False
        self._farewell = b""  # Our close_notify, sent after every record queued before it.
        self._cipher_buffer: Optional[memoryview] = None

    # -- the handshake (selector thread) --------------------------------------------

    def _connected(self, sock: socket.socket, peer: Any = None) -> None:
        try:
            tune(sock, self.options)
        except OSError as exc:
            self._connected_failed(sock, exc)
            return
        self.begin_handshake(sock)

    def begin_handshake(self, sock: socket.socket) -> None:
        """Take `sock` (connected, non-blocking) and start the handshake on the loop."""
        with self._lock:
            if self.state is not State.CONNECTING:
                sock.close()
                return
            self._forget_attempts()
            self.sock = sock
            self._handshaking = True
        # The first flight (ClientHello) leaves from this thread, usually the
        # caller's: the peer starts its work one thread hand-off sooner.
        self._handshake_step(in_loop=_loop.get_loop().in_loop_thread())

    def _handshake_step(self, in_loop: bool = True) -> None:
        """One non-blocking handshake step; then wait in the selector if needed.

        Runs on the loop thread, except the first step (`in_loop` False), which
        hands the wait to the loop.
        """
        if self.state is not State.CONNECTING or self.sock is None:
            return
        try:
            step, flight = self._records.handshake()
            self._handshake_out += flight
            self._flush_handshake_in_loop()
        except (ssl.SSLError, OSError) as exc:
            self._handshake_failed(exc)
            return
        if step is Handshake.DONE and not self._handshake_out:
            self._handshake_done()
            return
        events = 0 if step is Handshake.DONE else selectors.EVENT_READ
        if self._handshake_out:
            events |= selectors.EVENT_WRITE
        if in_loop:
            self._watch_handshake_in_loop(events)
        else:
            _loop.get_loop().call_soon_threadsafe(self._watch_handshake_in_loop, events)

    def _watch_handshake_in_loop(self, events: int) -> None:
        with self._lock:  # close() decides under this lock who releases the descriptor.
            if self.state is State.CONNECTING and self.sock is not None:
                _loop.get_loop().watch(self.sock, events, self)
                self._watched(RegistrationEvent.ENTER_SELECTOR)

    def _flush_handshake_in_loop(self) -> None:
        sock = self.sock
        assert sock is not None
        while self._handshake_out:
            try:
                sent = sock.send(self._handshake_out)
            except BlockingIOError:
                return
            self._handshake_out = self._handshake_out[sent:]

    def _handshake_ready_in_loop(self, events: int) -> None:
        sock = self.sock
        assert sock is not None
        try:
            if events & selectors.EVENT_WRITE:
                self._flush_handshake_in_loop()
            if events & selectors.EVENT_READ:
                data = sock.recv(_CIPHER_BUFFER_SIZE)
                if data:
                    self._records.feed(data)
                else:
                    self._records.feed_eof()
        except BlockingIOError:
            return
        except OSError as exc:
            self._handshake_failed(exc)
            return
        self._handshake_step()

    def _handshake_failed(self, exc: BaseException) -> None:
        _log.debug("%s: TLS handshake failed: %r", self.endpoint, exc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = f"certificate verify failed: {exc.verify_message}"
        elif isinstance(exc, ssl.SSLEOFError):
            reason = "the peer closed the connection during the handshake"
        elif _reason(exc) in _PLAINTEXT_ANSWERS:
            reason = (
                f"the server seems to answer in plaintext ({_reason(exc)}): this port does "
                "not seem to speak TLS from the first byte (for a protocol that upgrades "
                "later, such as SMTP on 587 or IMAP on 143, use secure_transport='starttls')"
            )
        else:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        cause = exc
        if not isinstance(exc, ssl.SSLError):  # A reset or an EOF under the handshake.
            # A TLSError's cause is always an ssl error (code that inspects it needs
            # one type); the OS error is behind it.
            cause = ssl.SSLError(getattr(exc, "errno", None) or 0, f"TLS handshake: {reason}")
            cause.__cause__ = exc
        self._fail_open(TLSError(f"TLS handshake with {self.endpoint} failed: {reason}"), cause)

    def _handshake_done(self) -> None:
        sock = self.sock
        assert sock is not None
        with self._lock:
            if self.in_selector:
                _loop.get_loop().unwatch(sock)
                self._watched(RegistrationEvent.LEAVE_SELECTOR)
        tls = self._records.describe()
        try:
            info = SocketInfo(
                format_sockaddr(sock.getpeername()), format_sockaddr(sock.getsockname()), tls.alpn
            )
            if self._blocking:
                sock.setblocking(True)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:  # Reset already: a server refusing our certificate.
                reason = "the peer closed the connection at the end of the handshake"
                cut = ConnectionResetError(errno.ECONNRESET, reason)
                cut.__cause__ = exc
                exc = cut
            self._handshake_failed(exc)
            return
        self.tls = tls
        self._handshaking = False
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: TLS %s, %s, ALPN %s", self.endpoint, tls.version, tls.cipher, tls.alpn)
        self._opened(sock, info)

    def on_ready_in_loop(self, events: int) -> None:
        if self.state is State.CONNECTING and self._handshaking:
            self._handshake_ready_in_loop(events)
        else:
            super().on_ready_in_loop(events)

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
        self._examine_hangup_in_loop()

    def take_unread_in_loop(self, sock: socket.socket) -> None:
        """Decrypt the records an idle socket holds (`pysock._peekwatch`), to reach its end.

        Until `UNREAD_LIMIT` bytes of plaintext wait: past that, the rest stays
        in the kernel for the reader. `sock` is ours.
        """
        if self._records.unread < UNREAD_LIMIT and self._read_side is Read.OPEN:
            self._examine_hangup_in_loop()

    def _examine_hangup_in_loop(self) -> None:
        sock = self.sock
        if sock is None or self.state is not State.OPEN:
            return
        if not self._sock_rlock.acquire(blocking=False):
            # A reader is inside recv and meets the FIN or reset itself, unless it
            # is just leaving: look again shortly.
            self._rewatch_later()
            return
        try:
            records, error = self._drain_idle_socket(sock)
            if error is None:
                error = self._reset_error  # Taken by the hang-up check's peek, if any.
            if error is None:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                error = OSError(code, os.strerror(code)) if code else None
        except OSError as exc:  # Closed under us by close(): nothing left to report.
            records, error = Records.MORE, exc
        finally:
            self._sock_rlock.release()
        if records is Records.FAILED:
            failure = self._records.failure
            assert failure is not None
            self._failed_by(failure)
        elif records is Records.CLOSED:
            self.on_peer_eof()
            if self.state is State.OPEN:  # allow_half_open: our write side is still open.
                if error is not None:
                    self._broken_by(error)
                else:
                    self._rewatch_in_loop()
        elif error is not None:
            self._broken_by(error)
        else:
            self._rewatch_in_loop()

    def _drain_idle_socket(self, sock: socket.socket) -> tuple[Records, Optional[OSError]]:
        """Hand the record layer what the kernel holds and decrypt it. Holds ``_sock_rlock``.

        Returns ``(records, error)``: where the records stand (`Records`), and
        the OSError (a reset) that ended the byte stream, if any.
        """
        error: Optional[OSError] = None
        at_fin = False
        while True:
            try:
                data = sock.recv(_CIPHER_BUFFER_SIZE, MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                error = exc
                break
            if not data:
                at_fin = True
                break
            self._records.feed(data)
        # At the FIN every whole record is read before the EOF is written, so a
        # close_notify among them is seen as one (see `pysock._records`).
        return self._records.decrypt_all(eof=at_fin), error

    def _decrypt_after_break(self) -> None:
        """Decrypt the records the kernel still holds for us after the connection broke.

        A write timeout, or a reset a writer met, breaks the connection with
        the peer's last records still queued in the kernel, unread: they are
        its data, as plain TCP's `_read_after_break` reads them. The socket is
        shut down by then, so this never waits. A partial last record stays
        undecrypted: it cannot be authenticated.
        """
        sock = self.sock
        if sock is None or self.state is not State.BROKEN:
            return
        with self._sock_rlock:
            try:
                self._drain_idle_socket(sock)
            except OSError:
                pass  # Closed meanwhile by close(): nothing left to read.

    def _failed_by(self, exc: BaseException) -> PysockError:
        """An SSL error on the open connection: fail it, return the error to raise.

        A `TLSError` when the peer refuses the handshake's outcome with an alert
        (over TLS 1.3 the server checks a client certificate after the client
        has finished, so a missing or refused one comes as the first record);
        for anything else, `BrokenSocketError`.
        """
        if not _refused_by_peer(exc):
            return self._broken_by(exc, self._ragged_message(exc))
        refusal = TLSError(f"TLS with {self.endpoint} refused by the peer: {_reason(exc) or exc}")
        return self._fail_with(refusal, exc, PysockError)

    def _ragged_message(self, exc: BaseException) -> str:
        if ragged_eof(exc):
            return (
                f"TLS connection to {self.endpoint} ended without close_notify "
                "(a truncation attack looks the same; for a server known to end so, "
                "connect with ignore_unexpected_eof=True)"
            )
        return f"TLS connection to {self.endpoint} broken: {exc}"

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
                        self._decrypt_after_break()
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
            return self.park(self._failed_by(exc), exc)
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
            if self._release_pending:
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
        with memoryview(data) as view, view.cast("B") as octets:
            for start in range(0, len(octets), _WRITE_CHUNK):
                self._records.encrypt(octets[start : start + _WRITE_CHUNK])
                self._drain(deadline)

    def _drain(self, deadline: Deadline) -> None:
        """A writer sends the queue, blocking as a write may; then what others queued."""
        with self._send_lock:
            self._send_queued(deadline)
        outq = self._records.outq
        while (outq or self._farewell) and self._send_lock.acquire(blocking=False):
            try:
                self._send_queued(deadline)
            finally:
                self._send_lock.release()

    def _send_queued(self, deadline: Deadline) -> None:
        """Send every queued record, then close_notify if it waits. Holds ``_send_lock``."""
        sock = self.sock
        assert sock is not None
        outq = self._records.outq
        while outq:
            records = outq.popleft()
            if self._blocking:
                sock.sendall(records)
            else:
                self._send_all_nonblocking(sock, records, deadline)
        if self._farewell:
            self._send_farewell_nowait(sock)

    def leave_blocking_mode(self) -> None:
        # Under the send lock too: whoever holds it may be in a blocking sendall().
        with self._send_lock:
            super().leave_blocking_mode()

    def _flush_nowait(self) -> None:
        """A reader sends what is queued (a KeyUpdate answer) without ever blocking.

        A reader must not block on a full socket: the peer may be blocked
        writing to us. What does not fit now stays first in the queue for the
        next writer or the reader's next pass; a send error is left for the
        next write to report (the records stay queued).
        """
        if not self._send_lock.acquire(blocking=False):
            return  # The sender sends them.
        try:
            sock = self.sock
            assert sock is not None
            outq = self._records.outq
            while outq:
                records = outq[0]
                sent = sock.send(records, MSG_DONTWAIT)
                if sent < len(records):
                    outq[0] = records[sent:]
                    return
                outq.popleft()
            if self._farewell:
                self._send_farewell_nowait(sock)
        except OSError:
            pass
        finally:
            self._send_lock.release()

    def _send_farewell_nowait(self, sock: socket.socket) -> None:
        """Best effort: close_notify never blocks and never fails a caller."""
        farewell, self._farewell = self._farewell, b""
        try:
            sock.send(farewell, MSG_DONTWAIT)
        except OSError:
            pass  # The peer is gone or not reading: the connection is ending anyway.

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
        self._send_close_notify(wait and not _loop.get_loop().in_loop_thread())
        super()._send_eof()

    def _send_close_notify(self, wait: bool) -> None:
        """Queue close_notify after every record produced so far and send it.

        With `wait` (``writable.close()``) the caller blocks until it is sent,
        as a write would; otherwise (``close()``, the selector thread) it goes
        out only as far as it fits now. Errors are never raised: either way the
        connection is ending.
        """
        sock = self.sock
        if self._close_notify_sent or sock is None or self.tls is None:
            return
        self._close_notify_sent = True
        if not wait:
            # Best effort, never blocking anyone. Set before the flush: a sender
            # holding `_send_lock` now looks for it after releasing it (`_drain`).
            self._farewell = self._records.close_notify()
            self._flush_nowait()
            return
        self._records.queue_close_notify()  # Sent like a write's records.
        try:
            with self._send_lock:
                self._send_queued(self.call_deadline())
        except OSError:
            pass  # The peer is gone: the connection is ending anyway.

    def close(self) -> None:
        # Enter CLOSED before close_notify goes out: the peer's answer to it (its own
        # close_notify, a FIN, a reset) must not look like a broken connection.
        if not self.inherited and self._transition(Event.CLOSE):
            self._send_close_notify(wait=False)
        super().close()


# OpenSSL's reasons when the first bytes of the server's answer are not a TLS
# record: a plaintext greeting ("220 ...", "HTTP/1.1 400") read as a header.
_PLAINTEXT_ANSWERS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or "")


# Alerts by which a server refuses the client's certificate (RFC 8446 section 6.2).
_CERTIFICATE_ALERTS: Final = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNSUPPORTED_CERTIFICATE",
    "CERTIFICATE_REVOKED",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_UNKNOWN",
    "UNKNOWN_CA",
    "ACCESS_DENIED",
)


def _refused_by_peer(exc: BaseException) -> bool:
    reason = _reason(exc)
    return "ALERT" in reason and reason.endswith(_CERTIFICATE_ALERTS)
