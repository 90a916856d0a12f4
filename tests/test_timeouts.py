"""Read timeouts lose no data; write timeouts break the socket."""

from __future__ import annotations

import socket
import threading
from typing import Callable

import pytest

from pysock import BrokenSocketError, SocketTimeout, connect

from ._servers import Server

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
