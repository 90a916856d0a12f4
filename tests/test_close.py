"""close(): idempotent, prompt, wakes blocked callers; context manager; repr."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

import pytest

from pysock import SocketClosedError, connect

from .peers.tcp import Blackhole, Server

TIMEOUT = 10


def silent(conn: socket.socket) -> None:
    """Accept and say nothing until the client goes away."""
    while conn.recv(65536):
        pass


def sink_that_never_reads(release: threading.Event) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        release.wait(TIMEOUT)

    return handler


def run_blocked(call: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive(), "the call should be blocked"
    return thread, errors


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_close_wakes_a_blocked_read(serve: Callable[..., Server], timeout: float) -> None:
    server = serve(silent)
    sock = connect(server.address, timeout=timeout)
    thread, errors = run_blocked(sock.readable.read)
    started = time.monotonic()
    sock.close()
    thread.join(TIMEOUT)
    assert not thread.is_alive() and time.monotonic() - started < 2
    assert len(errors) == 1 and isinstance(errors[0], SocketClosedError)
    assert sock.closed.result(0) is None


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_close_wakes_a_blocked_write(serve: Callable[..., Server], timeout: float) -> None:
    release = threading.Event()
    server = serve(sink_that_never_reads(release))
    sock = connect(server.address, timeout=timeout)
    thread, errors = run_blocked(lambda: sock.writable.write(b"x" * 64 * 1024 * 1024))
    sock.close()
    thread.join(TIMEOUT)
    release.set()
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], SocketClosedError)


def test_close_wakes_a_read_waiting_for_the_open(blackhole: Blackhole) -> None:
    sock = connect(blackhole.address)
    thread, errors = run_blocked(lambda: sock.readable.read(1))
    sock.close()
    thread.join(TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], SocketClosedError)


def test_close_is_idempotent_and_completes_closed(echo_server: Server) -> None:
    sock = connect(echo_server.address)
    sock.opened.result(TIMEOUT)
    sock.close()
    assert sock.closed.done() and sock.closed.result() is None
    sock.close()  # idempotent
    for call in (
        lambda: sock.readable.read(1),
        lambda: sock.readable.readline(),
        lambda: sock.writable.write(b"x"),
        lambda: sock.writable.write(b""),
    ):
        with pytest.raises(SocketClosedError):
            call()
    assert repr(sock) == f"<pysock.Socket {echo_server.address} off closed>"


def test_close_after_reads_drops_buffered_data(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: conn.sendall(b"line one\nline two\n"))
    sock = connect(server.address)
    assert sock.readable.readline() == b"line one\n"
    sock.close()
    with pytest.raises(SocketClosedError):
        sock.readable.readline()


def test_context_manager_closes(echo_server: Server) -> None:
    with connect(echo_server.address) as sock:
        assert repr(sock) in (
            f"<pysock.Socket {echo_server.address} off open>",
            f"<pysock.Socket {echo_server.address} off connecting>",
        )
        assert sock.secure_transport == "off" and sock.upgraded is False and sock.tls is None
    assert sock.closed.done()


def test_close_sends_eof_to_the_peer(serve: Callable[..., Server]) -> None:
    seen = threading.Event()

    def handler(conn: socket.socket) -> None:
        if conn.recv(10) == b"":
            seen.set()

    server = serve(handler)
    sock = connect(server.address)
    sock.opened.result(TIMEOUT)
    sock.close()
    assert seen.wait(TIMEOUT)
