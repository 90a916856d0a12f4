"""Fault injection: a peer that resets the connection, before open, mid-handshake,
mid-read, mid-write and idle (the faults and what each test asserts:
tests/peers/faults.py; the promises: docs/reliability.md)."""

from __future__ import annotations

import errno
import socket
import ssl
import threading
from typing import Callable, Optional

import pytest

from pysock import BrokenSocketError, ConnectError, TLSError

from .helpers import WAKE, drain, reset, same_error, wait_until
from .peers.faults import BIG_WRITE, Call, Transport, raises_same, wait

# Fixtures, taken by name: the redundant alias tells linters they are used.
from .peers.faults import tls as tls
from .peers.faults import transport as transport
from .peers.tcp import Server

pytestmark = pytest.mark.fault


# -- peer reset --------------------------------------------------------------------------


def test_reset_before_open_is_a_connect_error(transport: Transport, unused_port: int) -> None:
    # The kernel answers the SYN with RST: the reset before open. TLS never starts.
    address = f"127.0.0.1:{unused_port}"
    with transport.connect(address) as sock:
        error = sock.opened.exception(WAKE)
        assert isinstance(error, ConnectError)
        assert error.errno == errno.ECONNREFUSED and isinstance(error.__cause__, OSError)
        assert address in str(error)
        assert same_error(sock.closed.exception(WAKE), error)
        raises_same(lambda: sock.readable.read(1), error)
        raises_same(lambda: sock.writable.write(b"x"), error)


@pytest.mark.parametrize("sent", ["nothing", "half a flight"])
@pytest.mark.parametrize("ending", ["fin", "reset"])
def test_hang_up_during_the_handshake_is_a_tls_error(
    serve: Callable[..., Server], tls: Transport, sent: str, ending: str
) -> None:
    # A FIN or reset mid-handshake; chosen: TLSError ("handshake failed"), since the
    # connection never opened, with the OS or ssl error as cause.
    go = threading.Event()

    def peer(conn: socket.socket) -> None:
        channel = tls.tls_channel(conn, handshake=False)
        flight = channel.first_flight()  # the ClientHello has arrived
        if sent == "half a flight":
            conn.sendall(flight[: len(flight) // 2])
        wait(go)
        if ending == "reset":
            reset(conn)
        else:
            conn.shutdown(socket.SHUT_WR)
            drain(conn)

    server = serve(peer)
    with tls.connect(server.address) as sock:
        reader = Call(lambda: sock.readable.read(1), "reader")
        writer = Call(lambda: sock.writable.write(b"request"), "writer")
        reader.assert_blocked()
        writer.assert_blocked(0)
        go.set()
        error = reader.raised(TLSError)
        assert same_error(writer.raised(TLSError), error)
        assert server.address in str(error)
        assert isinstance(error.__cause__, ssl.SSLError if ending == "fin" else OSError)
        assert same_error(sock.opened.exception(0), error)
        assert same_error(sock.closed.exception(WAKE), error)


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_reset_wakes_a_blocked_read(
    serve: Callable[..., Server], transport: Transport, timeout: Optional[float]
) -> None:
    go = threading.Event()

    def peer(conn: socket.socket) -> None:
        transport.channel(conn)
        wait(go)
        reset(conn)

    server = serve(peer)
    with transport.connect(server.address, timeout=timeout) as sock:
        sock.opened.result(WAKE)
        reader = Call(lambda: sock.readable.read1(100), "reader")
        reader.assert_blocked()
        go.set()
        error = reader.raised(BrokenSocketError)
        assert server.address in str(error)
        assert same_error(sock.closed.exception(WAKE), error)
        raises_same(lambda: sock.readable.read1(100), error)
        raises_same(lambda: sock.writable.write(b"x"), error)


# A reset's error is reported once (to SO_ERROR or to recv()), so the selector
# thread and a blocked reader race for it; the loser once took the reset for a FIN
# (a clean EOF, or `closed` None) in one round in four to one in forty. Twenty
# rounds catch a one-in-four race almost surely, in about a second.
RESET_ROUNDS = 20


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_reset_during_a_blocked_tcp_read_is_never_a_clean_end(
    serve: Callable[..., Server], timeout: Optional[float]
) -> None:
    resets: list[threading.Event] = []

    def peer(conn: socket.socket) -> None:
        go = threading.Event()
        resets.append(go)
        wait(go)
        reset(conn)

    server = serve(peer)

    def one_round(number: int) -> None:
        with Transport("tcp").connect(server.address, timeout=timeout) as sock:
            sock.opened.result(WAKE)
            wait_until(lambda: len(resets) > number, "the peer to accept")
            reader = Call(lambda: sock.readable.read1(100), "reader")
            reader.assert_blocked(0.02)
            resets[number].set()
            error = reader.raised(BrokenSocketError)  # not b"": a reset is no clean EOF
            assert same_error(sock.closed.exception(WAKE), error), f"round {number}"

    for number in range(RESET_ROUNDS):
        one_round(number)


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_reset_wakes_a_blocked_write(
    serve: Callable[..., Server], transport: Transport, timeout: Optional[float]
) -> None:
    go = threading.Event()

    def peer(conn: socket.socket) -> None:
        transport.channel(conn)  # then never reads
        wait(go)
        reset(conn)

    server = serve(peer)
    payload = bytes(BIG_WRITE)
    with transport.connect(server.address, timeout=timeout) as sock:
        sock.opened.result(WAKE)
        writer = Call(lambda: sock.writable.write(payload), "writer")
        writer.assert_blocked()
        go.set()
        error = writer.raised(BrokenSocketError)
        assert server.address in str(error)
        assert same_error(sock.closed.exception(WAKE), error)
        raises_same(lambda: sock.readable.read1(100), error)
        raises_same(lambda: sock.writable.write(b"x"), error)


@pytest.mark.parametrize("allow_half_open", [False, True])
def test_reset_of_an_idle_socket_fails_closed(
    serve: Callable[..., Server], transport: Transport, allow_half_open: bool
) -> None:
    go = threading.Event()

    def peer(conn: socket.socket) -> None:
        transport.channel(conn)
        wait(go)
        reset(conn)

    server = serve(peer)
    with transport.connect(server.address, allow_half_open=allow_half_open) as sock:
        sock.opened.result(WAKE)
        go.set()
        error = sock.closed.exception(WAKE)  # nobody reads: the selector thread saw it
        assert isinstance(error, BrokenSocketError)
        assert server.address in str(error)
        raises_same(lambda: sock.readable.read1(100), error)
        raises_same(lambda: sock.writable.write(b"x"), error)
