"""Read timeouts lose no data; write timeouts break the socket."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any, Callable

import pytest
import trustme

from pysock import BrokenSocketError, Socket, SocketTimeout, connect

from .peers.tcp import Server
from .peers.tls import client_context, server_context

TIMEOUT = 10


def in_two_parts(
    first: bytes, second: bytes, go: threading.Event
) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        try:
            conn.sendall(first)
            go.wait(TIMEOUT)
            conn.sendall(second)
            conn.recv(100)  # Stay open until the client is done.
        except (ConnectionResetError, BrokenPipeError):
            pass  # The client closed first (with bytes unread: a reset).

    return handler


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (lambda r: r.readline(), b"abcdef\n"),
        (lambda r: r.read(7), b"abcdef\n"),
        (lambda r: r.readexactly(7), b"abcdef\n"),
        (lambda r: r.readuntil(b"f\n"), b"abcdef\n"),
    ],
)
def test_read_timeout_keeps_the_data(
    serve: Callable[..., Server], method: Callable[..., bytes], expected: bytes
) -> None:
    go = threading.Event()
    server = serve(in_two_parts(b"abc", b"def\n", go))
    with connect(server.address, timeout=0.2) as sock:
        assert sock.readable.peek(1)[:3] == b"abc"  # the first part has arrived
        with pytest.raises(SocketTimeout) as info:
            method(sock.readable)
        assert isinstance(info.value, TimeoutError)
        assert not sock.closed.done()
        go.set()
        assert method(sock.readable) == expected
        sock.writable.write(b"still usable")


def test_read_timeout_then_read1(serve: Callable[..., Server]) -> None:
    go = threading.Event()
    server = serve(in_two_parts(b"abc", b"def", go))
    with connect(server.address, timeout=0.2) as sock:
        assert sock.readable.peek(1)[:3] == b"abc"
        with pytest.raises(SocketTimeout):
            sock.readable.readexactly(6)
        assert sock.readable.read1(2) == b"ab"
        go.set()
        assert sock.readable.readexactly(4) == b"cdef"


def test_write_timeout_breaks_the_socket(serve: Callable[..., Server]) -> None:
    release = threading.Event()
    server = serve(lambda conn: release.wait(TIMEOUT))
    with connect(server.address, timeout=0.2) as sock:
        with pytest.raises(SocketTimeout):
            sock.writable.write(b"x" * 64 * 1024 * 1024)
        error = sock.closed.exception(TIMEOUT)
        assert isinstance(error, BrokenSocketError)
        assert "unknown amount" in str(error)
        with pytest.raises(BrokenSocketError):
            sock.writable.write(b"more")
        with pytest.raises(BrokenSocketError):
            sock.readable.read(1)
    release.set()


def test_timeout_zero_is_non_blocking(serve: Callable[..., Server]) -> None:
    go = threading.Event()
    server = serve(in_two_parts(b"", b"late", go))
    with connect(server.address, timeout=0) as sock:
        sock.opened.result(TIMEOUT)
        with pytest.raises(SocketTimeout):
            sock.readable.read(4)
        go.set()


# -- Socket.timeout: readable and settable, like socket.settimeout() --------------------


def test_timeout_reads_as_given(echo_server: Server) -> None:
    with connect(echo_server.address, timeout=2.5) as sock:
        assert sock.timeout == 2.5
    with connect(echo_server.address) as sock:
        assert sock.timeout is None


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize(
    "method",
    [
        lambda r: r.readline(),
        lambda r: r.read(7),
        lambda r: r.readexactly(7),
        lambda r: r.readuntil(b"f\n"),
        lambda r: next(iter(r)),
    ],
    ids=["readline", "read", "readexactly", "readuntil", "iteration"],
)
def test_a_timeout_set_after_connect_stops_a_read(
    serve: Callable[..., Server],
    tls_pair: TlsPair,
    tls: bool,
    method: Callable[..., bytes],
) -> None:
    """A REPL user who opened without a timeout can still stop a read from waiting forever."""
    go = threading.Event()
    sock = _open(serve, tls_pair, tls, go)
    with sock:
        sock.opened.result(TIMEOUT)
        assert sock.readable.readline() == b"first\n"  # The fast path, no timeout yet.
        sock.timeout = 0.2
        assert sock.timeout == 0.2
        with pytest.raises(SocketTimeout):
            method(sock.readable)
        assert not sock.closed.done()
        sock.timeout = None  # Back to waiting forever; nothing was lost.
        go.set()
        assert sock.readable.readline() == b"abcdef\n"


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_timeout_set_after_connect_applies_to_writes(
    serve: Callable[..., Server], tls_pair: TlsPair, tls: bool
) -> None:
    release = threading.Event()
    if tls:
        server = serve(tls_pair.handler(lambda conn: release.wait(TIMEOUT)))
        sock = connect(server.address, secure_transport="on", tls_context=tls_pair.client)
    else:
        server = serve(lambda conn: release.wait(TIMEOUT))
        sock = connect(server.address)
    with sock:
        sock.writable.write(b"blocking mode still")
        sock.timeout = 0.2
        with pytest.raises(SocketTimeout):
            sock.writable.write(b"x" * 64 * 1024 * 1024)
        assert isinstance(sock.closed.exception(TIMEOUT), BrokenSocketError)
    release.set()


def test_a_timeout_can_be_lifted(serve: Callable[..., Server]) -> None:
    go = threading.Event()
    server = serve(in_two_parts(b"abc", b"def\n", go))
    with connect(server.address, timeout=0.2) as sock:
        with pytest.raises(SocketTimeout):
            sock.readable.readline()
        sock.timeout = None
        threading.Timer(0.3, go.set).start()  # Later than the old timeout.
        assert sock.readable.readline() == b"abcdef\n"
        sock.timeout = 0.2
        with pytest.raises(SocketTimeout):
            sock.readable.readline()


def test_a_blocked_read_keeps_its_deadline_and_the_next_one_takes_the_new(
    serve: Callable[..., Server],
) -> None:
    go = threading.Event()
    server = serve(in_two_parts(b"ab", b"c\n", go))
    with connect(server.address) as sock:
        assert sock.readable.read(2) == b"ab"
        sock.timeout = 0.1
        with pytest.raises(SocketTimeout):
            sock.readable.read(1)
        sock.timeout = 30.0
        go.set()
        assert sock.readable.readline() == b"c\n"


@pytest.mark.parametrize("value", ["1", True, [1]])
def test_a_timeout_of_the_wrong_type_is_refused(echo_server: Server, value: object) -> None:
    with connect(echo_server.address, timeout=1) as sock:
        with pytest.raises(TypeError, match="timeout"):
            sock.timeout = value  # type: ignore[assignment]
        assert sock.timeout == 1


@pytest.mark.parametrize("value", [-1, float("nan")])
def test_a_bad_timeout_value_is_refused(echo_server: Server, value: float) -> None:
    with connect(echo_server.address) as sock:
        with pytest.raises(ValueError, match="timeout"):
            sock.timeout = value
        assert sock.timeout is None


def test_start_tls_keeps_the_timeout_as_it_is_now(
    serve: Callable[..., Server], tls_pair: TlsPair
) -> None:
    go = threading.Event()

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"go\n")
        tls = tls_pair.server.wrap_socket(conn, server_side=True)
        tls.sendall(b"first\n")
        go.wait(TIMEOUT)
        try:
            tls.sendall(b"second\n")
            tls.recv(1)
        except OSError:
            pass
        tls.close()

    server = serve(handler)
    with connect(server.address, secure_transport="starttls", tls_context=tls_pair.client) as sock:
        assert sock.readable.readline() == b"go\n"
        sock.timeout = 0.2
        with sock.start_tls() as secure:
            assert secure.timeout == 0.2
            assert secure.readable.readline() == b"first\n"
            with pytest.raises(SocketTimeout):
                secure.readable.readline()
            go.set()
            secure.timeout = None
            assert secure.readable.readline() == b"second\n"


class TlsPair:
    """A server context and a verifying client context from one trustme CA."""

    def __init__(self, server: ssl.SSLContext, client: ssl.SSLContext) -> None:
        self.server = server
        self.client = client

    def handler(self, inner: Callable[[ssl.SSLSocket], object]) -> Callable[[socket.socket], None]:
        def handle(conn: socket.socket) -> None:
            with self.server.wrap_socket(conn, server_side=True) as tls:
                inner(tls)

        return handle


@pytest.fixture
def tls_pair(ca: trustme.CA, leaf: trustme.LeafCert) -> TlsPair:
    server = server_context(leaf, ssl.TLSVersion.TLSv1_3)
    return TlsPair(server, client_context(ca))


def _open(
    serve: Callable[..., Server], tls_pair: TlsPair, tls: bool, go: threading.Event
) -> Socket:
    def inner(conn: Any) -> None:
        try:
            conn.sendall(b"first\nabc")
            go.wait(TIMEOUT)
            conn.sendall(b"def\n")
            conn.recv(100)
        except OSError:
            pass

    if tls:
        server = serve(tls_pair.handler(inner))
        return connect(server.address, secure_transport="on", tls_context=tls_pair.client)
    server = serve(inner)
    return connect(server.address)
