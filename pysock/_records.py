"""The TLS record layer without a socket: an `ssl.SSLObject` between two memory BIOs.

Theory of operation
===================

A `TlsRecords` turns plaintext into TLS records and records into plaintext,
and never touches a socket: its owner (`pysock._tls.TlsConnection`) receives
ciphertext and hands it in, and takes the records produced here to send. The
SSL object talks to two `ssl.MemoryBIO`s: ``_incoming`` holds ciphertext
handed in and not yet decrypted, ``_outgoing`` what OpenSSL produced. Every
OpenSSL call follows the same rules: it may read ``_incoming``, it may append
to ``_outgoing``, and it raises ``SSLWantReadError`` when it needs ciphertext
that has not come yet. Keeping I/O out makes every method non-blocking, so a
record layer can be driven entirely in memory (tests/test_records.py does).

One lock, ``_ssl_lock``
-----------------------

OpenSSL forbids concurrent calls on one SSL object, and ``SSLObject.read``
releases the GIL, so ``_ssl_lock`` guards the SSL object, both BIOs, the
plaintext queue and the two end-of-records fields (``_tls_eof``,
``_tls_failure``). It is held only for in-memory work, never across a socket
call (this module makes none), so a writer blocked on a full socket never
stops a reader from decrypting, nor the reverse. Every method takes it
itself: a caller never holds it.

The outgoing queue, ``outq``
----------------------------

Records are produced by encrypting (`encrypt`), by reading (a TLS 1.3
KeyUpdate the peer sent asks for our own, RFC 8446 section 4.6.3) and by
closing (`close_notify`, `queue_close_notify`). Each of them moves what
OpenSSL produced from ``_outgoing`` to the deque ``outq`` *before releasing
the lock*, so the queue's order is the order OpenSSL produced the records in,
whichever threads produced them. The owner drains the queue from the left,
one sender at a time, with no need for ``_ssl_lock`` (``append`` and
``popleft`` are atomic): the queue is the one field shared outside the lock.
Only the handshake's flights bypass it (`handshake` returns them): the
handshake runs before anyone else may produce a record. A failed handshake
leaves its alert there.

Reading, and the plaintext queue ``_plain``
-------------------------------------------

`decrypt_into` is the reader's hot path: one ``SSLObject.read(n, buffer)``
under the lock, the plaintext going straight into the caller's buffer. It
takes the ciphertext the reader received since its last call in the same
critical section (``received``), and answers None when OpenSSL needs more:
the reader receives only then, so plaintext OpenSSL already holds is never
missed by a wait on the socket.

Plaintext can also be decrypted for a reader who is not there: the owner's
selector thread decrypts an idle socket's last records (`decrypt_all`) to
find the close_notify or the truncation behind them, and `close_notify`
decrypts what was received before ``SSLObject.unwrap`` (OpenSSL's
``SSL_shutdown`` would read and drop those records, and over TLS 1.3 they
are still the peer's data). That plaintext waits in ``_plain`` and every
read takes it first (`decrypt_into`, `take_plain`), so no byte is lost and
none is reordered.

The end of the records
----------------------

The peer's records end cleanly with its close_notify: OpenSSL says so with
``SSLZeroReturnError``, or a read answering nothing. A TCP EOF without
close_notify (`feed_eof`) reads as ``SSLEOFError``: a truncation attack looks
exactly like it, so it is a failure (`Records.FAILED`) unless the owner was
told to accept it (``ignore_unexpected_eof``), and then it is the end
(`Records.CLOSED`). The context's own ``OP_IGNORE_UNEXPECTED_EOF`` never
decides: Python 3.9 sets it on every default context, and with it OpenSSL
reports the TCP EOF as a clean end. So the EOF is handed in only once every
whole record was read (the reader receives, and so meets the EOF, only after
OpenSSL asked for more; `decrypt_all` reads all before it writes the EOF):
an end reported once ``_incoming.eof`` is set cannot be a close_notify, and
is judged a truncation (`_end_of_records`). The first record-layer error is
kept in ``_tls_failure`` and raised again by every later read: OpenSSL's
answers after it describe its own state, not the cause.
"""

from __future__ import annotations

import collections
import enum
import ssl
import threading
from typing import Final, Optional, Union

from ._info import TLSInfo

__all__ = ["Handshake", "Records", "TlsRecords", "ragged_eof"]

# One read of `decrypt_all`: OpenSSL answers at most one record (16 KiB of
# plaintext) per read, so any size above that decrypts a record per call.
_DECRYPT_CHUNK: Final = 128 * 1024

# A buffer a read decrypts into: what `io.BufferedReader` and `recv_into` pass.
Writable = Union[bytearray, memoryview]
# Bytes handed in: ciphertext received, or plaintext to encrypt.
Readable = Union[bytes, bytearray, memoryview]


class Records(enum.Enum):
    """Where the peer's TLS records stand after decrypting all that arrived."""

    MORE = "more may follow"
    CLOSED = "the peer's close_notify came"
    FAILED = "the stream failed: the SSL error is in TlsRecords.failure"


class Handshake(enum.Enum):
    """Where the handshake stands after one step."""

    DONE = "the handshake is complete"
    WANT_READ = "the peer's next flight is needed"


def ragged_eof(exc: BaseException) -> bool:
    """True for OpenSSL's report of a TCP EOF without close_notify."""
    # Python 3.9 reports the same event as a plain SSLError with this reason.
    reason = str(getattr(exc, "reason", "") or "")
    return isinstance(exc, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING"


class TlsRecords:
    """One TLS client's record layer: see the module docstring.

    Args:
        context: a client context (``PROTOCOL_TLS_CLIENT``), never modified here.
        server_hostname: the name sent as SNI and checked against the certificate.
        ignore_unexpected_eof: take a TCP EOF without close_notify as the end.

    Raises:
        TypeError, UnicodeError: the ssl module refuses `server_hostname`.
    """

    __slots__ = (
        "_ignore_unexpected_eof",
        "_incoming",
        "_outgoing",
        "_plain",
        "_ssl_lock",
        "_sslobj",
        "_tls_eof",
        "_tls_failure",
        "outq",
    )

    def __init__(
        self, context: ssl.SSLContext, server_hostname: str, ignore_unexpected_eof: bool = False
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._ignore_unexpected_eof = ignore_unexpected_eof
        self._ssl_lock = threading.Lock()
        # Records to send, in the order OpenSSL produced them (module docstring).
        self.outq: collections.deque[bytes] = collections.deque()
        self._plain = bytearray()  # Decrypted with no reader there, not yet read.
        self._tls_eof = False
        # The first record-layer error: after it OpenSSL's answers are not the cause.
        self._tls_failure: Optional[ssl.SSLError] = None

    # -- the handshake ------------------------------------------------------------------

    def handshake(self) -> tuple[Handshake, bytes]:
        """One non-blocking handshake step, and the flight it produced, to send.

        Raises:
            ssl.SSLError: the handshake failed (a refused certificate, an alert).
                The alert OpenSSL produced for our own refusal, if any, is in
                `outq`, to be sent before the socket closes.
        """
        with self._ssl_lock:
            try:
                self._sslobj.do_handshake()
                step = Handshake.DONE
            except ssl.SSLWantReadError:
                step = Handshake.WANT_READ
            except ssl.SSLError:
                self._queue_outgoing()
                raise
            return step, self._outgoing.read()

    def describe(self) -> TLSInfo:
        """What the completed handshake established."""
        with self._ssl_lock:
            sslobj = self._sslobj
            cipher = sslobj.cipher()
            return TLSInfo(
                version=sslobj.version() or "",
                cipher=cipher[0] if cipher else "",
                alpn=sslobj.selected_alpn_protocol(),
                peer_certificate=dict(sslobj.getpeercert() or {}),
                peer_certificate_der=sslobj.getpeercert(binary_form=True) or b"",
            )

    # -- ciphertext in ------------------------------------------------------------------

    def feed(self, ciphertext: Readable) -> None:
        """Hand in ciphertext received from the peer (the reader uses `decrypt_into`)."""
        with self._ssl_lock:
            self._incoming.write(ciphertext)

    def feed_eof(self) -> None:
        """Hand in the TCP EOF, once every whole record was read (module docstring)."""
        with self._ssl_lock:
            self._incoming.write_eof()

    # -- plaintext out ------------------------------------------------------------------

    def decrypt_into(
        self, buffer: Writable, received: Optional[memoryview] = None
    ) -> Optional[int]:
        """Plaintext into `buffer`: a count, 0 at the end, None to receive more first.

        Args:
            buffer: where the plaintext goes; not empty.
            received: the ciphertext received since the last call, handed in
                first; empty for the TCP EOF.

        Raises:
            ssl.SSLError: the records failed, now or before (a truncation, a
                bad record, an alert); every later call raises it again.
        """
        with self._ssl_lock:
            if received is not None:
                if received:
                    self._incoming.write(received)
                else:
                    self._incoming.write_eof()
            if self._plain:
                return self._pop_plain(buffer)
            if self._tls_eof:
                return 0
            if self._tls_failure is not None:
                raise self._tls_failure
            try:
                nbytes: int = self._sslobj.read(len(buffer), buffer)  # type: ignore[assignment]
            except ssl.SSLWantReadError:
                return None
            except ssl.SSLZeroReturnError:
                nbytes = 0
            except ssl.SSLError as exc:
                if not self._accepts_as_eof(exc):
                    self._tls_failure = exc
                    raise
                self._tls_eof = True
                nbytes = 0
            finally:
                self._queue_outgoing()
            if nbytes == 0:  # The ssl module reports a received close_notify as 0.
                failure = self._end_of_records()
                if failure is not None:
                    raise failure
            return nbytes

    def take_plain(self, buffer: Writable) -> int:
        """Move plaintext decrypted earlier (``_plain``) into `buffer`; 0 if none waits."""
        with self._ssl_lock:
            return self._pop_plain(buffer)

    def decrypt_all(self, eof: bool = False) -> Records:
        """Decrypt every whole record handed in into ``_plain``; then, with `eof`, the TCP EOF.

        The EOF is written only after the records before it were read, so a
        close_notify among them ends the records cleanly and an end OpenSSL
        reports after the EOF is a truncation (module docstring). FAILED
        leaves the SSL error in `failure`.
        """
        with self._ssl_lock:
            if eof:
                ended = self._decrypt_rest()
                if ended is not Records.MORE:
                    return ended
                self._incoming.write_eof()
            return self._decrypt_rest()

    @property
    def unread(self) -> int:
        """Bytes of plaintext decrypted with no reader there and not read yet."""
        return len(self._plain)

    @property
    def failure(self) -> Optional[ssl.SSLError]:
        """The first record-layer error, if the records failed."""
        return self._tls_failure

    # -- records out --------------------------------------------------------------------

    def encrypt(self, data: Readable) -> None:
        """Encrypt `data` into records, appended to `outq`.

        Raises:
            ssl.SSLError: the SSL object refuses to write (after a failure).
        """
        with self._ssl_lock:
            try:
                self._sslobj.write(data)
            finally:
                self._queue_outgoing()

    def close_notify(self) -> bytes:
        """Our close_notify, returned to be sent after every record in `outq`.

        Records received before it are decrypted first (module docstring).
        Empty if it was produced already.
        """
        with self._ssl_lock:
            return self._shut_down()

    def queue_close_notify(self) -> None:
        """Our close_notify, appended to `outq` after every record produced before it."""
        with self._ssl_lock:
            self.outq.append(self._shut_down())

    # -- under the lock -----------------------------------------------------------------

    def _pop_plain(self, buffer: Writable) -> int:
        count = min(len(buffer), len(self._plain))
        buffer[:count] = self._plain[:count]
        del self._plain[:count]
        return count

    def _queue_outgoing(self) -> None:
        """Move produced records to the send queue."""
        if self._outgoing.pending:
            self.outq.append(self._outgoing.read())

    def _shut_down(self) -> bytes:
        self._decrypt_rest()
        try:
            self._sslobj.unwrap()
        except ssl.SSLError:
            pass  # SSLWantReadError: the peer's close_notify is not awaited.
        # Every record produced before is in the queue already (producers queue
        # under this lock): what unwrap() produced is close_notify alone.
        return self._outgoing.read()

    def _decrypt_rest(self) -> Records:
        """Decrypt every record handed in into ``_plain``; where the records stand."""
        if self._tls_eof:
            return Records.CLOSED
        if self._tls_failure is not None:
            return Records.FAILED
        while True:
            try:
                chunk = self._sslobj.read(_DECRYPT_CHUNK)
            except ssl.SSLWantReadError:
                return Records.MORE
            except ssl.SSLZeroReturnError:
                return self._records_ended()
            except ssl.SSLError as exc:
                if self._accepts_as_eof(exc):
                    self._tls_eof = True
                    return Records.CLOSED
                self._tls_failure = exc
                return Records.FAILED
            finally:
                self._queue_outgoing()
            if not chunk:  # The ssl module reports a received close_notify as b"".
                return self._records_ended()
            self._plain += chunk

    def _records_ended(self) -> Records:
        """The SSL object says the records ended: CLOSED, or FAILED for a truncation."""
        return Records.CLOSED if self._end_of_records() is None else Records.FAILED

    def _end_of_records(self) -> Optional[ssl.SSLError]:
        """The SSL object says the stream ended: a close_notify, or a TCP EOF passed off as one.

        With ``OP_IGNORE_UNEXPECTED_EOF`` on the context (a user's context can
        have it; Python 3.9's ``create_default_context()`` sets it), OpenSSL
        reports a TCP EOF without close_notify as the end of the stream. The EOF
        is written only after every whole record was read, so an end reported
        once the EOF is in (``_incoming.eof``) cannot be a close_notify: it is
        the truncation, returned as the error it is.
        """
        if self._incoming.eof and not self._ignore_unexpected_eof:
            failure = ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
            self._tls_failure = failure
            return failure
        self._tls_eof = True
        return None

    def _accepts_as_eof(self, exc: ssl.SSLError) -> bool:
        """True for a TCP EOF without close_notify when told to take it as the end.

        Only with ``ignore_unexpected_eof`` (off by default: a truncation
        attack looks exactly like it).
        """
        return self._ignore_unexpected_eof and ragged_eof(exc)
