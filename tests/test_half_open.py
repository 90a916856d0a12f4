"""allow_half_open, and `closed` completing on an idle socket (fed by the selector thread)."""

from __future__ import annotations

import socket
import threading
from typing import Callable

import pytest

from pysock import BrokenSocketError, connect

from .helpers import LINGER_ZERO as _LINGER_ZERO
from .helpers import recv_all
from .peers.tcp import Server

TIMEOUT = 10


def say_then_half_close(words: bytes, received: list[bytes]) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        conn.sendall(words)
        conn.shutdown(socket.SHUT_WR)
        received.append(recv_all(conn))

    return handler


def test_peer_eof_closes_an_idle_socket_by_default(serve: Callable[..., Server]) -> None:
    received: list[bytes] = []
    server = serve(say_then_half_close(b"bye", received))
    with connect(server.address) as sock:
        # Nobody reads: the selector thread sees the FIN and completes closed.
        assert sock.closed.result(TIMEOUT) is None
        # The bytes sent before the EOF are still readable, then b"" every time.
        assert sock.readable.read() == b"bye"
        assert sock.readable.read() == b""
        with pytest.raises(BrokenSocketError, match="allow_half_open=False"):
            sock.writable.write(b"too late")
    server.stop()
    assert received == [b""]  # pysock closed its write side in answer to the EOF


def test_allow_half_open_keeps_writing_after_peer_eof(serve: Callable[..., Server]) -> None:
    received: list[bytes] = []
    server = serve(say_then_half_close(b"your turn", received))
    with connect(server.address, allow_half_open=True) as sock:
        assert sock.readable.read() == b"your turn"
        assert not sock.closed.done()
        sock.writable.write(b"my answer")
        assert not sock.closed.done()
        sock.writable.close()
        assert sock.closed.result(TIMEOUT) is None
    server.stop()
    assert received == [b"my answer"]


def test_allow_half_open_idle_socket_closes_when_both_sides_are_done(
    serve: Callable[..., Server],
) -> None:
    received: list[bytes] = []
    server = serve(say_then_half_close(b"", received))
    with connect(server.address, allow_half_open=True) as sock:
        sock.opened.result(TIMEOUT)
        # The peer's EOF alone does not end a half-open connection.
        assert not sock.closed.done()
        threading.Event().wait(0.2)
        assert not sock.closed.done()
        sock.writable.close()
        assert sock.closed.result(TIMEOUT) is None


def test_our_half_close_then_peer_eof_on_an_idle_socket(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: conn.sendall(b"answer " + recv_all(conn)))
    with connect(server.address) as sock:
        sock.writable.write(b"question")
        sock.writable.close()
        assert sock.closed.result(TIMEOUT) is None  # nobody read yet
        assert sock.readable.read() == b"answer question"


@pytest.mark.parametrize("allow_half_open", [False, True])
def test_peer_reset_fails_closed_on_an_idle_socket(
    serve: Callable[..., Server], allow_half_open: bool
) -> None:
    go = threading.Event()

    def reset(conn: socket.socket) -> None:
        go.wait(TIMEOUT)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)

    server = serve(reset)
    with connect(server.address, allow_half_open=allow_half_open) as sock:
        sock.opened.result(TIMEOUT)
        go.set()
        error = sock.closed.exception(TIMEOUT)
        assert isinstance(error, BrokenSocketError) and isinstance(error, ConnectionError)
        assert server.address in str(error)
        with pytest.raises(BrokenSocketError):
            sock.readable.read(1)


def test_reset_after_peer_eof_with_half_open(serve: Callable[..., Server]) -> None:
    go = threading.Event()

    def eof_then_reset(conn: socket.socket) -> None:
        conn.shutdown(socket.SHUT_WR)
        go.wait(TIMEOUT)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)

    server = serve(eof_then_reset)
    with connect(server.address, allow_half_open=True) as sock:
        assert sock.readable.read() == b""
        go.set()
        assert isinstance(sock.closed.exception(TIMEOUT), BrokenSocketError)
