"""Unix domain sockets (``{"path": ...}``, ``"unix:/path"``) and adopted sockets (``sock=``)."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import pysock

from .helpers import sync_loop
from .peers.tcp import PEER_TIMEOUT, Server, echo
from .peers.tls import client_context, server_context

WAIT = 10.0


class UnixServer:
    """A Unix socket listener that runs `echo` (or a TLS echo) for each connection, in threads."""

    def __init__(self, path: str, tls: ssl.SSLContext | None = None) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.settimeout(PEER_TIMEOUT)
        self.tls = tls
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve_one, name="test-unix-peer")
        self.thread.start()

    def _serve_one(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            self.errors.append(exc)
            return
        try:
            conn.settimeout(PEER_TIMEOUT)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            echo(conn)
        except OSError as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self.listener.close()
        self.thread.join(PEER_TIMEOUT)


@pytest.fixture
def unix_path(tmp_path: Path) -> str:
    return str(tmp_path / "pysock.sock")


@pytest.fixture
def unix_echo(unix_path: str) -> Iterator[UnixServer]:
    server = UnixServer(unix_path)
    yield server
    server.stop()
    assert not server.errors, server.errors


def _roundtrip(sock: pysock.Socket, data: bytes = b"hello over unix") -> None:
    sock.writable.write(data)
    assert sock.readable.readexactly(len(data)) == data


@pytest.mark.parametrize("form", ["mapping", "string", "pathlike"])
def test_unix_socket_forms(unix_echo: UnixServer, form: str) -> None:
    address: Any = {
        "mapping": {"path": unix_echo.path},
        "string": f"unix:{unix_echo.path}",
        "pathlike": {"path": Path(unix_echo.path)},
    }[form]
    with pysock.connect(address, timeout=WAIT) as sock:
        info = sock.opened.result(WAIT)
        assert info.remote_address == unix_echo.path
        assert repr(sock) == f"<pysock.Socket unix:{unix_echo.path} off open>"
        _roundtrip(sock)


def test_tls_over_a_unix_socket(unix_path: str, ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    server = UnixServer(unix_path, tls=server_context(leaf, ssl.TLSVersion.TLSv1_3))
    try:
        with pysock.connect(
            f"unix:{unix_path}",
            secure_transport="on",
            tls_context=client_context(ca),
            expected_server_hostname="localhost",
            timeout=WAIT,
        ) as sock:
            _roundtrip(sock)
            assert sock.tls is not None and sock.tls.version == "TLSv1.3"
    finally:
        server.stop()


def test_tls_over_a_unix_socket_needs_a_name(unix_path: str) -> None:
    with pytest.raises(ValueError, match="expected_server_hostname"):
        pysock.connect(f"unix:{unix_path}", secure_transport="on")


def test_a_missing_unix_socket_is_a_connect_error(unix_path: str) -> None:
    sock = pysock.connect({"path": unix_path})
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    assert error.errno == errno.ENOENT
    assert unix_path in str(error)


def test_an_abstract_unix_socket(unix_echo: UnixServer) -> None:
    name = f"\0pysock-test-{os.getpid()}-{threading.get_ident()}"
    server = UnixServer(name)
    try:
        with pysock.connect({"path": name}, timeout=WAIT) as sock:
            _roundtrip(sock)
            shown = "@" + name[1:]
            assert sock.opened.result(WAIT).remote_address == shown
            assert repr(sock) == f"<pysock.Socket unix:{shown} off open>"
    finally:
        server.stop()
    # The fixture's server waits for a client too.
    with pysock.connect({"path": unix_echo.path}, timeout=WAIT) as sock:
        _roundtrip(sock)


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ({"path": ""}, ValueError),
        ({"path": "/tmp/" + "x" * 200}, ValueError),
        ({"path": "/tmp/a\0b"}, ValueError),
        ({"path": 5}, TypeError),
        ({"path": "/tmp/x", "port": 1}, TypeError),
        ("unix:", ValueError),
    ],
)
def test_unix_addresses_are_checked(address: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        pysock.connect(address)


def test_proxy_and_local_address_do_not_apply_to_unix(unix_path: str) -> None:
    with pytest.raises(ValueError, match="Unix"):
        pysock.connect(f"unix:{unix_path}", proxy="socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="Unix"):
        pysock.connect(f"unix:{unix_path}", local_address="127.0.0.1")


# -- connect(sock=...) ----------------------------------------------------------------


def test_adopting_a_connected_socket(echo_server: Server) -> None:
    raw = socket.create_connection(("127.0.0.1", echo_server.port), timeout=WAIT)
    sock = pysock.connect(sock=raw, timeout=WAIT)
    with sock:
        info = sock.opened.result(WAIT)
        assert info.remote_address == f"127.0.0.1:{echo_server.port}"
        assert info.local_address == f"127.0.0.1:{raw.getsockname()[1]}"
        assert repr(sock) == f"<pysock.Socket 127.0.0.1:{echo_server.port} off open>"
        _roundtrip(sock)
    # Where the idle watch holds sockets in the selector (no epoll or kqueue), the
    # selector thread closes the descriptor, on its next turn.
    sync_loop()
    assert raw.fileno() == -1, "pysock owns the adopted socket and closes it"


def test_adopting_with_tls_and_a_name(ca: trustme.CA, leaf: trustme.LeafCert, serve: Any) -> None:
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)

    def tls_echo(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            echo(tls)

    server = serve(tls_echo)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    with pysock.connect(
        f"localhost:{server.port}",
        sock=raw,
        secure_transport="on",
        tls_context=client_context(ca),
        timeout=WAIT,
    ) as sock:
        _roundtrip(sock)
        assert sock.tls is not None
        assert repr(sock).startswith(f"<pysock.Socket localhost:{server.port} on")


def test_adopting_for_starttls(ca: trustme.CA, leaf: trustme.LeafCert, serve: Any) -> None:
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)

    def starttls_echo(conn: socket.socket) -> None:
        assert conn.recv(9) == b"STARTTLS\n"
        conn.sendall(b"GO\n")
        with context.wrap_socket(conn, server_side=True) as tls:
            echo(tls)

    server = serve(starttls_echo)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    sock = pysock.connect(
        sock=raw, secure_transport="starttls", tls_context=client_context(ca), timeout=WAIT
    )
    sock.writable.write(b"STARTTLS\n")
    assert sock.readable.readline() == b"GO\n"
    with sock.start_tls() as secure:
        _roundtrip(secure)


def test_adopting_keeps_the_owners_keepalive(echo_server: Server) -> None:
    raw = socket.create_connection(("127.0.0.1", echo_server.port), timeout=WAIT)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    with pysock.connect(sock=raw) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0


def test_adopting_one_end_of_a_socketpair() -> None:
    left, right = socket.socketpair()
    try:
        with pysock.connect(sock=left, timeout=WAIT) as sock:
            right.settimeout(WAIT)
            sock.writable.write(b"abc")
            assert right.recv(3) == b"abc"
            right.sendall(b"xyz")
            assert sock.readable.readexactly(3) == b"xyz"
    finally:
        right.close()


def _unconnected() -> socket.socket:
    return socket.socket()


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (_unconnected, ValueError, "not connected"),
        (lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), ValueError, "SOCK_STREAM"),
        (lambda: "127.0.0.1:80", TypeError, "socket.socket"),
    ],
)
def test_what_cannot_be_adopted(make: Any, error: type[Exception], match: str) -> None:
    candidate = make()
    try:
        with pytest.raises(error, match=match):
            pysock.connect(sock=candidate)
    finally:
        if isinstance(candidate, socket.socket):
            candidate.close()


def test_a_closed_or_tls_socket_cannot_be_adopted(echo_server: Server, ca: trustme.CA) -> None:
    raw = socket.create_connection(("127.0.0.1", echo_server.port), timeout=WAIT)
    raw.close()
    with pytest.raises(ValueError, match="closed"):
        pysock.connect(sock=raw)
    raw = socket.create_connection(("127.0.0.1", echo_server.port), timeout=WAIT)
    wrapped = client_context(ca).wrap_socket(
        raw, do_handshake_on_connect=False, server_hostname="localhost"
    )
    try:
        with pytest.raises(TypeError, match="SSLSocket"):
            pysock.connect(sock=wrapped)
    finally:
        wrapped.close()


def test_an_adopted_socket_cannot_also_use_a_proxy_or_local_address(echo_server: Server) -> None:
    raw = socket.create_connection(("127.0.0.1", echo_server.port), timeout=WAIT)
    try:
        with pytest.raises(ValueError, match="proxy"):
            pysock.connect(sock=raw, proxy="socks5://127.0.0.1:1080")
        with pytest.raises(ValueError, match="local_address"):
            pysock.connect(sock=raw, local_address="127.0.0.1")
    finally:
        raw.close()


def test_an_address_is_needed_without_sock() -> None:
    with pytest.raises(TypeError, match="address"):
        pysock.connect()
