"""TCP knobs: ``no_delay``, ``keep_alive``, ``local_address``, read back with getsockopt."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest

import pysock

from .peers.tcp import Server

WAIT = 10.0


def _opt(sock: pysock.Socket, level: int, option: int) -> int:
    value = sock.getsockopt(level, option)
    assert isinstance(value, int)
    return value


def test_no_delay_is_on_by_default(echo_server: Server) -> None:
    with pysock.connect(echo_server.address) as sock:
        assert _opt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_no_delay_off(echo_server: Server) -> None:
    with pysock.connect(echo_server.address, no_delay=False) as sock:
        assert _opt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_keep_alive_is_off_by_default(echo_server: Server) -> None:
    with pysock.connect(echo_server.address) as sock:
        assert _opt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_keep_alive_with_the_os_timing(echo_server: Server) -> None:
    with pysock.connect(echo_server.address, keep_alive=True) as sock:
        assert _opt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="no TCP_KEEPIDLE here")
@pytest.mark.parametrize("secure_transport", ["off", "starttls"])
def test_keep_alive_timing(echo_server: Server, secure_transport: Any) -> None:
    with pysock.connect(
        echo_server.address, keep_alive=(30, 5, 3), secure_transport=secure_transport
    ) as sock:
        assert _opt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert _opt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert _opt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert _opt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


def test_knobs_apply_to_an_adopted_socket(echo_server: Server) -> None:
    raw = socket.create_connection(("127.0.0.1", echo_server.port), timeout=WAIT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with pysock.connect(sock=raw, no_delay=False, keep_alive=True) as sock:
        assert _opt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert _opt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0


@pytest.mark.parametrize("form", ["ip", "ip:port", "tuple"])
def test_local_address(echo_server: Server, form: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    local: Any = {
        "ip": "127.0.0.1",
        "ip:port": f"127.0.0.1:{port}",
        "tuple": ("127.0.0.1", port),
    }[form]
    with pysock.connect(echo_server.address, local_address=local) as sock:
        info = sock.opened.result(WAIT)
    host, _, bound = info.local_address.rpartition(":")
    assert host == "127.0.0.1"
    if form != "ip":
        assert int(bound) == port


def test_local_address_v6() -> None:
    server = Server(lambda conn: None, "::1")
    try:
        with pysock.connect(server.address, local_address="[::1]:0") as sock:
            assert sock.opened.result(WAIT).local_address.startswith("[::1]:")
        with pysock.connect(server.address, local_address="::1") as sock:
            assert sock.opened.result(WAIT).local_address.startswith("[::1]:")
    finally:
        server.stop()


def test_a_local_address_of_the_other_family_cannot_connect(echo_server: Server) -> None:
    sock = pysock.connect(echo_server.address, local_address="::1")
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    assert error.errno == errno.EAFNOSUPPORT
    assert "local_address ::1" in str(error)


def test_a_local_address_in_use_is_a_connect_error(echo_server: Server) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        sock = pysock.connect(echo_server.address, local_address=taken.getsockname())
        with sock:
            error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    assert error.errno == errno.EADDRINUSE


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"no_delay": 1}, TypeError),
        ({"keep_alive": 1}, TypeError),
        ({"keep_alive": (30, 5)}, TypeError),
        ({"keep_alive": (0, 5, 3)}, ValueError),
        ({"keep_alive": (30, 5, 0)}, ValueError),
        ({"keep_alive": (30, 5, 3.5)}, TypeError),
        ({"local_address": "localhost"}, ValueError),
        ({"local_address": "127.0.0.1:70000"}, ValueError),
        ({"local_address": ("127.0.0.1", "80")}, TypeError),
        ({"local_address": 80}, TypeError),
    ],
)
def test_knobs_are_checked(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        pysock.connect("127.0.0.1:1", **options)


def test_getsockopt_after_close(echo_server: Server) -> None:
    sock = pysock.connect(echo_server.address)
    sock.opened.result(WAIT)
    sock.close()
    with pytest.raises(pysock.SocketClosedError):
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_getsockopt_of_a_failed_opening(unused_port: int) -> None:
    with pysock.connect(("127.0.0.1", unused_port)) as sock, pytest.raises(pysock.ConnectError):
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
