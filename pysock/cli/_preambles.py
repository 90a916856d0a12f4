"""The plaintext preambles that ask a server for TLS (``--starttls`` of the CLI).

Each function speaks one protocol's own STARTTLS exchange on a
``secure_transport="starttls"`` socket and returns once the server has said
"go ahead", so that the caller's next step is `Socket.start_tls()`. The lines
exchanged are reported through `say` (the CLI prints them to stderr). A
refusal is a `StartTlsError` naming what the server answered, escaped.

Every reply is read with ``readline(limit)``: a server cannot make a preamble
buffer more than `_LINE_LIMIT` bytes per line. pysock's own check then refuses
the upgrade if the server sent anything after its go-ahead (CVE-2011-0411).

A ``timeout`` bounds the exchange as a whole. The socket's own per-call
timeout bounds each read, but a server that trickles a ``250-`` line every
second keeps every read short and the exchange endless; so a watchdog thread
closes the socket when the time is up, which wakes the blocked read at once.
"""

from __future__ import annotations

import struct
import threading
from typing import Callable, Final, Optional

from .. import Socket
from ..errors import (
    IncompleteReadError,
    LimitOverrunError,
    PysockError,
    SocketTimeout,
    StartTlsError,
)
from ._report import escape

__all__ = ["PROTOCOLS", "negotiate"]

_LINE_LIMIT: Final = 8192  # RFC 5321 section 4.5.3.1.5 allows 512; be generous, not unbounded.
_XMPP_LIMIT: Final = 65536  # Stream features are one XML document, usually < 2 KiB.
# PostgreSQL's SSLRequest: length 8, then the magic code 1234.5679 (protocol docs, 55.2.10).
_PG_SSL_REQUEST: Final = struct.pack("!II", 8, 80877103)

Say = Callable[[str], None]


def negotiate(
    sock: Socket, protocol: str, host: str, say: Say, timeout: Optional[float] = None
) -> None:
    """Run `protocol`'s STARTTLS preamble on `sock`, within `timeout` seconds as a whole.

    Args:
        sock: an open ``secure_transport="starttls"`` socket.
        protocol: a key of `PROTOCOLS`.
        host: the server's name, for the protocols that send it (XMPP's ``to``).
        say: called with each line exchanged, escaped.
        timeout: seconds for the whole exchange; None waits as long as the socket's
            own ``timeout`` lets each call wait.

    Raises:
        StartTlsError: the server refused TLS, closed the connection, or does not
            speak `protocol`; the socket is left open for the caller to close.
        SocketTimeout: `timeout` passed, or one call waited the socket's
            ``timeout``; the socket may be closed.
    """
    watchdog = _Watchdog(timeout, sock.close)
    try:
        _exchange(sock, protocol, host, say)
    except PysockError as exc:
        # The watchdog's close() shows as SocketClosedError in the blocked call.
        if not (watchdog.stop() or (isinstance(exc, SocketTimeout) and timeout is not None)):
            raise
    else:
        if not watchdog.stop():
            return
    finally:
        watchdog.stop()
    raise SocketTimeout(
        f"{protocol}: the STARTTLS exchange with {_peer(sock)} timed out after {timeout:g}s"
    )


def _exchange(sock: Socket, protocol: str, host: str, say: Say) -> None:
    try:
        PROTOCOLS[protocol](sock, host, say)
    except IncompleteReadError as exc:
        raise StartTlsError(
            f"{protocol}: the server closed the connection before agreeing to TLS"
        ) from exc
    except LimitOverrunError as exc:  # readuntil() met its limit: this is not the protocol.
        raise StartTlsError(f"{protocol}: the server's answer is not {protocol}: {exc}") from exc


class _Watchdog:
    """Runs `action` in a timer thread after `seconds`, unless stopped first."""

    def __init__(self, seconds: Optional[float], action: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._stopped = self._fired = False
        self._action = action
        self._timer: Optional[threading.Timer] = None
        if seconds is not None:
            self._timer = threading.Timer(seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:  # Once stop() has returned False, the action never runs.
            if self._stopped:
                return
            self._fired = True
        self._action()

    def stop(self) -> bool:
        """Stop it (idempotent); True if the action ran or is running."""
        with self._lock:
            self._stopped = True
            fired = self._fired
        if self._timer is not None:
            self._timer.cancel()
        return fired


def _peer(sock: Socket) -> str:
    opened = sock.opened
    if opened.done() and opened.exception() is None:
        return opened.result().remote_address
    return "the server"


def _send(sock: Socket, line: bytes, say: Say) -> None:
    say(f"-> {_show(line)}")
    sock.writable.write(line)


def _reply(sock: Socket, say: Say) -> bytes:
    line = sock.readable.readline(_LINE_LIMIT)
    if not line:
        raise StartTlsError("the server closed the connection before agreeing to TLS")
    say(f"<- {_show(line)}")
    return line


def _multiline(sock: Socket, say: Say) -> bytes:
    """An SMTP/FTP reply: ``250-...`` lines up to the one with a space after the code."""
    while True:
        line = _reply(sock, say)
        if len(line) < 4 or line[3:4] != b"-":
            return line


def _expect(protocol: str, line: bytes, prefix: bytes) -> None:
    if not line.startswith(prefix):
        raise StartTlsError(f"{protocol}: the server refused TLS: {_show(line)}")


def _smtp(sock: Socket, host: str, say: Say) -> None:  # RFC 3207
    _expect("smtp", _multiline(sock, say), b"220")
    _send(sock, b"EHLO pysock\r\n", say)
    _expect("smtp", _multiline(sock, say), b"250")
    _send(sock, b"STARTTLS\r\n", say)
    _expect("smtp", _multiline(sock, say), b"220")


def _postgres(sock: Socket, host: str, say: Say) -> None:  # PostgreSQL protocol 55.2.10
    say("-> SSLRequest")
    sock.writable.write(_PG_SSL_REQUEST)
    answer = sock.readable.readexactly(1)
    say(f"<- {_show(answer)}")
    if answer != b"S":
        raise StartTlsError(f"postgres: the server refused TLS (answered {_show(answer)})")


def _imap(sock: Socket, host: str, say: Say) -> None:  # RFC 3501 section 6.2.1
    _expect("imap", _reply(sock, say), b"* OK")
    _send(sock, b"a001 STARTTLS\r\n", say)
    while True:
        line = _reply(sock, say)
        if not line.startswith(b"* "):  # Untagged lines may come first.
            _expect("imap", line, b"a001 OK")
            return


def _pop3(sock: Socket, host: str, say: Say) -> None:  # RFC 2595 section 4
    _expect("pop3", _reply(sock, say), b"+OK")
    _send(sock, b"STLS\r\n", say)
    _expect("pop3", _reply(sock, say), b"+OK")


def _ftp(sock: Socket, host: str, say: Say) -> None:  # RFC 4217 section 4
    _expect("ftp", _multiline(sock, say), b"220")
    _send(sock, b"AUTH TLS\r\n", say)
    _expect("ftp", _multiline(sock, say), b"234")


def _xmpp(sock: Socket, host: str, say: Say) -> None:  # RFC 6120 section 5.4
    header = (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='http://etherx.jabber.org/streams' to='{_xml_attr(host)}' "
        "version='1.0'>"
    ).encode()
    _send(sock, header, say)
    features = sock.readable.readuntil(b"</stream:features>", _XMPP_LIMIT)
    say(f"<- {_show(features)}")
    if b"urn:ietf:params:xml:ns:xmpp-tls" not in features:
        raise StartTlsError("xmpp: the server does not offer STARTTLS")
    _send(sock, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", say)
    answer = sock.readable.readuntil(b">", _LINE_LIMIT)
    say(f"<- {_show(answer)}")
    _expect("xmpp", answer.lstrip(), b"<proceed")


PROTOCOLS: Final[dict[str, Callable[[Socket, str, Say], None]]] = {
    "smtp": _smtp,
    "postgres": _postgres,
    "imap": _imap,
    "pop3": _pop3,
    "ftp": _ftp,
    "xmpp": _xmpp,
}


def _show(data: bytes) -> str:
    """Peer bytes for a terminal: ASCII text as is, anything else escaped."""
    return escape(data.rstrip(b"\r\n").decode("ascii", "backslashreplace"))


def _xml_attr(text: str) -> str:
    return text.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;")
