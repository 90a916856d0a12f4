"""Self-tests of the proxy fixtures (tests/peers/proxies.py), with plain stdlib sockets only.

They speak SOCKS5 (RFC 1928, RFC 1929 for username/password) and HTTP CONNECT
(RFC 9110 §9.3.6, Basic credentials in Proxy-Authorization) through every proxy to
the thread echo servers of tests/peers/tcp.py, and pin down how each server answers
a failure; pysock's proxy tests can rely on these answers:

==================  ===========================  =====================================
                    microsocks 1.0.3             danted 1.4.2
==================  ===========================  =====================================
refused port        REP 5, BND 0.0.0.0:0         REP 5, BND the address it tried from
unresolvable name   REP 1 (general failure)      REP 4 (host unreachable), BND the name
wrong credentials   RFC 1929 status 2, then EOF  (no authentication configured)
no credentials      method X'FF', then EOF       (no authentication configured)
success BND         always 0.0.0.0:0 (ATYP 1)    its outgoing address and port
::1 destination     yes                          yes, given `external: ::1`
client half-close   closes both ways             relayed (the peer's answer arrives)
message split       fails: X'FF', status 1 or    reassembled
over two writes     REP 1 (one recv() each)
pipelined messages  extra bytes dropped: hangs   answered in turn
==================  ===========================  =====================================

Every failure answer above ends with EOF (a "refused" reply from danted ends with
RST instead when its rules say `log: error` or `log: disconnect`; tests/peers/proxies.py
avoids both). The last two rows (seen by hand, not tested: they need a pause
between writes, or a wait for an answer that never comes) mean a client must send
each SOCKS5 message in one write and wait for its answer before the next.

tinyproxy 1.11.1: `HTTP/1.0 200 Connection established` (and `Proxy-agent:`) on
success; `HTTP/1.1 500 Unable to connect` with an HTML body and `Connection: close`
for a refused port and for an unresolvable name alike; without credentials
`HTTP/1.0 407 Proxy Authentication Required`; with wrong ones `HTTP/1.0 401
Unauthorized` (and `WWW-Authenticate`, not 407); ::1 destinations work (`[::1]:port`);
a client half-close closes both ways. Every failure answer ends with EOF.
"""

from __future__ import annotations

import base64
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Final, Optional

import pytest

from .helpers import recv_exactly
from .peers.proxies import (  # noqa: F401 (fixtures)
    HOST,
    PASSWORD,
    USERNAME,
    Proxy,
    dante_argv,
    dante_proxy,
    group_members,
    http_auth_proxy,
    http_proxy,
    live_members,
    socks5_answers,
    socks5_auth_proxy,
    socks5_proxy,
    start_proxy,
    stop_group,
)
from .peers.real_servers import ipv6_loopback_works
from .peers.tcp import Server, echo

Serve = Callable[..., Server]  # conftest's `serve` fixture: serve(handler, host=...)

TIMEOUT: Final = 10.0  # every blocking call: long enough for a loaded CI machine
PAYLOAD: Final = bytes(range(256)) * 256  # 64 KiB, every byte value
# A 64-octet label exceeds RFC 1035's 63 (§2.3.4): glibc's resolver rejects the name
# without sending a query, so the answer does not depend on the machine's DNS.
UNRESOLVABLE: Final = "a" * 64 + ".invalid"
MAX_RESPONSE: Final = 1 << 20  # bytes read at most from a proxy's error answer

# RFC 1928 numbers
SOCKS_VERSION: Final = 5
NO_AUTHENTICATION: Final = 0x00
USERNAME_PASSWORD: Final = 0x02
NO_ACCEPTABLE_METHODS: Final = 0xFF
CONNECT: Final = 0x01
ATYP_IPV4: Final = 0x01
ATYP_DOMAIN: Final = 0x03
ATYP_IPV6: Final = 0x04
SUCCEEDED: Final = 0x00
GENERAL_FAILURE: Final = 0x01
HOST_UNREACHABLE: Final = 0x04
CONNECTION_REFUSED: Final = 0x05

SOCKS_PROXIES: Final = ("socks5_proxy", "socks5_auth_proxy", "dante_proxy")
HTTP_PROXIES: Final = ("http_proxy", "http_auth_proxy")

# What each server (Proxy.program) answers; see the module docstring.
REFUSED_REPLY: Final = {"microsocks": CONNECTION_REFUSED, "dante": CONNECTION_REFUSED}
UNRESOLVABLE_REPLY: Final = {"microsocks": GENERAL_FAILURE, "dante": HOST_UNREACHABLE}
RELAYS_HALF_CLOSE: Final = {"microsocks": False, "dante": True, "tinyproxy": False}
HTTP_ESTABLISHED: Final = "HTTP/1.0 200 Connection established"
HTTP_UNABLE_TO_CONNECT: Final = "HTTP/1.1 500 Unable to connect"
HTTP_AUTHENTICATION_REQUIRED: Final = "HTTP/1.0 407 Proxy Authentication Required"
HTTP_WRONG_CREDENTIALS: Final = "HTTP/1.0 401 Unauthorized"


@dataclass(frozen=True)
class Destination:
    atyp: int  # how a SOCKS5 request names it
    host: str
    port: int

    @property
    def authority(self) -> str:
        """host:port as an HTTP CONNECT request names it (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SocksReply:
    rep: int
    atyp: int
    host: str
    port: int


@dataclass(frozen=True)
class HttpHead:
    status_line: str
    headers: dict[str, str]  # lowercase names


# Fixtures -----------------------------------------------------------------------------


@pytest.fixture(params=SOCKS_PROXIES)
def any_socks5_proxy(request: pytest.FixtureRequest) -> Proxy:
    proxy: Proxy = request.getfixturevalue(request.param)
    return proxy


@pytest.fixture(params=HTTP_PROXIES)
def any_http_proxy(request: pytest.FixtureRequest) -> Proxy:
    proxy: Proxy = request.getfixturevalue(request.param)
    return proxy


@pytest.fixture(params=SOCKS_PROXIES + HTTP_PROXIES)
def any_proxy(request: pytest.FixtureRequest) -> Proxy:
    proxy: Proxy = request.getfixturevalue(request.param)
    return proxy


def localhost_address() -> str:
    """Where a proxy resolving "localhost" connects first (the same getaddrinfo)."""
    family, _, _, _, sockaddr = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0]
    if family == socket.AF_INET6 and not ipv6_loopback_works():
        pytest.skip("localhost resolves to ::1 first, but IPv6 loopback is unavailable")
    return str(sockaddr[0])


@pytest.fixture(params=["ipv4", "domain", "ipv6"])
def destination(request: pytest.FixtureRequest, serve: Serve) -> Destination:
    """An echo server, named as an IPv4 address, as "localhost", or as ::1."""
    if request.param == "ipv6":
        if not ipv6_loopback_works():
            pytest.skip("IPv6 loopback ::1 is not available on this machine")
        return Destination(ATYP_IPV6, "::1", serve(echo, host="::1").port)
    if request.param == "domain":
        return Destination(ATYP_DOMAIN, "localhost", serve(echo, host=localhost_address()).port)
    return Destination(ATYP_IPV4, "127.0.0.1", serve(echo).port)


# Plain-socket clients ----------------------------------------------------------------


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything up to EOF; fails beyond MAX_RESPONSE bytes or at the socket timeout."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        assert len(data) <= MAX_RESPONSE, "the proxy does not stop sending"
    return data


def proxy_connection(proxy: Proxy) -> socket.socket:
    """A TCP connection to the proxy; the timeout covers every later call."""
    return socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT)


def socks5_greet(sock: socket.socket, methods: bytes) -> int:
    """RFC 1928 §3: offer authentication methods; return the one the proxy selects."""
    sock.sendall(bytes([SOCKS_VERSION, len(methods)]) + methods)
    version, method = recv_exactly(sock, 2)
    assert version == SOCKS_VERSION
    return method


def socks5_login(sock: socket.socket, username: str, password: str) -> int:
    """RFC 1929: send username/password; return the status (0 is success)."""
    user, secret = username.encode(), password.encode()
    sock.sendall(bytes([1, len(user)]) + user + bytes([len(secret)]) + secret)
    version, status = recv_exactly(sock, 2)
    assert version == 1  # the subnegotiation's version, not SOCKS's
    return status


def socks5_authenticate(sock: socket.socket, proxy: Proxy) -> None:
    if proxy.username is None or proxy.password is None:
        assert socks5_greet(sock, bytes([NO_AUTHENTICATION])) == NO_AUTHENTICATION
        return
    offered = bytes([NO_AUTHENTICATION, USERNAME_PASSWORD])
    assert socks5_greet(sock, offered) == USERNAME_PASSWORD
    assert socks5_login(sock, proxy.username, proxy.password) == 0


def socks5_address(atyp: int, host: str) -> bytes:
    if atyp == ATYP_IPV4:
        return bytes([ATYP_IPV4]) + socket.inet_pton(socket.AF_INET, host)
    if atyp == ATYP_IPV6:
        return bytes([ATYP_IPV6]) + socket.inet_pton(socket.AF_INET6, host)
    name = host.encode()
    return bytes([ATYP_DOMAIN, len(name)]) + name


def socks5_request(sock: socket.socket, atyp: int, host: str, port: int) -> SocksReply:
    """RFC 1928 §4-6: CONNECT; read the whole reply, BND.ADDR and BND.PORT included."""
    address = socks5_address(atyp, host) + struct.pack("!H", port)
    sock.sendall(bytes([SOCKS_VERSION, CONNECT, 0]) + address)  # one write: microsocks
    version, rep, _reserved, bound_atyp = recv_exactly(sock, 4)
    assert version == SOCKS_VERSION
    if bound_atyp == ATYP_IPV4:
        bound = socket.inet_ntop(socket.AF_INET, recv_exactly(sock, 4))
    elif bound_atyp == ATYP_IPV6:
        bound = socket.inet_ntop(socket.AF_INET6, recv_exactly(sock, 16))
    else:
        assert bound_atyp == ATYP_DOMAIN, f"unknown ATYP {bound_atyp}"
        bound = recv_exactly(sock, recv_exactly(sock, 1)[0]).decode()
    (bound_port,) = struct.unpack("!H", recv_exactly(sock, 2))
    return SocksReply(rep, bound_atyp, bound, bound_port)


def basic_credentials(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def http_connect(
    sock: socket.socket, authority: str, authorization: Optional[str] = None
) -> HttpHead:
    """Send CONNECT; read the response head, and nothing after it."""
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if authorization is not None:
        lines.append(f"Proxy-Authorization: {authorization}")
    sock.sendall("".join(line + "\r\n" for line in lines).encode() + b"\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: the tunnel's data stays unread
        assert len(head) < MAX_RESPONSE, "no end of the response head"
        head += recv_exactly(sock, 1)
    status_line, *fields = head.decode("latin-1").split("\r\n")[:-2]
    headers: dict[str, str] = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpHead(status_line, headers)


def proxy_authorization(proxy: Proxy) -> Optional[str]:
    if proxy.username is None or proxy.password is None:
        return None
    return basic_credentials(proxy.username, proxy.password)


def open_tunnel(proxy: Proxy, destination: Destination) -> socket.socket:
    """A connection through the proxy to the destination, ready for data."""
    sock = proxy_connection(proxy)
    try:
        if proxy.kind == "socks5":
            socks5_authenticate(sock, proxy)
            reply = socks5_request(sock, destination.atyp, destination.host, destination.port)
            assert reply.rep == SUCCEEDED, reply
        else:
            head = http_connect(sock, destination.authority, proxy_authorization(proxy))
            assert head.status_line == HTTP_ESTABLISHED, head
    except BaseException:
        sock.close()
        raise
    return sock


# Fixtures' shape -----------------------------------------------------------------------


def test_proxy_urls_name_scheme_credentials_and_address(
    socks5_proxy: Proxy,  # noqa: F811
    socks5_auth_proxy: Proxy,  # noqa: F811
    dante_proxy: Proxy,  # noqa: F811
    http_proxy: Proxy,  # noqa: F811
    http_auth_proxy: Proxy,  # noqa: F811
) -> None:
    for proxy, kind, program in [
        (socks5_proxy, "socks5", "microsocks"),
        (socks5_auth_proxy, "socks5", "microsocks"),
        (dante_proxy, "socks5", "dante"),
        (http_proxy, "http", "tinyproxy"),
        (http_auth_proxy, "http", "tinyproxy"),
    ]:
        assert (proxy.kind, proxy.program, proxy.host) == (kind, program, HOST)
        credentials = f"{USERNAME}:{PASSWORD}@" if proxy.username else ""
        assert proxy.url == f"{kind}://{credentials}{HOST}:{proxy.port}"
    assert [p.username for p in (socks5_auth_proxy, http_auth_proxy)] == [USERNAME] * 2
    assert [p.password for p in (socks5_auth_proxy, http_auth_proxy)] == [PASSWORD] * 2
    assert socks5_proxy.username is socks5_proxy.password is None
    assert http_proxy.username is http_proxy.password is None
    assert len({p.port for p in (socks5_proxy, socks5_auth_proxy, dante_proxy)}) == 3


# Every proxy ---------------------------------------------------------------------------


def test_a_tunnel_relays_bytes_both_ways(any_proxy: Proxy, destination: Destination) -> None:
    with open_tunnel(any_proxy, destination) as sock:
        sock.sendall(PAYLOAD)
        assert recv_exactly(sock, len(PAYLOAD)) == PAYLOAD
        sock.sendall(b"again")
        assert recv_exactly(sock, 5) == b"again"


def answer_after_eof(conn: socket.socket) -> None:
    """Read to EOF, then answer: only a proxy that relays half-closes delivers it."""
    while conn.recv(65536):
        pass
    try:
        conn.sendall(b"after EOF")
    except OSError:
        pass  # the proxy closed both ways: nobody reads the answer


def test_a_client_half_close(any_proxy: Proxy, serve: Serve) -> None:
    server = serve(answer_after_eof)
    with open_tunnel(any_proxy, Destination(ATYP_IPV4, "127.0.0.1", server.port)) as sock:
        sock.shutdown(socket.SHUT_WR)
        expected = b"after EOF" if RELAYS_HALF_CLOSE[any_proxy.program] else b""
        assert read_to_eof(sock) == expected


# SOCKS5 --------------------------------------------------------------------------------


def test_socks5_bound_address(any_socks5_proxy: Proxy, destination: Destination) -> None:
    """microsocks always reports 0.0.0.0:0; danted its outgoing address and port."""
    with proxy_connection(any_socks5_proxy) as sock:
        socks5_authenticate(sock, any_socks5_proxy)
        reply = socks5_request(sock, destination.atyp, destination.host, destination.port)
    assert reply.rep == SUCCEEDED
    if any_socks5_proxy.program == "microsocks":
        assert (reply.atyp, reply.host, reply.port) == (ATYP_IPV4, "0.0.0.0", 0)
    elif destination.host == "::1":
        assert (reply.atyp, reply.host) == (ATYP_IPV6, "::1") and reply.port != 0
    else:
        assert (reply.atyp, reply.host) == (ATYP_IPV4, "127.0.0.1") and reply.port != 0


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_socks5_refused_destination(any_socks5_proxy: Proxy, unused_port: int, host: str) -> None:
    if ":" in host and not ipv6_loopback_works():
        pytest.skip("IPv6 loopback ::1 is not available on this machine")
    atyp = ATYP_IPV6 if ":" in host else ATYP_IPV4
    with proxy_connection(any_socks5_proxy) as sock:
        socks5_authenticate(sock, any_socks5_proxy)
        reply = socks5_request(sock, atyp, host, unused_port)
        assert reply.rep == REFUSED_REPLY[any_socks5_proxy.program], reply
        assert read_to_eof(sock) == b""


def test_socks5_unresolvable_name(any_socks5_proxy: Proxy) -> None:
    with proxy_connection(any_socks5_proxy) as sock:
        socks5_authenticate(sock, any_socks5_proxy)
        reply = socks5_request(sock, ATYP_DOMAIN, UNRESOLVABLE, 80)
        assert reply.rep == UNRESOLVABLE_REPLY[any_socks5_proxy.program], reply
        if any_socks5_proxy.program == "dante":  # it echoes the name it could not resolve
            assert (reply.atyp, reply.host, reply.port) == (ATYP_DOMAIN, UNRESOLVABLE, 80)
        assert read_to_eof(sock) == b""


@pytest.mark.parametrize(
    ("username", "password", "status"),
    [(USERNAME, "wrong", 2), ("stranger", PASSWORD, 2), ("", "", 1)],
    ids=["wrong-password", "wrong-username", "empty"],
)
def test_socks5_wrong_credentials_are_refused(
    socks5_auth_proxy: Proxy,  # noqa: F811
    username: str,
    password: str,
    status: int,
) -> None:
    """RFC 1929: a non-zero status, then the server closes. microsocks says 2 (its "not
    allowed"), but 1 (general failure) for a message shorter than 5 bytes."""
    with proxy_connection(socks5_auth_proxy) as sock:
        assert socks5_greet(sock, bytes([USERNAME_PASSWORD])) == USERNAME_PASSWORD
        assert socks5_login(sock, username, password) == status
        assert read_to_eof(sock) == b""


def test_socks5_missing_credentials_are_refused(
    socks5_auth_proxy: Proxy,  # noqa: F811
) -> None:
    """Offering only "no authentication" gets X'FF' (RFC 1928 §3), then EOF."""
    with proxy_connection(socks5_auth_proxy) as sock:
        assert socks5_greet(sock, bytes([NO_AUTHENTICATION])) == NO_ACCEPTABLE_METHODS
        assert read_to_eof(sock) == b""


@pytest.mark.parametrize("proxy_name", ["socks5_proxy", "dante_proxy"])
def test_socks5_proxy_without_authentication_refuses_only_username_password(
    request: pytest.FixtureRequest, proxy_name: str
) -> None:
    proxy: Proxy = request.getfixturevalue(proxy_name)
    with proxy_connection(proxy) as sock:
        assert socks5_greet(sock, bytes([USERNAME_PASSWORD])) == NO_ACCEPTABLE_METHODS
        assert read_to_eof(sock) == b""


def test_dante_answers_pipelined_messages(
    dante_proxy: Proxy,  # noqa: F811
    echo_server: Server,
) -> None:
    """Greeting, request and data in one write: danted answers each in turn."""
    request = socks5_address(ATYP_IPV4, "127.0.0.1") + struct.pack("!H", echo_server.port)
    with proxy_connection(dante_proxy) as sock:
        sock.sendall(b"\x05\x01\x00" + b"\x05\x01\x00" + request + b"early data")
        assert recv_exactly(sock, 2) == bytes([SOCKS_VERSION, NO_AUTHENTICATION])
        assert recv_exactly(sock, 4)[1] == SUCCEEDED
        recv_exactly(sock, 4 + 2)  # BND.ADDR (IPv4) and BND.PORT
        assert recv_exactly(sock, len(b"early data")) == b"early data"


def test_dante_forks_and_stopping_its_group_leaves_no_process(tmp_path: Path) -> None:
    server = start_proxy("dante", dante_argv(), socks5_answers, tmp_path)
    try:
        members = group_members(server.process.pid)
        assert len(members) > 1, f"danted did not fork: {members}"  # monitor, negotiate...
    finally:
        stop_group(server)
    assert server.process.returncode is not None  # reaped
    assert live_members(server.process.pid) == {}  # zombies wait for PID 1 (see stop_group)


# HTTP CONNECT --------------------------------------------------------------------------


def test_http_connect_answer_head(any_http_proxy: Proxy, echo_server: Server) -> None:
    with proxy_connection(any_http_proxy) as sock:
        head = http_connect(sock, echo_server.address, proxy_authorization(any_http_proxy))
        assert head.status_line == HTTP_ESTABLISHED
        assert head.headers["proxy-agent"].startswith("tinyproxy/")


@pytest.mark.parametrize("target", ["refused-ipv4", "refused-ipv6", "unresolvable"])
def test_http_connect_failure_is_500(any_http_proxy: Proxy, unused_port: int, target: str) -> None:
    if target == "refused-ipv6" and not ipv6_loopback_works():
        pytest.skip("IPv6 loopback ::1 is not available on this machine")
    authority = {
        "refused-ipv4": f"127.0.0.1:{unused_port}",
        "refused-ipv6": f"[::1]:{unused_port}",
        "unresolvable": f"{UNRESOLVABLE}:80",
    }[target]
    with proxy_connection(any_http_proxy) as sock:
        head = http_connect(sock, authority, proxy_authorization(any_http_proxy))
        assert head.status_line == HTTP_UNABLE_TO_CONNECT
        assert head.headers["connection"] == "close"
        assert head.headers["content-type"] == "text/html"
        assert b"Unable to connect" in read_to_eof(sock)


def test_http_missing_credentials_are_407(
    http_auth_proxy: Proxy,  # noqa: F811
    echo_server: Server,
) -> None:
    with proxy_connection(http_auth_proxy) as sock:
        head = http_connect(sock, echo_server.address)
        assert head.status_line == HTTP_AUTHENTICATION_REQUIRED
        assert head.headers["proxy-authenticate"] == 'Basic realm="Tinyproxy"'
        assert head.headers["connection"] == "close"
        read_to_eof(sock)
    assert not echo_server.accepted


@pytest.mark.parametrize(("username", "password"), [(USERNAME, "wrong"), ("stranger", PASSWORD)])
def test_http_wrong_credentials_are_401(
    http_auth_proxy: Proxy,  # noqa: F811
    echo_server: Server,
    username: str,
    password: str,
) -> None:
    """tinyproxy answers wrong credentials with 401 and WWW-Authenticate, not 407."""
    with proxy_connection(http_auth_proxy) as sock:
        head = http_connect(sock, echo_server.address, basic_credentials(username, password))
        assert head.status_line == HTTP_WRONG_CREDENTIALS
        assert head.headers["www-authenticate"] == 'Basic realm="Tinyproxy"'
        read_to_eof(sock)
    assert not echo_server.accepted
