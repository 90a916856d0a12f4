"""pysock under httpx: real httpx, through pysock.httpx.Transport, against real loopback servers.

The servers: the stdlib ``http.server`` in a thread (plain, TLS with a trustme
certificate, and on a Unix socket), raw handlers of tests/_servers.py for the
misbehaving peers (silence, a full receive window, a reset), nginx for HTTP/2
(tests/_nginx.py), and microsocks and tinyproxy for the proxies
(tests/_proxies.py).
"""

from __future__ import annotations

import concurrent.futures
import errno
import http.server
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional, Union

import httpcore
import httpx
import pytest
import trustme

import pysock
import pysock.httpcore
import pysock.httpx
from pysock import _opening
from pysock.httpx import Transport

from .peers.nginx import Nginx, nginx  # noqa: F401 (fixture)
from .peers.proxies import Proxy, http_proxy, socks5_proxy  # noqa: F401 (fixtures)
from .peers.real_servers import ipv6_loopback_works
from .peers.tcp import PEER_TIMEOUT, Blackhole, Server
from .peers.tls import server_context

WAIT = 10.0  # seconds: the bound of every wait that should end at once
SHORT = 0.2  # seconds: the timeouts the timeout tests expect to pass
TLS_VERSIONS = {"TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}


# -- the stdlib HTTP server, in a thread -------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """``/`` says hello; ``/close`` answers, then closes the idle keep-alive connection
    without a ``Connection: close``; ``/redirect?to=URL`` redirects; ``/whoami`` names
    the client certificate; POST answers with the body's length."""

    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart
    timeout = PEER_TIMEOUT

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):  # here, in this thread, not in accept()
            self.request.settimeout(self.timeout)
            self.request.do_handshake()  # before setup()'s files, which a failure would leak
        super().setup()

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/redirect":
            target = urllib.parse.parse_qs(query)["to"][0]
            self._answer(b"", 302, location=target)
        elif path == "/whoami":
            assert isinstance(self.request, ssl.SSLSocket)
            certificate: Any = self.request.getpeercert()
            subject = dict(pair[0] for pair in certificate["subject"])
            self._answer(f"client certificate: {subject['organizationalUnitName']}".encode())
        else:
            self._answer(b"hello from " + path.encode())
            self.close_connection = path == "/close"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(f"{len(body)} bytes".encode())

    def _answer(self, body: bytes, status: int = 200, location: Optional[str] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if location is not None:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests check what matters


class _Counting:
    """Counts the connections a socketserver accepted; keeps its handlers' errors."""

    connections: int
    errors: list[BaseException]

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)  # type: ignore[misc]

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # OSError, SSLError: the client went away
            self.errors.append(error or RuntimeError("unknown handler error"))


class HTTPServer(_Counting, http.server.ThreadingHTTPServer):
    """``http.server`` on a loopback address, port 0, plain or TLS."""

    daemon_threads = False  # server_close() joins every connection's thread

    def __init__(self, host: str, context: Optional[ssl.SSLContext] = None, port: int = 0) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.connections = 0
        self.errors = []
        super().__init__((host, port), Handler)
        if context is not None:
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self.host = host
        self.port: int = self.server_address[1]

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # HTTPServer's would look up the fqdn
        self.server_name, self.server_port = self.host_name(), self.server_address[1]

    def host_name(self) -> str:
        return "localhost"

    def url(self, path: str = "/", host: Optional[str] = None) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        shown = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{shown}:{self.port}{path}"


class UnixHandler(Handler):
    disable_nagle_algorithm = False  # a TCP option


class UnixHTTPServer(_Counting, socketserver.ThreadingUnixStreamServer):
    """``http.server``'s handler on a Unix domain socket."""

    daemon_threads = False

    def __init__(self, path: str) -> None:
        self.connections = 0
        self.errors = []
        super().__init__(path, UnixHandler)


Served = Union[HTTPServer, UnixHTTPServer]


@pytest.fixture
def http_servers() -> Iterator[Callable[..., Any]]:
    """Start servers with ``start(server)``; each is stopped, joined and checked after."""
    running: list[tuple[Served, threading.Thread]] = []

    def start(server: Served) -> Served:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-http")
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()  # joins the connections' threads (each has a timeout)
        thread.join(WAIT)
    for server, _ in running:
        if server.errors:
            raise server.errors[0]


@pytest.fixture
def http_server(http_servers: Callable[..., Any]) -> HTTPServer:
    server: HTTPServer = http_servers(HTTPServer("127.0.0.1"))
    return server


@pytest.fixture
def tls_context(ca: trustme.CA) -> ssl.SSLContext:
    """The client's context for verify=: trusts the session's trustme CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _tls_server(
    start: Callable[..., Any], leaf: trustme.LeafCert, version: str = "TLSv1_3"
) -> HTTPServer:
    context = server_context(leaf, TLS_VERSIONS[version])
    context.set_alpn_protocols(["http/1.1"])  # as a real HTTPS server: h2 is not offered
    server: HTTPServer = start(HTTPServer("127.0.0.1", context))
    return server


def _client(**options: Any) -> httpx.Client:
    timeout = options.pop("timeout", WAIT)
    return httpx.Client(transport=Transport(**options), timeout=timeout)


def _pysock_socket(response: httpx.Response) -> pysock.Socket:
    sock = response.extensions["network_stream"].get_extra_info("pysock_socket")
    assert isinstance(sock, pysock.Socket)
    return sock


def _wait_closed(sock: pysock.Socket) -> None:
    """Wait (bounded) until pysock saw the connection end, cleanly or not."""
    done, _ = concurrent.futures.wait([sock.closed], WAIT)
    assert done, f"{sock!r} did not see the server close the connection"


# -- importing -----------------------------------------------------------------------------


def test_import_pysock_loads_no_http_library() -> None:
    """``import pysock`` needs typing-extensions alone; the httpx modules load on use."""
    code = (
        "import sys, pysock\n"
        "names = {'httpx', 'httpcore', 'h2', 'h11', 'anyio', 'certifi', 'hpack'}\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] in names\n"
        "                or m in ('pysock.httpx', 'pysock.httpcore'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=True
    )
    assert result.stdout.strip() == "[]"


# -- requests, plain and TLS -----------------------------------------------------------------


def test_get_over_plain_http(http_server: HTTPServer) -> None:
    with _client() as client:
        response = client.get(http_server.url("/plain"))
    assert (response.status_code, response.text) == (200, "hello from /plain")
    assert response.http_version == "HTTP/1.1"
    stream = response.extensions["network_stream"]
    assert stream.get_extra_info("server_addr") == ("127.0.0.1", http_server.port)
    host, port = stream.get_extra_info("client_addr")
    assert host == "127.0.0.1" and isinstance(port, int)
    assert stream.get_extra_info("ssl_object") is None
    assert stream.get_extra_info("socket") is None  # pysock lends no stdlib socket


@pytest.mark.parametrize("version", sorted(TLS_VERSIONS))
def test_get_over_tls_verified_with_httpx_verify(
    http_servers: Callable[..., Any],
    leaf: trustme.LeafCert,
    tls_context: ssl.SSLContext,
    version: str,
) -> None:
    server = _tls_server(http_servers, leaf, version)
    with _client(verify=tls_context) as client:
        response = client.get(server.url("/tls", host="localhost"))
        by_ip = client.get(server.url("/by-ip"))  # the certificate's IP SAN
    assert response.text == "hello from /tls" and by_ip.text == "hello from /by-ip"
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    assert ssl_object.version() == version.replace("_", ".")
    assert ssl_object.selected_alpn_protocol() == "http/1.1"  # httpcore offered it
    assert ssl_object.getpeercert()["subjectAltName"][0] == ("DNS", "localhost")
    tls = _pysock_socket(response).tls
    assert tls is not None and ssl_object.getpeercert(True) == tls.peer_certificate_der


def test_verify_refuses_a_certificate_from_another_ca(
    http_servers: Callable[..., Any], leaf: trustme.LeafCert
) -> None:
    server = _tls_server(http_servers, leaf)
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)
    with _client(verify=stranger) as client, pytest.raises(httpx.ConnectError) as caught:
        client.get(server.url(host="localhost"))
    assert isinstance(caught.value.__cause__, pysock.TLSError)
    assert "certificate verify failed" in str(caught.value)
    assert server.connections == 1


def test_cert_sends_a_client_certificate(
    http_servers: Callable[..., Any],
    ca: trustme.CA,
    leaf: trustme.LeafCert,
    tls_context: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    server: HTTPServer = http_servers(HTTPServer("127.0.0.1", context))
    client_cert = ca.issue_cert("client.example", organization_unit_name="pysock client")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client_cert.cert_chain_pems[0].write_to_path(str(cert))
    client_cert.private_key_pem.write_to_path(str(key))
    with warnings.catch_warnings():  # httpx 0.28 deprecated cert= (for verify=<context>)
        warnings.filterwarnings("ignore", "`cert=...` is deprecated", DeprecationWarning)
        transport = Transport(verify=tls_context, cert=(str(cert), str(key)))
    with httpx.Client(transport=transport, timeout=WAIT) as client:
        response = client.get(server.url("/whoami", host="localhost"))
    assert response.text == "client certificate: pysock client"


def test_post_sends_the_body(http_server: HTTPServer) -> None:
    with _client() as client:
        response = client.post(http_server.url(), content=b"x" * 3_000_000)
    assert response.text == "3000000 bytes"


def test_the_backend_serves_httpcore_directly(http_server: HTTPServer) -> None:
    backend = pysock.httpcore.Backend(happy_eyeballs_delay=0.1)
    with httpcore.ConnectionPool(network_backend=backend) as pool:
        response = pool.request("GET", http_server.url("/core"), extensions={"timeout": {}})
    assert (response.status, response.content) == (200, b"hello from /core")


# -- keep-alive, and a server that closes idle connections ------------------------------------


def test_keep_alive_reuses_one_connection(http_server: HTTPServer) -> None:
    with _client() as client:
        responses = [client.get(http_server.url(f"/{n}")) for n in range(5)]
    assert [r.text for r in responses] == [f"hello from /{n}" for n in range(5)]
    sockets = {id(_pysock_socket(r)) for r in responses}
    assert (len(sockets), http_server.connections) == (1, 1)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_connection_the_server_closed_while_idle_is_not_reused(
    http_servers: Callable[..., Any],
    leaf: trustme.LeafCert,
    tls_context: ssl.SSLContext,
    tls: bool,
) -> None:
    """The server hangs up an idle keep-alive connection without a word (no
    ``Connection: close``): the next request opens a new connection, and no error
    reaches the caller. (A TLS ``http.server`` hangs up without close_notify.)"""
    server = _tls_server(http_servers, leaf) if tls else http_servers(HTTPServer("127.0.0.1"))
    with _client(verify=tls_context) as client:
        first = client.get(server.url("/close", host="localhost"))
        stream = first.extensions["network_stream"]
        _wait_closed(_pysock_socket(first))
        assert stream.get_extra_info("is_readable") is True  # httpcore drops it now
        second = client.get(server.url("/again", host="localhost"))
    assert (first.text, second.text) == ("hello from /close", "hello from /again")
    assert _pysock_socket(second) is not _pysock_socket(first)
    assert server.connections == 2


def test_is_readable_is_the_closed_future_and_makes_no_system_call(
    http_server: HTTPServer,
) -> None:
    with _client() as client:
        response = client.get(http_server.url())
        stream = response.extensions["network_stream"]
        calls: list[str] = []

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "c_call":
                calls.append(f"{getattr(arg, '__module__', None)}.{arg.__qualname__}")

        sys.setprofile(profile)
        try:
            readable = stream.get_extra_info("is_readable")
        finally:
            sys.setprofile(None)
        assert readable is False  # idle and open
        calls.remove("sys.setprofile")  # the profiler's own end
        assert calls and all(call.endswith(("__enter__", "__exit__")) for call in calls), calls
        assert not _pysock_socket(response).closed.done()


# -- the destination guard -------------------------------------------------------------------


ADDRESS_FORMS = [
    # (the URL's host, where the server listens, the address the refusal names)
    ("127.0.0.1", "127.0.0.1", "127.0.0.1 is a loopback address"),
    ("[::1]", "::1", "::1 is a loopback address"),
    ("[::ffff:127.0.0.1]", "127.0.0.1", "::ffff:127.0.0.1 is a loopback address (IPv4-mapped"),
    ("localhost", "127.0.0.1", "127.0.0.1 is a loopback address"),
]


@pytest.mark.parametrize(("host", "listen", "refusal"), ADDRESS_FORMS)
def test_deny_private_refuses_every_address_form(
    http_servers: Callable[..., Any], host: str, listen: str, refusal: str
) -> None:
    if ":" in listen and not ipv6_loopback_works():
        pytest.skip("IPv6 loopback ::1 is not available on this machine")
    server: HTTPServer = http_servers(HTTPServer(listen))
    url = server.url("/", host=host)
    with _client() as client:  # unguarded: the URL does reach the server
        assert client.get(url).status_code == 200
    with (
        _client(address_filter=pysock.deny_private) as client,
        pytest.raises(httpx.ConnectError) as caught,
    ):
        client.get(url)
    assert f"destination refused: {refusal}" in str(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, pysock.ConnectError) and cause.errno == errno.EACCES
    assert isinstance(caught.value.__context__, httpcore.ConnectError)
    assert server.connections == 1  # the unguarded request's only


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("http://localhost:{other}/", "127.0.0.1"),
        ("http://[::ffff:7f00:1]:{other}/", "::ffff:7f00:1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ],
)
def test_a_redirect_to_a_refused_address_is_refused(
    http_servers: Callable[..., Any], target: str, refused: str
) -> None:
    """Each connection the client opens meets the guard, those of redirects too.
    (Nothing reaches 169.254.169.254: the guard refuses before the connect.)"""
    public = http_servers(HTTPServer("127.0.0.1"))  # stands in for a public server
    other = http_servers(HTTPServer("127.0.0.1"))

    def only_the_public_server(ip: str, port: int) -> bool:
        return (ip, port) == ("127.0.0.1", public.port) or pysock.deny_private(ip, port)

    location = urllib.parse.quote(target.format(other=other.port), safe="")
    with _client(address_filter=only_the_public_server) as client:
        assert client.get(public.url("/redirect?to=%2Fhere"), follow_redirects=True).text == (
            "hello from /here"
        )
        with pytest.raises(httpx.ConnectError, match=f"{refused} is refused by address_filter"):
            client.get(public.url(f"/redirect?to={location}"), follow_redirects=True)
    assert other.connections == 0


def test_retries_meet_the_guard_each_time(unused_port: int) -> None:
    seen: list[tuple[str, int]] = []

    def allow_and_count(ip: str, port: int) -> bool:
        seen.append((ip, port))
        return True

    client = _client(address_filter=allow_and_count, retries=1)
    with client, pytest.raises(httpx.ConnectError) as caught:
        client.get(f"http://127.0.0.1:{unused_port}/")
    assert seen == [("127.0.0.1", unused_port)] * 2  # httpcore retried once, at once
    assert isinstance(caught.value.__cause__, pysock.ConnectError)
    assert caught.value.__cause__.errno == errno.ECONNREFUSED


def test_happy_eyeballs_passes_a_blackholed_family_by(
    http_servers: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with a silent IPv6 address and a working IPv4 one: the request goes
    through after the Happy Eyeballs delay, not after the connect timeout."""
    if not ipv6_loopback_works():
        pytest.skip("IPv6 loopback ::1 is not available on this machine")
    name = "dual.pysock.test"  # resolved through pysock's resolver seam, as in test_happy_eyeballs
    real = socket.getaddrinfo

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        addresses = ["::1", "127.0.0.1"] if host == name else [host]
        return [info for ip in addresses for info in real(ip, port, *args, **kwargs)]

    monkeypatch.setattr(_opening, "getaddrinfo", resolve)
    hole, server = _blackhole_and_server_on_one_port()
    try:
        http_servers(server)
        transport = Transport(happy_eyeballs_delay=0.05)
        with httpx.Client(transport=transport, timeout=httpx.Timeout(WAIT)) as client:
            response = client.get(f"http://{name}:{server.port}/raced")
    finally:
        hole.close()
    assert response.text == "hello from /raced"
    assert response.extensions["network_stream"].get_extra_info("server_addr") == (
        "127.0.0.1",
        server.port,
    )
    assert response.elapsed.total_seconds() < WAIT / 2  # not the connect timeout


def _blackhole_and_server_on_one_port() -> tuple[Blackhole, HTTPServer]:
    """A blackhole on ::1 and an HTTP server on 127.0.0.1, on the same port."""
    for _ in range(20):  # the blackhole's port may be taken on 127.0.0.1
        hole = Blackhole("::1")
        try:
            return hole, HTTPServer("127.0.0.1", port=hole.port)
        except OSError:
            hole.close()
    raise AssertionError("no port free on both loopback addresses")


# -- timeouts and errors ----------------------------------------------------------------------


def test_connect_timeout(blackhole: Blackhole) -> None:
    client = _client(timeout=httpx.Timeout(WAIT, connect=SHORT))
    with client, pytest.raises(httpx.ConnectTimeout) as caught:
        client.get(f"http://{blackhole.address}/")
    assert isinstance(caught.value.__cause__, pysock.SocketTimeout)


def test_a_tls_handshake_never_answered_is_a_connect_timeout(
    serve: Callable[..., Server], tls_context: ssl.SSLContext
) -> None:
    server = serve(_read_until_eof)  # takes the ClientHello, never answers
    client = _client(verify=tls_context, timeout=httpx.Timeout(WAIT, connect=SHORT))
    with client, pytest.raises(httpx.ConnectTimeout):
        client.get(f"https://localhost:{server.port}/")


def test_read_timeout(serve: Callable[..., Server]) -> None:
    server = serve(_read_until_eof)  # takes the request, never answers
    client = _client(timeout=httpx.Timeout(WAIT, read=SHORT))
    with client, pytest.raises(httpx.ReadTimeout) as caught:
        client.get(f"http://{server.address}/")
    assert isinstance(caught.value.__cause__, pysock.SocketTimeout)


def test_write_timeout(serve: Callable[..., Server]) -> None:
    done = threading.Event()
    server = serve(lambda conn: done.wait(WAIT))  # never reads: the windows fill up
    try:
        client = _client(timeout=httpx.Timeout(WAIT, write=SHORT))
        with client, pytest.raises(httpx.WriteTimeout) as caught:
            client.post(f"http://{server.address}/", content=b"x" * (64 << 20))
    finally:
        done.set()
    assert isinstance(caught.value.__cause__, pysock.SocketTimeout)


def test_pool_timeout(http_server: HTTPServer) -> None:
    limits = httpx.Limits(max_connections=1)
    client = _client(limits=limits, timeout=httpx.Timeout(WAIT, pool=SHORT))
    holding = client.stream("GET", http_server.url())  # holds the only connection
    with client, holding, pytest.raises(httpx.PoolTimeout):
        client.get(http_server.url())


def test_a_reset_mid_response_is_a_read_error(serve: Callable[..., Server]) -> None:
    def cut_short(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = serve(cut_short)  # closing with SO_LINGER 0 sends RST
    with _client() as client, pytest.raises(httpx.ReadError) as caught:
        client.get(f"http://{server.address}/")
    assert isinstance(caught.value.__cause__, pysock.BrokenSocketError)


@pytest.mark.parametrize("ignore", [False, True], ids=["strict", "ignore_unexpected_eof"])
def test_a_tls_end_without_close_notify(
    serve: Callable[..., Server],
    leaf: trustme.LeafCert,
    tls_context: ssl.SSLContext,
    ignore: bool,
) -> None:
    """A body that runs until the server hangs up, which it does without close_notify:
    a possible truncation, an error unless the transport was told to accept it."""
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)

    def close_delimited(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            _read_request(tls)
            tls.sendall(b"HTTP/1.0 200 OK\r\n\r\nthe body runs until the end")
        # SSLSocket.close() sends no close_notify: only unwrap() would

    server = serve(close_delimited)
    client = _client(verify=tls_context, ignore_unexpected_eof=ignore)
    with client:
        if ignore:
            assert client.get(f"https://localhost:{server.port}/").text == (
                "the body runs until the end"
            )
            return
        with pytest.raises(httpx.ReadError, match="without close_notify") as caught:
            client.get(f"https://localhost:{server.port}/")
    assert isinstance(caught.value.__cause__, pysock.BrokenSocketError)


def test_the_backend_maps_each_error(serve: Callable[..., Server], unused_port: int) -> None:
    backend = pysock.httpcore.Backend()
    with pytest.raises(httpcore.ConnectError) as refused:
        backend.connect_tcp("127.0.0.1", unused_port, timeout=WAIT)
    assert isinstance(refused.value.__cause__, pysock.ConnectError)
    assert f"127.0.0.1:{unused_port}" in str(refused.value)
    late = threading.Event()

    def answer_late(conn: socket.socket) -> None:
        late.wait(WAIT)
        conn.sendall(b"late")

    server = serve(answer_late)
    stream = backend.connect_tcp("127.0.0.1", server.port, timeout=WAIT)
    try:
        with pytest.raises(httpcore.ReadTimeout):
            stream.read(100, timeout=SHORT)
        late.set()
        assert stream.read(100, timeout=WAIT) == b"late"  # a read timeout loses nothing
        assert stream.read(100, timeout=WAIT) == b""  # EOF
    finally:
        stream.close()
    with pytest.raises(httpcore.ReadError) as closed:
        stream.read(100, timeout=WAIT)
    assert isinstance(closed.value.__cause__, pysock.SocketClosedError)
    with pytest.raises(httpcore.WriteError):
        stream.write(b"after close", timeout=WAIT)


# -- HTTP/2 by ALPN, against nginx -----------------------------------------------------------


def test_http2_by_alpn(nginx: Nginx, tls_context: ssl.SSLContext) -> None:  # noqa: F811
    with _client(verify=tls_context, http2=True) as client:
        response = client.get(nginx.url("/h2"))
        stream = response.extensions["network_stream"]
        assert response.http_version == "HTTP/2"
        assert response.text == "HTTP/2.0 TLSv1.3 /h2\n"
        assert stream.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        h1_only = client.get(nginx.url("/h1", http2=False))  # ALPN picks http/1.1 there
    assert (h1_only.http_version, h1_only.text) == ("HTTP/1.1", "HTTP/1.1 TLSv1.3 /h1\n")
    with _client(verify=tls_context) as client:  # http2=False offers http/1.1 alone
        assert client.get(nginx.url("/no-h2")).http_version == "HTTP/1.1"


def test_http2_multiplexes_threads_over_one_connection(
    nginx: Nginx,  # noqa: F811
    tls_context: ssl.SSLContext,
) -> None:
    """Several threads share one HTTP/2 connection: reads and writes from different
    threads meet on one pysock socket."""
    with _client(verify=tls_context, http2=True) as client:
        client.get(nginx.url("/warm-up"))  # one connection, then reused by every thread
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda n: client.get(nginx.url(f"/{n}")), range(40)))
    assert sorted(r.text for r in responses) == sorted(
        f"HTTP/2.0 TLSv1.3 /{n}\n" for n in range(40)
    )
    assert len({id(_pysock_socket(r)) for r in responses}) == 1


# -- Unix sockets and proxies -----------------------------------------------------------------


def test_uds_connects_to_a_unix_socket(http_servers: Callable[..., Any], tmp_path: Path) -> None:
    path = str(tmp_path / "http.sock")
    server = http_servers(UnixHTTPServer(path))
    with _client(uds=path) as client:
        assert client.get("http://localhost/unix").text == "hello from /unix"
    assert server.connections == 1
    with pytest.raises(ValueError, match="address_filter cannot check a Unix socket"):
        Transport(uds=path, address_filter=pysock.deny_private)


@pytest.mark.parametrize("kind", ["socks5_proxy", "http_proxy"])
def test_pysock_proxy_tunnels_every_connection(
    request: pytest.FixtureRequest, http_server: HTTPServer, kind: str
) -> None:
    proxy: Proxy = request.getfixturevalue(kind)
    for given in (proxy.url, httpx.Proxy(proxy.url)):
        with _client(proxy=given) as client:
            response = client.get(http_server.url("/proxied"))
        assert response.text == "hello from /proxied"
        server_addr = response.extensions["network_stream"].get_extra_info("server_addr")
        assert server_addr == ("127.0.0.1", proxy.port)  # the TCP peer is the proxy


def test_the_guard_judges_the_destination_through_a_proxy(
    socks5_proxy: Proxy,  # noqa: F811
    http_server: HTTPServer,
) -> None:
    """With a socks5:// proxy pysock resolves the name, and the guard judges the
    address the proxy is asked for; the proxy's own address is not judged."""
    where = socks5_proxy.url.partition("://")[2]
    for scheme, refusal in [
        ("socks5", r"127\.0\.0\.1 is a loopback address"),
        ("socks5h", r"since the proxy \(socks5h://\) resolves names"),
    ]:
        client = _client(proxy=f"{scheme}://{where}", address_filter=pysock.deny_private)
        with client, pytest.raises(httpx.ConnectError, match=refusal):
            client.get(http_server.url(host="localhost"))
    assert http_server.connections == 0


def test_proxy_urls_from_httpx_forms() -> None:
    convert = pysock.httpx.proxy_url
    assert convert("socks5h://127.0.0.1:1080") == "socks5h://127.0.0.1:1080"
    assert convert(httpx.URL("http://[::1]")) == "http://[::1]:80"
    with_auth = httpx.Proxy("http://proxy.example:3128", auth=("us@er", "p:ss word"))
    assert convert(with_auth) == "http://us%40er:p%3Ass%20word@proxy.example:3128"
    with pytest.raises(ValueError, match="does not run TLS to the proxy itself"):
        convert("https://proxy.example:3128")
    with pytest.raises(ValueError, match="no proxy headers"):
        convert(httpx.Proxy("http://proxy.example:3128", headers={"X-Team": "a"}))
    with pytest.raises(TypeError, match="proxy must be"):
        convert(3128)  # type: ignore[arg-type]


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"timeout": 5}, TypeError, r"httpx\.Timeout"),
        ({"connect_timeout": 5}, TypeError, r"httpx\.Timeout\(connect=...\)"),
        ({"tls_context": ssl.create_default_context()}, TypeError, "verify=/cert="),
        ({"secure_transport": "on"}, TypeError, "start_tls"),
        ({"allow_half_open": True}, TypeError, "never reuses one the server closed"),
        ({"happy_eyeballs_delay": -1}, ValueError, "happy_eyeballs_delay must be >= 0"),
        ({"addressFilter": pysock.deny_private}, TypeError, "pysock spells it 'address_filter'"),
        ({"proxy": "ftp://proxy.example:21"}, ValueError, "Unknown scheme"),
    ],
)
def test_the_transport_checks_its_options_at_once(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Transport(**options)


# -- helpers ---------------------------------------------------------------------------------


def _read_request(conn: socket.socket) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(65536)
        if not data:
            return
        head += data


def _read_until_eof(conn: socket.socket) -> None:
    while conn.recv(65536):
        pass
