"""Fault injection: peers that stall, and the timeouts that end the wait: a peer that
stops reading or writing, a server that never speaks, a full accept backlog, and
the connect deadline (see tests/peers/faults.py and docs/reliability.md)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from types import FrameType
from typing import Callable

import pytest

from pysock import BrokenSocketError, SocketClosedError, SocketTimeout
from pysock._state import State

from .helpers import WAKE, drain, same_error, wait_until
from .peers.faults import (
    BIG_WRITE,
    CONNECT_DEADLINE,
    SHORT,
    Call,
    TlsChannel,
    Transport,
    join_peers,
    raises_same,
    wait,
)

# Fixtures, taken by name: the redundant alias tells linters they are used.
from .peers.faults import transport as transport
from .peers.tcp import Blackhole, Server

pytestmark = pytest.mark.fault


# -- a peer that stops reading -------------------------------------------------------------


def test_write_timeout_on_a_peer_that_stops_reading(
    serve: Callable[..., Server], transport: Transport
) -> None:
    release = threading.Event()

    def peer(conn: socket.socket) -> None:
        transport.channel(conn)
        wait(release)
        drain(conn)

    server = serve(peer)
    timeout, head_start = 0.5, 0.3
    payload = bytes(BIG_WRITE)
    with transport.connect(server.address, timeout=timeout, connect_timeout=WAKE) as sock:
        sock.opened.result(WAKE)
        writer = Call(lambda: sock.writable.write(payload), "writer")
        wait_until(lambda: sock._connection._writing, "the write to start")
        # The reader starts `head_start` after the writer, so its own timeout would
        # come that much later: it must be woken by the broken socket first.
        writer.assert_blocked(head_start)
        reader = Call(lambda: sock.readable.read1(100), "reader")
        assert isinstance(writer.raised(SocketTimeout), TimeoutError)
        error = sock.closed.exception(WAKE)
        assert isinstance(error, BrokenSocketError)
        assert server.address in str(error) and "unknown amount" in str(error)
        assert same_error(reader.raised(BrokenSocketError), error)
        raises_same(lambda: sock.writable.write(b"x"), error)
        raises_same(lambda: sock.readable.read1(100), error)
    release.set()


def test_close_wakes_a_write_blocked_on_a_peer_that_stops_reading(
    serve: Callable[..., Server], transport: Transport
) -> None:
    release = threading.Event()

    def peer(conn: socket.socket) -> None:
        transport.channel(conn)
        wait(release)
        drain(conn)

    server = serve(peer)
    payload = bytes(BIG_WRITE)
    sock = transport.connect(server.address)  # no timeout: only close() ends the wait
    sock.opened.result(WAKE)
    writer = Call(lambda: sock.writable.write(payload), "writer")
    writer.assert_blocked()
    sock.close()
    # close() wakes the blocked write with SocketClosedError; your code closed it
    # (no failure of the connection), so `closed` is None and done when close() returns.
    writer.raised(SocketClosedError)
    assert sock.closed.result(0) is None
    release.set()


# -- a peer that stops writing -----------------------------------------------------------

STALLS = [
    ("tcp", "between writes"),
    ("tls1.2", "between records"),
    ("tls1.2", "mid-record"),
    ("tls1.3", "between records"),
    ("tls1.3", "mid-record"),
]


@pytest.mark.parametrize(("transport", "stall"), STALLS, indirect=["transport"])
def test_read_timeout_on_a_peer_that_stops_writing(
    serve: Callable[..., Server], transport: Transport, stall: str
) -> None:
    go, sent, ended = threading.Event(), threading.Event(), threading.Event()
    received: list[bytes] = []

    def peer(conn: socket.socket) -> None:
        channel = transport.channel(conn)
        if stall == "mid-record":
            assert isinstance(channel, TlsChannel)
            wire = channel.records(b"abcdef\n")
            conn.sendall(wire[: len(wire) // 2])
            wait(go)
            conn.sendall(wire[len(wire) // 2 :])
        else:
            channel.send(b"abc")
            wait(go)
            channel.send(b"def\n")
        sent.set()
        received.append(channel.recv(4))
        channel.end()
        ended.set()
        drain(conn)

    server = serve(peer)
    with transport.connect(server.address, timeout=SHORT, connect_timeout=WAKE) as sock:
        sock.opened.result(WAKE)
        reader = Call(sock.readable.readline, "reader")
        assert isinstance(reader.raised(SocketTimeout), TimeoutError)
        with pytest.raises(SocketTimeout):  # a second timeout loses nothing either
            sock.readable.readexactly(7)
        assert not sock.closed.done()
        sock.writable.write(b"ping")  # still usable
        go.set()
        assert sent.wait(WAKE)  # (so that the reads below never wait: not the fault)
        assert sock.readable.readline() == b"abcdef\n"  # intact
        assert ended.wait(WAKE)
        assert sock.readable.read() == b""
        assert sock.closed.result(WAKE) is None
    join_peers(server)
    assert received == [b"ping"]


# -- a server that accepts and never speaks --------------------------------------------------


def test_silent_server_read_timeout(serve: Callable[..., Server]) -> None:
    received: list[int] = []
    server = serve(lambda conn: received.append(drain(conn)))
    with Transport("tcp").connect(server.address, timeout=SHORT, connect_timeout=WAKE) as sock:
        sock.opened.result(WAKE)
        reader = Call(lambda: sock.readable.read(1), "reader")
        assert isinstance(reader.raised(SocketTimeout), TimeoutError)
        with pytest.raises(SocketTimeout):
            sock.readable.readexactly(5)
        assert not sock.closed.done()
        sock.writable.write(b"anyone?")  # a read timeout leaves the socket usable
    assert sock.closed.result(0) is None
    join_peers(server)
    assert received == [len(b"anyone?")]


@pytest.mark.parametrize("transport", ["tls1.3"], indirect=True)
@pytest.mark.parametrize("deadline", ["connect_timeout", "timeout"])
def test_silent_tls_server_connect_timeout(
    serve: Callable[..., Server], transport: Transport, deadline: str
) -> None:
    # The server takes the ClientHello and never answers: `connect_timeout` (which
    # defaults to `timeout`) covers the handshake, so a server that stalls it cannot
    # hang the opening. Its SocketTimeout names host:port (a careful user wants to
    # know which connection timed out).
    server = serve(drain)
    if deadline == "timeout":
        sock = transport.connect(server.address, timeout=CONNECT_DEADLINE)
    else:
        sock = transport.connect(server.address, connect_timeout=CONNECT_DEADLINE)
    with sock:
        waiting: list[Call[object]] = []
        if deadline == "connect_timeout":  # reads and writes wait without a deadline
            waiting.append(Call(lambda: sock.readable.read(1), "reader"))
            waiting.append(Call(lambda: sock.writable.write(b"x"), "writer"))
            waiting[0].assert_blocked()
        error = sock.opened.exception(WAKE)
        assert isinstance(error, SocketTimeout) and server.address in str(error)
        assert same_error(sock.closed.exception(WAKE), error)
        for call in waiting:
            assert same_error(call.raised(SocketTimeout), error)
        raises_same(lambda: sock.readable.read(1), error)
        raises_same(lambda: sock.writable.write(b"x"), error)


# -- a full accept backlog: the connect never completes ------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "tls1.3"], indirect=True)
def test_full_backlog_connect_timeout(blackhole: Blackhole, transport: Transport) -> None:
    with transport.connect(blackhole.address, connect_timeout=CONNECT_DEADLINE) as sock:
        reader = Call(lambda: sock.readable.read(1), "reader")
        writer = Call(lambda: sock.writable.write(b"x"), "writer")
        reader.assert_blocked()
        writer.assert_blocked(0)
        error = sock.opened.exception(WAKE)
        assert isinstance(error, SocketTimeout) and blackhole.address in str(error)
        assert same_error(sock.closed.exception(WAKE), error)
        assert same_error(reader.raised(SocketTimeout), error)
        assert same_error(writer.raised(SocketTimeout), error)
        raises_same(lambda: sock.readable.read(1), error)
        raises_same(lambda: sock.writable.write(b"x"), error)


@pytest.mark.parametrize("transport", ["tls1.3"], indirect=True)
def test_the_connect_deadline_never_breaks_an_open_connection(
    serve: Callable[..., Server], transport: Transport
) -> None:
    # The deadline belongs to opening (one deadline for DNS, every connection attempt
    # and the TLS handshake: docs/api.md): once open, it must never fire. It once did in
    # about one connection in 200 (a timer set too late to be cancelled by the open,
    # then allowed to fail an open connection). To make that interleaving certain, a
    # profile hook in this thread holds connect() at the start of
    # `schedule_connect_deadline` until the selector thread has finished the
    # handshake: only the order of events is forced, no I/O is faked.
    server = serve(lambda conn: drain(transport.tls_channel(conn).conn))
    paused: list[bool] = []

    def hold_until_open(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_name == "schedule_connect_deadline":
            connection = frame.f_locals["self"]
            wait_until(lambda: connection.state is not State.CONNECTING, "the handshake")
            paused.append(True)

    for _ in range(3):  # the handshake may (rarely) win before the deadline is set
        sys.setprofile(hold_until_open)
        try:
            sock = transport.connect(server.address, connect_timeout=SHORT)
        finally:
            sys.setprofile(None)
        if paused:
            break
        sock.close()
    with sock:
        sock.opened.result(WAKE)
        assert paused, "schedule_connect_deadline() never ran while connecting (renamed?)"
        time.sleep(2 * SHORT)  # past the connect deadline
        assert not sock.closed.done(), sock.closed.exception(0)
        sock.writable.write(b"still open")
