"""The property tests' peers: echo and send-back servers, plain and TLS 1.3, on
127.0.0.1 and ::1.

The `peers` fixture is module-scoped (a function-scoped fixture would not reset
between hypothesis examples); a test module imports it. A client may fail,
time out or reset at any point: a peer then just ends.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator
from typing import Callable, Final

import pytest
import trustme

from ..helpers import drain, recv_exactly
from .tcp import Server, echo
from .tls import client_context, quiet_tls_echo, server_context

WAIT: Final = 10.0  # the bound of every wait for a peer or a future


def _quiet(handler: Callable[[socket.socket], None]) -> Callable[[socket.socket], None]:
    """A client may fail, time out or reset at any point: the peer just ends."""

    def run(conn: socket.socket) -> None:
        try:
            handler(conn)
        except (OSError, ssl.SSLError):
            pass

    return run


def _send_back(conn: socket.socket) -> None:
    """Receive a length-prefixed payload, send it back, then EOF; wait for the client's end."""
    (size,) = struct.unpack("!I", recv_exactly(conn, 4))
    conn.sendall(recv_exactly(conn, size))
    conn.shutdown(socket.SHUT_WR)
    drain(conn)


def _tls_send_back(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            (size,) = struct.unpack("!I", recv_exactly(tls, 4))
            tls.sendall(recv_exactly(tls, size))
            with tls.unwrap() as raw:  # close_notify, then the client's
                drain(raw)

    return handler


class Peers:
    """A module's servers: echo and send-back, plain and TLS 1.3, on 127.0.0.1 and ::1."""

    def __init__(self, ca: trustme.CA, leaf: trustme.LeafCert) -> None:
        self.trusted = client_context(ca)
        self.untrusted = client_context(trustme.CA())
        tls = server_context(leaf, ssl.TLSVersion.TLSv1_3)
        self.servers: dict[tuple[str, bool], Server] = {}
        for host in ("127.0.0.1", "::1"):
            self.servers[host, False] = Server(_quiet(echo), host)
            self.servers[host, True] = Server(quiet_tls_echo(tls), host)
        self.send_back = Server(_quiet(_send_back))
        self.tls_send_back = Server(_quiet(_tls_send_back(tls)))

    @property
    def contexts(self) -> list[ssl.SSLContext]:
        return [self.trusted, self.untrusted]

    def port_for(self, transport: str) -> Callable[[str], int]:
        def port_of(host: str) -> int:
            family = "::1" if host == "::1" else "127.0.0.1"
            return self.servers[family, transport == "on"].port

        return port_of

    def stop(self) -> None:
        for server in [*self.servers.values(), self.send_back, self.tls_send_back]:
            server.stop()


@pytest.fixture(scope="module")
def peers(ca: trustme.CA, leaf: trustme.LeafCert) -> Iterator[Peers]:
    if not socket.has_ipv6:
        pytest.skip("IPv6 loopback ::1 is not available on this machine")
    peers = Peers(ca, leaf)
    yield peers
    peers.stop()
