"""Opening: address forms, futures, refused ports, deadlines, write before open."""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from typing import Any, Callable

import pytest

import pysock
from pysock import ConnectError, SocketClosedError, SocketInfo, SocketTimeout, _opening, connect

from .helpers import same_error
from .peers.tcp import Blackhole, Server, echo

TIMEOUT = 10


@pytest.fixture
def v6_echo_server() -> Any:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with Server(echo, host="::1") as server:
        yield server


def address_forms(port: int) -> list[Any]:
    return [
        f"127.0.0.1:{port}",
        ("127.0.0.1", port),
        {"hostname": "127.0.0.1", "port": port},
        f"localhost:{port}",
        {"hostname": "localhost", "port": port},
    ]


@pytest.mark.parametrize("form", range(5))
def test_every_ipv4_address_form_connects(echo_server: Server, form: int) -> None:
    address = address_forms(echo_server.port)[form]
    with connect(address) as sock:
        info = sock.opened.result(TIMEOUT)
        assert info == SocketInfo(f"127.0.0.1:{echo_server.port}", info.local_address, None)
        assert info.local_address.startswith("127.0.0.1:")
        sock.writable.write(b"ping")
        assert sock.readable.readexactly(4) == b"ping"


@pytest.mark.parametrize("kind", ["string", "tuple", "dict"])
def test_ipv6_address_forms_connect(v6_echo_server: Server, kind: str) -> None:
    port = v6_echo_server.port
    address = {
        "string": f"[::1]:{port}",
        "tuple": ("::1", port),
        "dict": {"hostname": "::1", "port": port},
    }[kind]
    with connect(address) as sock:  # type: ignore[arg-type]
        info = sock.opened.result(TIMEOUT)
        assert info.remote_address == f"[::1]:{port}"
        assert info.local_address.startswith("[::1]:")
        sock.writable.write(b"six")
        assert sock.readable.readexactly(3) == b"six"


def test_connect_returns_before_the_connection_opens(blackhole: Blackhole) -> None:
    started = time.monotonic()
    sock = connect(blackhole.address)
    assert time.monotonic() - started < 1
    assert not sock.opened.done()
    assert repr(sock) == f"<pysock.Socket {blackhole.address} off connecting>"
    sock.close()
    with pytest.raises(SocketClosedError, match="closed while connecting"):
        sock.opened.result(TIMEOUT)
    assert sock.closed.result(0) is None


def test_a_slow_lookup_does_not_stall_connect(echo_server: Server) -> None:
    # "localhost" goes through the DNS workers; connect() must not wait for them.
    with connect(("localhost", echo_server.port)) as sock:
        assert sock.opened.result(TIMEOUT).remote_address == f"127.0.0.1:{echo_server.port}"


def test_refused_port(unused_port: int) -> None:
    sock = connect(("127.0.0.1", unused_port))
    with pytest.raises(ConnectError) as info:
        sock.opened.result(TIMEOUT)
    error = info.value
    assert error.errno == errno.ECONNREFUSED
    assert f"127.0.0.1:{unused_port}" in str(error)
    assert isinstance(error.__cause__, OSError)
    assert isinstance(error, ConnectionError)
    # closed fails with the same error; reads and writes raise it too.
    assert same_error(sock.closed.exception(TIMEOUT), error)
    with pytest.raises(ConnectError) as from_read:
        sock.readable.read(1)
    assert same_error(from_read.value, error)
    with pytest.raises(ConnectError) as from_write:
        sock.writable.write(b"x")
    assert same_error(from_write.value, error)
    # Raised again and again, it keeps the OS error as its cause: what failed.
    assert isinstance(error.__cause__, ConnectionRefusedError)
    sock.close()


def test_errors_survive_pickle(unused_port: int) -> None:
    # multiprocessing and process pools send errors between processes.
    import pickle

    sock = connect(("127.0.0.1", unused_port))
    refused = sock.opened.exception(TIMEOUT)
    sock.close()
    assert isinstance(refused, ConnectError)
    copy = pickle.loads(pickle.dumps(refused))
    assert type(copy) is ConnectError
    assert (copy.errno, str(copy), len(copy.errors)) == (
        refused.errno,
        str(refused),
        len(refused.errors),
    )
    for error in (
        pysock.LimitOverrunError("separator not found", 70000),
        pysock.IncompleteReadError(b"par", 10),
        pysock.SocketClosedError("the socket is closed"),
        pysock.BrokenSocketError("broken"),
        pysock.TLSError("handshake failed"),
        pysock.StartTlsError("already upgraded"),
        pysock.SocketTimeout("timed out"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy) == vars(error)


def test_unresolvable_name() -> None:
    sock = connect("name-that-does-not-exist.invalid:80")
    error = sock.opened.exception(TIMEOUT)
    assert isinstance(error, ConnectError)
    assert "name-that-does-not-exist.invalid:80" in str(error)
    assert isinstance(error.__cause__, socket.gaierror)
    sock.close()


def test_connect_timeout_fires(blackhole: Blackhole) -> None:
    started = time.monotonic()
    sock = connect(blackhole.address, connect_timeout=0.3)
    error = sock.opened.exception(TIMEOUT)
    assert isinstance(error, SocketTimeout) and isinstance(error, TimeoutError)
    assert blackhole.address in str(error)
    assert 0.25 < time.monotonic() - started < 5
    assert same_error(sock.closed.exception(0), error)
    sock.close()


def test_timeout_is_the_default_connect_timeout(blackhole: Blackhole) -> None:
    sock = connect(blackhole.address, timeout=0.2)
    assert isinstance(sock.opened.exception(TIMEOUT), SocketTimeout)
    sock.close()


def test_read_before_open_waits_then_raises_the_open_error(blackhole: Blackhole) -> None:
    sock = connect(blackhole.address, connect_timeout=0.3)
    with pytest.raises(SocketTimeout):
        sock.readable.read(1)
    sock.close()


def test_write_before_open_is_sent_once_open(blackhole: Blackhole) -> None:
    sock = connect(blackhole.address, connect_timeout=TIMEOUT)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            sock.writable.write(b"early bird")
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(0.2)
    assert writer.is_alive() and not sock.opened.done()
    # Make room in the accept queue: the client's retransmitted SYN gets through.
    accepted = drain_accept_queue(blackhole, until=lambda: not writer.is_alive())
    try:
        writer.join(TIMEOUT)
        assert not writer.is_alive() and errors == []
        local = sock.opened.result(TIMEOUT).local_address
        hole_address = blackhole.listener
        while not any("{}:{}".format(*c.getpeername()[:2]) == local for c in accepted):
            hole_address.settimeout(TIMEOUT)
            accepted.append(hole_address.accept()[0])
        peer = next(c for c in accepted if "{}:{}".format(*c.getpeername()[:2]) == local)
        peer.settimeout(TIMEOUT)
        assert peer.recv(100) == b"early bird"
    finally:
        for conn in accepted:
            conn.close()
        sock.close()


def test_opened_callbacks_run(echo_server: Server) -> None:
    seen = threading.Event()
    with connect(echo_server.address) as sock:
        sock.opened.add_done_callback(lambda future: seen.set())
        assert seen.wait(TIMEOUT)


def test_exports() -> None:
    for name in ["connect", "Socket", "SocketInfo", "TLSInfo", "SocketReader", "SocketWriter"]:
        assert name in pysock.__all__
    for error in ["PysockError", "SocketClosedError", "ConnectError", "BrokenSocketError"]:
        assert getattr(pysock, error) is getattr(pysock.errors, error)
    assert issubclass(pysock.SocketClosedError, ValueError)
    assert issubclass(pysock.SocketTimeout, TimeoutError)
    assert issubclass(pysock.IncompleteReadError, EOFError)
    assert issubclass(pysock.TLSError, ConnectionError)
    assert not issubclass(pysock.StartTlsError, OSError)


def test_socket_info_is_frozen(echo_server: Server) -> None:
    with connect(echo_server.address) as sock:
        info = sock.opened.result(TIMEOUT)
        with pytest.raises(AttributeError):
            info.alpn = "h2"  # type: ignore[misc]


def test_loopback_connect_is_done_by_the_caller(echo_server: Server) -> None:
    # An IP literal is connected in connect() itself; the loop thread is not needed.
    with connect(echo_server.address) as sock:
        sock.opened.result(TIMEOUT)
        assert [t.name for t in threading.enumerate()].count("pysock-selector") == 1


def drain_accept_queue(hole: Blackhole, until: Callable[[], bool]) -> list[socket.socket]:
    """Accept whatever arrives (the client's SYN is retransmitted after about 1 s)."""
    accepted: list[socket.socket] = []
    hole.listener.settimeout(0.1)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not until():
        try:
            accepted.append(hole.listener.accept()[0])
        except socket.timeout:
            pass
    return accepted


def test_a_reset_before_the_connect_is_seen_done_is_a_connect_error(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[..., Server]
) -> None:
    # The peer accepts and resets before pysock has looked at its connect: the kernel
    # reports the reset as the connect's error (SO_ERROR), as asyncio and trio see it
    # too. That is a failed opening, not an open socket that breaks at once. The CLI
    # test of a reset (test_cli.py) waits for the open to rule this race out.
    was_reset = threading.Event()

    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        was_reset.set()

    real_start = _opening._start_connect

    def start_then_wait_for_the_reset(sock: socket.socket, sockaddr: Any) -> int:
        code = real_start(sock, sockaddr)
        assert was_reset.wait(TIMEOUT)
        # Until the RST has arrived: an error makes the socket readable, and select()
        # leaves SO_ERROR alone (select, not poll: tests/portable runs without poll).
        readable, _, _ = select.select([sock], [], [], TIMEOUT)
        assert readable
        return code

    monkeypatch.setattr(_opening, "_start_connect", start_then_wait_for_the_reset)
    server = serve(reset)
    sock = connect(server.address, timeout=TIMEOUT)
    try:
        error = sock.opened.exception(TIMEOUT)
        assert isinstance(error, ConnectError), error
        assert error.errno == errno.ECONNRESET and server.address in str(error)
        assert isinstance(error.__cause__, ConnectionResetError)
        assert isinstance(sock.closed.exception(TIMEOUT), ConnectError)
    finally:
        sock.close()


def test_the_repr_of_a_failed_opening_says_so(unused_port: int) -> None:
    sock = connect(("127.0.0.1", unused_port))
    assert repr(sock.readable).endswith(" connecting>") or sock.opened.done()
    assert isinstance(sock.opened.exception(TIMEOUT), ConnectError)
    assert repr(sock) == f"<pysock.Socket 127.0.0.1:{unused_port} off failed>"
    assert repr(sock.readable) == f"<pysock.SocketReader 127.0.0.1:{unused_port} failed>"
    sock.close()
    assert repr(sock) == f"<pysock.Socket 127.0.0.1:{unused_port} off failed>"
    assert repr(sock.readable) == f"<pysock.SocketReader 127.0.0.1:{unused_port} closed>"


def test_the_streams_of_a_connecting_socket_do_not_say_open(blackhole: Blackhole) -> None:
    sock = connect(blackhole.address)
    assert repr(sock.readable) == f"<pysock.SocketReader {blackhole.address} connecting>"
    assert repr(sock.writable) == f"<pysock.SocketWriter {blackhole.address} connecting>"
    sock.close()


def test_a_connection_broken_once_open_reads_broken(serve: Callable[..., Server]) -> None:
    def reset(conn: socket.socket) -> None:
        conn.recv(1)  # Open on both ends: the reset cannot race the connect.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    server = serve(reset)
    with connect(server.address) as sock:
        sock.writable.write(b"!")
        assert sock.closed.exception(TIMEOUT) is not None
        assert repr(sock) == f"<pysock.Socket {server.address} off broken>"
