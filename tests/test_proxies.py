"""``proxy=``: SOCKS5 (microsocks, Dante) and HTTP CONNECT (tinyproxy), real servers on loopback.

The proxies are Debian's packages, started by tests/peers/proxies.py (CI installs
them; see .ci/run). Destinations are the thread peers of tests/peers/tcp.py.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
import time
from typing import Any

import pytest
import trustme

import pysock

from .peers.proxies import (  # noqa: F401 (fixtures)
    Proxy,
    dante_proxy,
    http_auth_proxy,
    http_proxy,
    socks5_auth_proxy,
    socks5_proxy,
)
from .peers.tcp import Server
from .peers.tls import client_context, server_context

WAIT = 10.0
PROXIES = ["socks5_proxy", "socks5_auth_proxy", "dante_proxy", "http_proxy", "http_auth_proxy"]


@pytest.fixture(params=PROXIES)
def proxy(request: pytest.FixtureRequest) -> Proxy:
    found: Proxy = request.getfixturevalue(request.param)
    return found


def _url(proxy: Proxy, scheme: str | None = None) -> str:
    if scheme is None or proxy.kind == "http":
        return proxy.url
    return scheme + proxy.url[proxy.url.index("://") :]


def _roundtrip(sock: pysock.Socket, data: bytes = b"through the tunnel") -> None:
    # A writer thread: a proxy buffers little, so a large echo needs reading meanwhile.
    writer = threading.Thread(target=sock.writable.write, args=(data,))
    writer.start()
    try:
        assert sock.readable.readexactly(len(data)) == data
    finally:
        writer.join(WAIT)


@pytest.mark.parametrize("scheme", ["socks5h", "socks5"])
def test_echo_through_the_proxy(proxy: Proxy, echo_server: Server, scheme: str) -> None:
    with pysock.connect(echo_server.address, proxy=_url(proxy, scheme), timeout=WAIT) as sock:
        info = sock.opened.result(WAIT)
        assert info.remote_address == f"127.0.0.1:{proxy.port}"  # The TCP peer: the proxy.
        _roundtrip(sock)
        _roundtrip(sock, b"x" * 300_000)


@pytest.mark.parametrize("scheme", ["socks5h", "socks5"])
def test_a_name_through_the_proxy(proxy: Proxy, echo_server: Server, scheme: str) -> None:
    url = _url(proxy, scheme)
    with pysock.connect(("localhost", echo_server.port), proxy=url, timeout=WAIT) as sock:
        _roundtrip(sock)


def test_the_servers_first_bytes_are_not_eaten(proxy: Proxy, serve: Any) -> None:
    """A greeting sent the moment the tunnel opens belongs to the destination."""

    def greet(conn: socket.socket) -> None:
        conn.sendall(b"220 hello\r\n")
        assert conn.recv(6) == b"QUIT\r\n"

    server = serve(greet)
    with pysock.connect(server.address, proxy=proxy.url, timeout=WAIT) as sock:
        assert sock.readable.readline() == b"220 hello\r\n"
        sock.writable.write(b"QUIT\r\n")


def test_tls_to_the_destination_through_the_tunnel(
    proxy: Proxy, ca: trustme.CA, leaf: trustme.LeafCert, serve: Any
) -> None:
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)

    def tls_echo(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            data = tls.recv(100)
            tls.sendall(data)
            tls.recv(1)  # The client's close_notify or EOF.

    server = serve(tls_echo)
    with pysock.connect(
        ("localhost", server.port),
        proxy=proxy.url,
        secure_transport="on",
        tls_context=client_context(ca),
        timeout=WAIT,
    ) as sock:
        _roundtrip(sock, b"secret")
        assert sock.tls is not None
        assert sock.tls.peer_certificate["subjectAltName"][0] == ("DNS", "localhost")


def test_start_tls_through_the_tunnel(
    proxy: Proxy, ca: trustme.CA, leaf: trustme.LeafCert, serve: Any
) -> None:
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)

    def starttls(conn: socket.socket) -> None:
        conn.sendall(b"220 ready\r\n")
        assert conn.recv(10) == b"STARTTLS\r\n"
        conn.sendall(b"220 go ahead\r\n")
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(100))
            tls.recv(1)

    server = serve(starttls)
    sock = pysock.connect(
        ("localhost", server.port),
        proxy=proxy.url,
        secure_transport="starttls",
        tls_context=client_context(ca),
        timeout=WAIT,
    )
    with sock:
        assert sock.readable.readline() == b"220 ready\r\n"
        sock.writable.write(b"STARTTLS\r\n")
        assert sock.readable.readline() == b"220 go ahead\r\n"
        with sock.start_tls() as secure:
            _roundtrip(secure, b"upgraded")


def test_a_refused_destination(proxy: Proxy, unused_port: int) -> None:
    sock = pysock.connect(("127.0.0.1", unused_port), proxy=proxy.url, timeout=WAIT)
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    assert f"127.0.0.1:{unused_port}" in str(error)
    assert "proxy" in str(error)
    assert error.errno is not None
    assert isinstance(error.__cause__, OSError)  # What failed, as for a direct connect.
    assert error.__cause__.errno == error.errno
    assert proxy.password is None or proxy.password not in str(error)


def test_an_unreachable_proxy(unused_port: int, echo_server: Server) -> None:
    url = f"socks5h://127.0.0.1:{unused_port}"
    sock = pysock.connect(echo_server.address, proxy=url, timeout=WAIT)
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    assert error.errno == errno.ECONNREFUSED


@pytest.mark.parametrize("which", ["socks5_auth_proxy", "http_auth_proxy"])
def test_credentials_are_required_and_checked(
    request: pytest.FixtureRequest, which: str, echo_server: Server
) -> None:
    proxy: Proxy = request.getfixturevalue(which)
    anonymous = proxy.url.replace(f"{proxy.username}:{proxy.password}@", "")
    wrong = proxy.url.replace(f":{proxy.password}@", ":wrong-password@")
    for url in (anonymous, wrong):
        sock = pysock.connect(echo_server.address, proxy=url, timeout=WAIT)
        with sock:
            error = sock.opened.exception(WAIT)
        assert isinstance(error, pysock.ConnectError), (url, error)
        assert error.errno == errno.EACCES, (url, error)
        assert "wrong-password" not in str(error)


def test_deny_private_checks_the_destination_not_the_proxy(
    request: pytest.FixtureRequest, echo_server: Server
) -> None:
    """The proxy (on loopback here) is the application's; the destination is the user's."""
    socks: Proxy = request.getfixturevalue("socks5_proxy")
    for url in (socks.url, _url(socks, "socks5")):
        sock = pysock.connect(
            echo_server.address, proxy=url, address_filter=pysock.deny_private, timeout=WAIT
        )
        with sock:
            error = sock.opened.exception(WAIT)
        assert isinstance(error, pysock.ConnectError)
        assert "loopback" in str(error)
    assert echo_server.accepted == []


def test_socks5_resolves_the_name_locally_and_checks_it(
    request: pytest.FixtureRequest, echo_server: Server
) -> None:
    socks: Proxy = request.getfixturevalue("socks5_proxy")
    seen: list[str] = []

    def record(ip: str, port: int) -> bool:
        seen.append(ip)
        return True

    url = _url(socks, "socks5")
    with pysock.connect(
        ("localhost", echo_server.port), proxy=url, address_filter=record, timeout=WAIT
    ) as sock:
        _roundtrip(sock)
    assert seen == ["127.0.0.1"]


@pytest.mark.parametrize("which", ["socks5_proxy", "http_proxy"])
def test_a_remote_resolving_proxy_cannot_check_a_name(
    request: pytest.FixtureRequest, which: str, echo_server: Server
) -> None:
    proxy: Proxy = request.getfixturevalue(which)
    sock = pysock.connect(
        ("localhost", echo_server.port),
        proxy=_url(proxy, "socks5h"),
        address_filter=lambda ip, port: True,
        timeout=WAIT,
    )
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    assert error.errno == errno.EACCES
    assert "resolves names" in str(error)
    assert isinstance(error.__cause__, OSError)  # ConnectError's cause: what failed.
    assert echo_server.accepted == []


def test_close_during_the_proxy_handshake(
    request: pytest.FixtureRequest, echo_server: Server
) -> None:
    socks: Proxy = request.getfixturevalue("socks5_proxy")
    for _ in range(20):
        sock = pysock.connect(echo_server.address, proxy=socks.url)
        sock.close()
        assert sock.closed.done()


def test_many_tunnels_at_once(request: pytest.FixtureRequest, echo_server: Server) -> None:
    http: Proxy = request.getfixturevalue("http_proxy")
    socks = [pysock.connect(echo_server.address, proxy=http.url, timeout=WAIT) for _ in range(20)]
    try:
        for index, sock in enumerate(socks):
            _roundtrip(sock, b"%d" % index)
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (1080, TypeError),
        ("socks4://127.0.0.1:1080", ValueError),
        ("https://127.0.0.1:3128", ValueError),
        ("socks5h://127.0.0.1", ValueError),
        ("socks5h://:1080", ValueError),
        ("http://127.0.0.1:3128/path", ValueError),
        ("socks5://127.0.0.1:99999", ValueError),
        ("socks5://" + "u" * 300 + ":p@127.0.0.1:1080", ValueError),
    ],
)
def test_proxy_urls_are_checked(url: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        pysock.connect("127.0.0.1:1", proxy=url)


def test_a_bad_proxy_url_never_shows_its_password() -> None:
    with pytest.raises(ValueError) as caught:
        pysock.connect("127.0.0.1:1", proxy="socks4://user:hunter2@127.0.0.1:1080")
    assert "hunter2" not in str(caught.value)


# -- hand-written proxies: replies in pieces, the destination's bytes right behind -----


def _fake_http_proxy(conn: socket.socket) -> None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += conn.recv(1)
    assert head.startswith(b"CONNECT 127.0.0.1:25 HTTP/1.1\r\n")
    for piece in (b"HTTP/1.1 2", b"00 Connection established\r", b"\n"):
        conn.sendall(piece)
        time.sleep(PAUSE)
    conn.sendall(
        b"Via: test\r\n\r\n220 greeting\r\n"
    )  # The end of the reply, then the destination.
    assert conn.recv(6) == b"QUIT\r\n"


def _fake_socks5_proxy(conn: socket.socket) -> None:
    assert conn.recv(3) == b"\x05\x01\x00"
    for byte in (b"\x05", b"\x00"):
        conn.sendall(byte)
        time.sleep(PAUSE)
    request = conn.recv(10)
    assert request == b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x19"  # CONNECT 127.0.0.1:25
    reply = b"\x05\x00\x00\x03\x09localhost\x00\x19"  # Bound to a name: ATYP 3.
    conn.sendall(reply[:6])
    time.sleep(PAUSE)
    conn.sendall(reply[6:] + b"220 greeting\r\n")
    assert conn.recv(6) == b"QUIT\r\n"


PAUSE = 0.2


@pytest.mark.parametrize(
    ("handler", "scheme"), [(_fake_http_proxy, "http"), (_fake_socks5_proxy, "socks5h")]
)
def test_a_reply_in_pieces_followed_by_the_destination(
    serve: Any, handler: Any, scheme: str
) -> None:
    server = serve(handler)
    cpu_before = time.process_time()
    with pysock.connect(
        "127.0.0.1:25", proxy=f"{scheme}://{server.address}", timeout=WAIT
    ) as sock:
        assert sock.readable.readline() == b"220 greeting\r\n"
        sock.writable.write(b"QUIT\r\n")
    # The pauses (0.6 s in all) are spent waiting, not spinning on a partial reply.
    assert time.process_time() - cpu_before < 0.3


def _not_a_proxy(conn: socket.socket) -> None:
    conn.recv(100)
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
def test_a_server_that_is_not_a_proxy(serve: Any, scheme: str) -> None:
    server = serve(_not_a_proxy)
    sock = pysock.connect("127.0.0.1:25", proxy=f"{scheme}://{server.address}", timeout=WAIT)
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    assert error.errno == errno.EPROTO
    assert f"through proxy {scheme}://{server.address}" in str(error)
