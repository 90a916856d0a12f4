"""TLS peers: trustme certificates and stdlib TLS handlers for `Server`."""

from __future__ import annotations

import socket
import ssl

import trustme

from ..helpers import recv_all


def server_context(leaf: trustme.LeafCert, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    context.minimum_version = context.maximum_version = version
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()  # On Python 3.9, OP_IGNORE_UNEXPECTED_EOF set.
    ca.configure_trust(context)
    return context


def wrap(conn: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
    """Server side of a handshake on an accepted socket (blocking, with its timeout)."""
    return context.wrap_socket(conn, server_side=True)


def close_cleanly(tls: ssl.SSLSocket) -> None:
    """Send close_notify without waiting for the peer's, then close TCP (as nginx does)."""
    tls.settimeout(0)
    try:
        tls.unwrap()
    except (ssl.SSLWantReadError, ssl.SSLError, OSError):
        pass  # SSLWantReadError: close_notify sent, the peer's is not awaited.
    tls.close()


def tls_echo(context: ssl.SSLContext) -> object:
    def handler(conn: socket.socket) -> None:
        tls = wrap(conn, context)
        while data := tls.recv(65536):
            tls.sendall(data)
        close_cleanly(tls)

    return handler


class RecordingTlsServerSide:
    """A TLS server over memory BIOs that records every raw byte the client sends.

    Used to prove that nothing but TLS records reach the wire when the client's
    handshake fails.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.raw = bytearray()
        self.handshake_error: BaseException | None = None

    def __call__(self, conn: socket.socket) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = self.context.wrap_bio(incoming, outgoing, server_side=True)
        while self.handshake_error is None:
            try:
                sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                self.handshake_error = exc
            conn.sendall(outgoing.read())
            data = conn.recv(65536)
            if not data:
                return
            self.raw += data
            incoming.write(data)
        conn.sendall(outgoing.read())
        self.raw += recv_all(conn)


def tls_record_types(raw: bytes | bytearray) -> list[int]:
    """The content type of each TLS record in `raw`; fails unless `raw` is whole records."""
    types = []
    offset = 0
    while offset < len(raw):
        header = raw[offset : offset + 5]
        assert len(header) == 5, f"a truncated record header at byte {offset}"
        content_type, major, length = header[0], header[1], int.from_bytes(header[3:5], "big")
        assert content_type in (20, 21, 22, 23) and major == 3, f"not TLS at byte {offset}"
        assert offset + 5 + length <= len(raw), f"a truncated record at byte {offset}"
        types.append(content_type)
        offset += 5 + length
    return types
