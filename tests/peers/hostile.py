"""Hostile peers for the security tests (tests/test_security_*.py).

What a hostile peer puts wherever it can reach (`NASTY`), the plaintext that
must never reach the wire (`SECRET`), peers that answer a ClientHello with
anything but TLS, the server's side of a STARTTLS preamble, and the check
that an error message holds none of it.
"""

from __future__ import annotations

import socket
from typing import Callable, Final, Optional

from pysock import Socket, StartTlsError

from ..helpers import recv_all_or_reset, recv_line

# The bound of every wait for a peer or a future.
WAIT: Final = 10.0
SECRET: Final = b"SECRET-PLAINTEXT-7f3a9c"
# What a hostile peer puts wherever it can: ANSI escapes, newlines, NUL, BEL,
# invalid UTF-8, a right-to-left override.
NASTY: Final = b"\x1b[2J\x1b[31mEVIL\r\nInjected: line\x00\x07\xff\xfe\xc3\x28\xe2\x80\xae!\n"
GREETING: Final = b"220 ready\r\n"
GO_AHEAD: Final = b"220 go ahead\r\n"


def preamble(conn: socket.socket) -> None:
    """The server's plaintext part of a STARTTLS exchange."""
    conn.sendall(GREETING)
    assert recv_line(conn) == b"STARTTLS\r\n"
    conn.sendall(GO_AHEAD)


def negotiate(sock: Socket) -> None:
    """The client's part of `preamble`."""
    assert sock.readable.readline() == GREETING
    sock.writable.write(b"STARTTLS\r\n")
    assert sock.readable.readline() == GO_AHEAD


def first_record(conn: socket.socket, raw: bytearray) -> None:
    """Receive until one whole TLS record (the ClientHello) arrived."""
    while len(raw) < 5 or len(raw) < 5 + int.from_bytes(raw[3:5], "big"):
        data = conn.recv(65536)
        if not data:
            return
        raw += data


def answering(reply: bytes) -> Callable[[socket.socket, bytearray], None]:
    """A peer that answers the ClientHello with `reply` (not TLS), then ends."""

    def peer(conn: socket.socket, raw: bytearray) -> None:
        first_record(conn, raw)
        try:
            conn.sendall(reply)
            # The client may already have read enough of `reply` to fail, and
            # reset the connection: a shutdown then finds it gone (ENOTCONN).
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raw += recv_all_or_reset(conn)

    return peer


def discarding(
    peer: Callable[[socket.socket, bytearray], None],
) -> Callable[[socket.socket], None]:
    """A `Server` handler running `peer`, its recording dropped."""
    return lambda conn: peer(conn, bytearray())


def assert_clean_message(error: BaseException, address: Optional[str] = None) -> None:
    """`error`'s message holds no control character and none of the peer's bytes.

    A STARTTLS refusal is the exception: it shows the unread bytes, escaped and
    cut short, so that a user who merely forgot to read the server's reply
    recognises it. The excerpt is checked for that, and the rest as any message.
    """
    text = str(error)
    if isinstance(error, StartTlsError) and "waiting unread: " in text:
        before, _, rest = text.partition("waiting unread: ")
        excerpt, _, after = rest.partition(". Either it is")
        assert excerpt.isascii() and excerpt.isprintable(), excerpt
        assert len(excerpt) <= 4 * 60 + 5, excerpt  # 60 bytes at most, each escaped
        text = before + after
    bad = [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
    assert not bad, f"control characters {bad!r} in {text!r}"
    assert "\u202e" not in text and "\ufffd" not in text, text
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), text
    assert "EVIL" not in text and "Injected" not in text, text
    assert SECRET.decode() not in text, text
    if address is not None:
        assert address in text, f"{text!r} does not name {address}"
