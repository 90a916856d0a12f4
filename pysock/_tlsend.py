"""How an open TLS connection's records end: on an idle socket, after a break, by an alert.

Theory of operation
===================

Plain TCP learns of the peer's end from the socket alone; TLS must decrypt
first. When the hang-up set reports a FIN or a reset on a socket nobody reads
(`pysock._tls.TlsConnection.on_hangup_in_loop`), the selector thread drains
what the kernel holds into the record layer and decrypts it
(`examine_hangup_in_loop`): a close_notify among those records ends the read
side cleanly even if a reset follows it (the peer refusing our own
close_notify, say), and a TCP EOF without one breaks the connection. Only
then does it read ``SO_ERROR``. It takes the reader's ``_sock_rlock`` without
blocking: a reader inside ``recv()`` meets the end itself, unless it is just
leaving, so the loop looks again shortly (``_rewatch_later``).

A connection that broke while the peer's last records still wait in the
kernel (a write timeout, a reset a writer met) delivers them before the
error: `decrypt_after_break` decrypts them for the next read, without
waiting (the socket is shut down by then).

A failed handshake is described by `handshake_reason` (a certificate we
refused, a server that answers in plaintext). An SSL error on the open
connection (`failed_by`) is a `BrokenSocketError`,
unless it is the peer refusing the handshake's outcome with an alert: over
TLS 1.3 the server checks a client certificate after the client has
finished, so a missing or refused one comes as the first record, and that is
a `TLSError`.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import TYPE_CHECKING, Final, Optional

from ._platform import MSG_DONTWAIT
from ._records import Records, ragged_eof
from ._state import State
from .errors import PysockError, TLSError

if TYPE_CHECKING:
    from ._tls import TlsConnection

__all__ = [
    "decrypt_after_break",
    "examine_hangup_in_loop",
    "failed_by",
    "handshake_reason",
]

# One receive of ciphertext from an idle socket: up to eight full TLS records.
_RECEIVE: Final = 128 * 1024


def examine_hangup_in_loop(conn: TlsConnection) -> None:
    """The selector thread decrypts an idle socket's last records, then judges its end."""
    sock = conn.sock
    if sock is None or conn.state is not State.OPEN:
        return
    if not conn._sock_rlock.acquire(blocking=False):
        # A reader is inside recv and meets the FIN or reset itself, unless it
        # is just leaving: look again shortly.
        conn._rewatch_later()
        return
    try:
        records, error = drain_idle_socket(conn, sock)
        if error is None:
            error = conn._reset_error  # Taken by the hang-up check's peek, if any.
        if error is None:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            error = OSError(code, os.strerror(code)) if code else None
    except OSError as exc:  # Closed under us by close(): nothing left to report.
        records, error = Records.MORE, exc
    finally:
        conn._sock_rlock.release()
    if records is Records.FAILED:
        failure = conn._records.failure
        assert failure is not None
        failed_by(conn, failure)
    elif records is Records.CLOSED:
        conn.on_peer_eof()
        if conn.state is State.OPEN:  # allow_half_open: our write side is still open.
            if error is not None:
                conn._broken_by(error)
            else:
                conn._rewatch_in_loop()
    elif error is not None:
        conn._broken_by(error)
    else:
        conn._rewatch_in_loop()


def drain_idle_socket(
    conn: TlsConnection, sock: socket.socket
) -> tuple[Records, Optional[OSError]]:
    """Hand the record layer what the kernel holds and decrypt it. Holds ``_sock_rlock``.

    Returns ``(records, error)``: where the records stand (`Records`), and
    the OSError (a reset) that ended the byte stream, if any.
    """
    error: Optional[OSError] = None
    at_fin = False
    while True:
        try:
            data = sock.recv(_RECEIVE, MSG_DONTWAIT)
        except BlockingIOError:
            break
        except OSError as exc:
            error = exc
            break
        if not data:
            at_fin = True
            break
        conn._records.feed(data)
    # At the FIN every whole record is read before the EOF is written, so a
    # close_notify among them is seen as one (see `pysock._records`).
    return conn._records.decrypt_all(eof=at_fin), error


def decrypt_after_break(conn: TlsConnection) -> None:
    """Decrypt the records the kernel still holds for us after the connection broke.

    They are the peer's data, as plain TCP's `_read_after_break` reads them. A
    partial last record stays undecrypted: it cannot be authenticated.
    """
    sock = conn.sock
    if sock is None or conn.state is not State.BROKEN:
        return
    with conn._sock_rlock:
        try:
            drain_idle_socket(conn, sock)
        except OSError:
            pass  # Closed meanwhile by close(): nothing left to read.


def failed_by(conn: TlsConnection, exc: BaseException) -> PysockError:
    """An SSL error on the open connection: fail it, return the error to raise."""
    reason = str(getattr(exc, "reason", "") or "")
    if not ("ALERT" in reason and reason.endswith(_CERTIFICATE_ALERTS)):
        return conn._broken_by(exc, _ragged_message(conn, exc))
    refusal = TLSError(f"TLS with {conn.endpoint} refused by the peer: {reason}")
    return conn._fail_with(refusal, exc, PysockError)


def _ragged_message(conn: TlsConnection, exc: BaseException) -> str:
    if ragged_eof(exc):
        return (
            f"TLS connection to {conn.endpoint} ended without close_notify "
            "(a truncation attack looks the same; for a server known to end so, "
            "connect with ignore_unexpected_eof=True)"
        )
    return f"TLS connection to {conn.endpoint} broken: {exc}"


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


# OpenSSL's reasons when the first bytes of the server's answer are not a TLS
# record: a plaintext greeting ("220 ...", "HTTP/1.1 400") read as a header.
_PLAINTEXT_ANSWERS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)


def handshake_reason(exc: BaseException) -> str:
    """Why a handshake failed, in words a user can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLEOFError):
        return "the peer closed the connection during the handshake"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted in the middle of a step"
    reason = str(getattr(exc, "reason", "") or "")
    if reason in _PLAINTEXT_ANSWERS:
        return (
            f"the server seems to answer in plaintext ({reason}): this port does "
            "not seem to speak TLS from the first byte (for a protocol that upgrades "
            "later, such as SMTP on 587 or IMAP on 143, use secure_transport='starttls')"
        )
    return str(reason or getattr(exc, "strerror", None) or exc)
