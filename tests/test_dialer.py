"""The Dialer: built only for an opening that needs one, and dropped once it is over.

Real sockets on loopback throughout. `connect_now`, `attempts_failed` and
`refusal_of` (pysock._attempt) are tested alone; the dialer's life is read
through the connection's one reference to it, ``_dialer``.
"""

from __future__ import annotations

import errno
import gc
import select
import socket
import ssl
import weakref
from typing import Any, Callable

import pytest

from pysock import ConnectError, Socket, SocketTimeout, _dialer, connect, deny_private
from pysock._address import parse_address
from pysock._attempt import IN_PROGRESS, attempts_failed, connect_now, refusal_of
from pysock._dialer import Dialer
from pysock._proxy import parse_proxy

from .helpers import WAKE, wait_until
from .peers.tcp import Blackhole, Server
from .peers.tls import tls_echo

TIMEOUT = 10.0


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Dialer]:
    """Every Dialer built while the test runs (pysock's own class, counted)."""
    dialers: list[Dialer] = []

    class Counted(Dialer):
        __slots__ = ()

        def __init__(self, connection: Any) -> None:
            super().__init__(connection)
            dialers.append(self)

    monkeypatch.setattr(_dialer, "Dialer", Counted)
    return dialers


def _dialer_of(sock: Socket) -> object:
    return sock._connection._dialer


# -- the dialer's life -------------------------------------------------------------------


def test_a_connect_that_completes_at_once_builds_no_dialer(
    echo_server: Server, built: list[Dialer]
) -> None:
    # A loopback connect is complete by the time getpeername() asks, inside the
    # connect() syscall: the connection opens before connect() returns.
    with connect(echo_server.address, timeout=TIMEOUT) as sock:
        assert sock.opened.done()
        assert sock.opened.result().remote_address == echo_server.address
        assert built == [] and _dialer_of(sock) is None
        sock.writable.write(b"ping\n")
        assert sock.readable.readline() == b"ping\n"


@pytest.mark.parametrize("how", ["name", "connect_timeout", "address_filter"])
def test_an_open_socket_holds_no_dialer(
    echo_server: Server, built: list[Dialer], how: str
) -> None:
    address: Any = echo_server.address
    options: dict[str, Any] = {"timeout": TIMEOUT}
    if how == "name":
        address = f"localhost:{echo_server.port}"
    elif how == "connect_timeout":
        options["connect_timeout"] = TIMEOUT  # The deadline's dialer is dropped at the open.
    else:
        options["address_filter"] = lambda ip, port: True
    with connect(address, **options) as sock:
        sock.opened.result(TIMEOUT)
        assert _dialer_of(sock) is None
        assert len(built) == (0 if how == "connect_timeout" else 1)
        gone = weakref.ref(built[0]) if built else None
        built.clear()
        gc.collect()
        assert gone is None or gone() is None, "something still holds the dropped dialer"


def test_a_tls_socket_drops_its_deadline_dialer_after_the_handshake(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = serve(tls_echo(server_ctx))
    options: dict[str, Any] = {"tls_context": client_ctx, "connect_timeout": TIMEOUT}
    with connect(server.address, secure_transport="on", **options) as sock:
        sock.opened.result(TIMEOUT)
        assert _dialer_of(sock) is None
        sock.writable.write(b"ping\n")
        assert sock.readable.readline() == b"ping\n"


def test_a_failed_opening_drops_its_dialer(unused_port: int, built: list[Dialer]) -> None:
    sock = connect(f"localhost:{unused_port}", timeout=TIMEOUT)  # A name: a dialer.
    try:
        assert isinstance(sock.opened.exception(TIMEOUT), ConnectError)
        wait_until(lambda: _dialer_of(sock) is None, "the release to drop the dialer")
        assert len(built) == 1 and built[0].attempts == ()
    finally:
        sock.close()


def test_close_while_connecting_drops_the_dialer_and_its_attempt(blackhole: Blackhole) -> None:
    sock = connect(blackhole.address, connect_timeout=TIMEOUT)
    dialer = sock._connection._dialer
    assert isinstance(dialer, Dialer), "the connect to a full backlog completed?"
    attempts = dialer.attempts
    assert len(attempts) == 1
    sock.close()
    assert sock.closed.result(WAKE) is None
    # The attempt's descriptor was in the selector: the loop thread closes it.
    wait_until(lambda: attempts[0].sock.fileno() == -1, "the attempt's descriptor to close")
    assert _dialer_of(sock) is None
    assert dialer.deadline_timer is not None and dialer.deadline_timer.cancelled


def test_the_deadline_fails_the_opening_through_the_dialer(blackhole: Blackhole) -> None:
    with connect(blackhole.address, connect_timeout=0.2) as sock:
        error = sock.opened.exception(TIMEOUT)
        assert isinstance(error, SocketTimeout) and blackhole.address in str(error)
        wait_until(lambda: _dialer_of(sock) is None, "the release to drop the dialer")


def test_a_forgotten_connecting_socket_takes_its_dialer_with_it(blackhole: Blackhole) -> None:
    sock = connect(blackhole.address, connect_timeout=TIMEOUT)
    assert sock._connection._dialer is not None
    dialer = weakref.ref(sock._connection._dialer)
    connection = weakref.ref(sock._connection)
    with pytest.warns(ResourceWarning, match="unclosed pysock socket"):
        del sock
        gc.collect()
    # Neither the selector (the attempt) nor the deadline timer holds them strongly.
    wait_until(lambda: connection() is None and dialer() is None, "both to be collected")


# -- attempts alone ----------------------------------------------------------------------


def test_connect_now_to_a_listener_is_complete_at_once(echo_server: Server) -> None:
    endpoint = parse_address(echo_server.address)
    sock, code, peer = connect_now(endpoint, socket.AF_INET, ("127.0.0.1", echo_server.port))
    with sock:
        assert code == 0 and peer == ("127.0.0.1", echo_server.port)
        assert not sock.getblocking()


def test_connect_now_to_a_closed_port_reports_the_refusal(unused_port: int) -> None:
    endpoint = parse_address(("127.0.0.1", unused_port))
    sock, code, peer = connect_now(endpoint, socket.AF_INET, ("127.0.0.1", unused_port))
    with sock:
        assert peer is None
        if code in IN_PROGRESS:  # Not reported yet: the selector thread would wait for it.
            assert select.select([], [sock], [], TIMEOUT)[1]
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        assert code == errno.ECONNREFUSED


def test_connect_now_leaves_nothing_open_when_bind_fails(echo_server: Server) -> None:
    endpoint = parse_address(echo_server.address)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        local = (socket.AF_INET, taken.getsockname())
        with pytest.raises(OSError) as raised:
            connect_now(endpoint, socket.AF_INET, ("127.0.0.1", echo_server.port), local)
    assert raised.value.errno == errno.EADDRINUSE  # The leak check finds no socket left.


def test_attempt_errors_name_every_address_in_order() -> None:
    endpoint = parse_address("dual.example:80")
    errors = [
        OSError(errno.ECONNREFUSED, "Connection refused", "[::1]:80"),
        OSError(errno.ETIMEDOUT, "Connection timed out", "127.0.0.1:80"),
    ]
    error, cause = attempts_failed(endpoint, errors, None)
    assert error.errno == errno.ETIMEDOUT and cause is errors[-1]
    assert error.errors == tuple(errors)
    assert str(error).startswith("cannot connect to dual.example:80: 2 addresses failed (")
    assert "[::1]:80: Connection refused; 127.0.0.1:80: Connection timed out" in str(error)
    proxy = parse_proxy("socks5://127.0.0.1:1080")
    one, _ = attempts_failed(endpoint, errors[:1], proxy)
    assert "the proxy" in str(one) and str(one).endswith("Connection refused")


def test_no_address_at_all_is_unreachable() -> None:
    error, cause = attempts_failed(parse_address("nowhere.example:80"), [], None)
    assert error.errno == errno.EHOSTUNREACH and error.errors == ()
    assert cause.errno == errno.EHOSTUNREACH


def test_the_filter_judges_ip_addresses_only() -> None:
    refusal = refusal_of(deny_private, ("10.0.0.5", 80))
    assert refusal is not None and refusal.errno == errno.EACCES
    assert refusal.filename == "10.0.0.5:80" and "10.0.0.5 is" in str(refusal.strerror)
    assert refusal_of(lambda ip, port: ip == "1.1.1.1", ("1.1.1.1", 53)) is None
    other = refusal_of(lambda ip, port: False, ("::1", 443, 0, 0))
    assert other is not None and other.filename == "[::1]:443"
    assert "refused by address_filter" in str(other.strerror)
    assert refusal_of(lambda ip, port: False, "/run/x.sock") is None  # A path: no IP.
