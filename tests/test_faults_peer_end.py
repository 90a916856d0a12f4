"""Fault injection: a peer that ends its side (TCP FIN; TLS: close_notify, then FIN)
mid-read, mid-write and idle, with allow_half_open False and True (see
tests/peers/faults.py and docs/reliability.md)."""

from __future__ import annotations

import socket
import threading
from typing import Callable

import pytest

from pysock import BrokenSocketError
from pysock._state import PEER_ENDED

from .helpers import WAKE, drain, wait_until
from .peers.faults import BIG_WRITE, Call, Transport, join_peers, raises_same, wait

# Fixtures, taken by name: the redundant alias tells linters they are used.
from .peers.faults import transport as transport
from .peers.tcp import Server

pytestmark = pytest.mark.fault


# TLS 1.2 cannot half-close (RFC 5246 section 7.2.1: a close_notify is answered by
# closing, so writable.close() raises there), so the allow_half_open=True cases run
# over TCP and TLS 1.3.
HALF_OPEN_CASES = [
    ("tcp", False),
    ("tcp", True),
    ("tls1.2", False),
    ("tls1.3", False),
    ("tls1.3", True),
]


# -- peer FIN (TLS: close_notify, then FIN) -----------------------------------------------


@pytest.mark.parametrize(("transport", "allow_half_open"), HALF_OPEN_CASES, indirect=["transport"])
def test_peer_end_wakes_a_blocked_read(
    serve: Callable[..., Server], transport: Transport, allow_half_open: bool
) -> None:
    go = threading.Event()
    received: list[bytes] = []

    def peer(conn: socket.socket) -> None:
        channel = transport.channel(conn)
        wait(go)
        channel.send(b"last words")
        channel.end()
        received.append(channel.recv_all())

    server = serve(peer)
    with transport.connect(server.address, allow_half_open=allow_half_open) as sock:
        sock.opened.result(WAKE)
        reader = Call(sock.readable.read, "reader")  # to EOF
        reader.assert_blocked()
        go.set()
        assert reader.returned() == b"last words"
        assert sock.readable.read() == b"" and sock.readable.read1(1) == b""
        if allow_half_open:
            assert not sock.closed.done()
            sock.writable.write(b"after your end")
            sock.writable.close()
        else:
            with pytest.raises(BrokenSocketError, match="allow_half_open=False") as info:
                sock.writable.write(b"too late")
            assert server.address in str(info.value)
        assert sock.closed.result(WAKE) is None
    join_peers(server)
    assert received == [b"after your end" if allow_half_open else b""]


@pytest.mark.parametrize(("transport", "allow_half_open"), HALF_OPEN_CASES, indirect=["transport"])
def test_peer_end_during_a_blocked_write(
    serve: Callable[..., Server], transport: Transport, allow_half_open: bool
) -> None:
    go, ended, read_on = threading.Event(), threading.Event(), threading.Event()
    drained: list[int] = []

    def peer(conn: socket.socket) -> None:
        channel = transport.channel(conn)  # then does not read
        wait(go)
        channel.end()
        ended.set()
        wait(read_on)
        if allow_half_open:
            drained.append(len(channel.recv_all()))
        else:
            drain(conn)  # what pysock had sent before it stopped: no clean end to expect

    server = serve(peer)
    payload = bytes(BIG_WRITE)
    with transport.connect(server.address, allow_half_open=allow_half_open) as sock:
        sock.opened.result(WAKE)
        writer = Call(lambda: sock.writable.write(payload), "writer")
        writer.assert_blocked()
        go.set()
        if allow_half_open:
            assert ended.wait(WAKE)
            writer.assert_blocked()  # the peer's end does not stop our writing
            read_on.set()
            assert writer.returned() == BIG_WRITE
            assert sock.readable.read() == b""
            assert not sock.closed.done()
            sock.writable.close()
            assert sock.closed.result(WAKE) is None
        else:
            error = writer.raised(BrokenSocketError)
            assert server.address in str(error) and "allow_half_open=False" in str(error)
            # Chosen: the peer ended the connection cleanly and
            # allow_half_open=False ends ours with it, so `closed` completes with None,
            # as on an idle socket; the write that could not finish reports the loss.
            assert sock.closed.result(WAKE) is None
            assert sock.readable.read() == b""
            read_on.set()
    join_peers(server)
    assert drained == ([BIG_WRITE] if allow_half_open else [])


@pytest.mark.parametrize(("transport", "allow_half_open"), HALF_OPEN_CASES, indirect=["transport"])
def test_peer_end_of_an_idle_socket(
    serve: Callable[..., Server], transport: Transport, allow_half_open: bool
) -> None:
    received: list[bytes] = []

    def peer(conn: socket.socket) -> None:
        channel = transport.channel(conn)
        channel.send(b"bye")
        channel.end()
        received.append(channel.recv_all())

    server = serve(peer)
    with transport.connect(server.address, allow_half_open=allow_half_open) as sock:
        connection = sock._connection
        # Nobody reads: the selector thread sees the end.
        wait_until(
            lambda: connection._read_side in PEER_ENDED, "the selector thread to see the end"
        )
        if allow_half_open:
            assert not sock.closed.done()
            sock.writable.write(b"my answer")
            sock.writable.close()
        else:
            with pytest.raises(BrokenSocketError, match="allow_half_open=False") as info:
                sock.writable.write(b"too late")
            assert server.address in str(info.value)
        assert sock.closed.result(WAKE) is None
        # Bytes that arrived before the end stay readable after `closed`: no byte
        # pysock received is ever dropped.
        assert sock.readable.read() == b"bye"
        assert sock.readable.read() == b""
    join_peers(server)
    assert received == [b"my answer" if allow_half_open else b""]


@pytest.mark.parametrize("transport", ["tcp", "tls1.3"], indirect=True)
def test_half_open_write_to_a_peer_that_closed_completely(
    serve: Callable[..., Server], transport: Transport
) -> None:
    # allow_half_open=True keeps our write side open after the peer's EOF, but this
    # peer closed its socket outright: the kernel accepts our write, the peer's
    # kernel answers with RST, and `closed` fails with BrokenSocketError, with
    # nobody reading (a peer reset). The first write succeeds, since the kernel took
    # the bytes (write() returns once all of it is handed to the kernel, not when
    # the peer has it).
    def peer(conn: socket.socket) -> None:
        channel = transport.channel(conn)
        channel.send(b"bye")
        channel.end()
        conn.close()

    server = serve(peer)
    with transport.connect(server.address, allow_half_open=True) as sock:
        assert sock.readable.read() == b"bye"
        join_peers(server)  # the peer's socket is closed
        assert not sock.closed.done()
        sock.writable.write(b"anyone there?")
        error = sock.closed.exception(WAKE)
        assert isinstance(error, BrokenSocketError) and server.address in str(error)
        raises_same(lambda: sock.writable.write(b"x"), error)
