"""Streaming a socket from Flask and Django views: the Workers ``new Response(socket.readable)``.

A view connects to an upstream peer (a stdlib server in a thread, `serve`),
writes a selector line, and returns ``Response(sock.stream())`` (Flask) or
``StreamingHttpResponse(sock.stream())`` (Django). The tests fetch it through
each framework's test client and through real WSGI servers on loopback, and
check the body, that it streams in chunks (binary-safe: not line by line) before
the peer is done, and that the socket is closed at the end of the response,
including when the HTTP client goes away in the middle.
"""

from __future__ import annotations

import http.client
import logging
import os
import queue
import socket
import struct
import threading
import time
import wsgiref.simple_server
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import flask
import pytest
import werkzeug.serving
from django.conf import settings  # type: ignore[import-untyped]
from django.http import StreamingHttpResponse  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

from pysock import BrokenSocketError, ConnectError, Socket, SocketReader, SocketTimeout, connect

from .peers.tcp import PEER_TIMEOUT, Blackhole, Server

WsgiApp = Callable[..., Any]
CHUNK = 64 * 1024  # The default chunk size of Socket.stream().
# A gopher menu (RFC 1436), the text a line-by-line response carries.
MENU = b"iWelcome to a test menu\t\tlocalhost\t70\r\n1About\t/about\tlocalhost\t70\r\n.\r\n"


def binary_data(newline_every: Optional[int]) -> bytes:
    """1 MiB of random bytes, with a b"\\n" every `newline_every` bytes, or none at all."""
    data = bytearray(os.urandom(1 << 20))
    if newline_every is None:
        return bytes(data).replace(b"\n", b"\x00")
    data[::newline_every] = b"\n" * len(data[::newline_every])
    return bytes(data)


# -- the upstream peer, and the sockets the views open ------------------------------


@dataclass
class Upstream:
    """What the views connect to, and the pysock sockets they opened (one per request)."""

    address: str = ""
    sockets: list[Socket] = field(default_factory=list)
    # The `closed` futures of sockets the views did not keep (see `readable_only`).
    closed: list[futures.Future[None]] = field(default_factory=list)


UPSTREAM = Upstream()


def open_upstream(selector: bytes) -> Socket:
    """What every view does first: connect, send the selector line (gopher style)."""
    sock = connect(UPSTREAM.address, timeout=PEER_TIMEOUT)
    UPSTREAM.sockets.append(sock)
    sock.writable.write(selector + b"\r\n")
    return sock


def open_upstream_unwritten() -> Socket:
    """Connect and write nothing (a server that speaks first): ``stream()`` waits for the open."""
    sock = connect(UPSTREAM.address, timeout=PEER_TIMEOUT)
    UPSTREAM.sockets.append(sock)
    return sock


def readable_only(selector: bytes) -> SocketReader:
    """The Workers example to the letter: connect, write, hand on ``readable`` alone.

    The view keeps neither the socket nor ``writable``, so nothing can write any
    more and ``readable.close()`` (called by the framework at the end of the
    response) closes the whole connection.
    """
    sock = connect(UPSTREAM.address, timeout=PEER_TIMEOUT)
    UPSTREAM.closed.append(sock.closed)
    sock.writable.write(selector + b"\r\n")
    return sock.readable


class Peer:
    """A handler for `Server`: reads the selector line, sends `parts`, then waits for EOF.

    Between the first part and the rest it waits for `go` (when given), so a
    test can read the first chunk while the peer still holds the rest back.
    With `send_eof` it half-closes after the last part (the end of the body);
    without, the response only ends when the client side closes the socket.
    `outcome` gets what the peer saw afterwards: "eof" or "reset".
    """

    def __init__(
        self, parts: list[bytes], go: Optional[threading.Event] = None, send_eof: bool = True
    ) -> None:
        self.parts = parts
        self.go = go
        self.send_eof = send_eof
        self.selectors: list[bytes] = []
        self.outcome: queue.Queue[str] = queue.Queue()

    def __call__(self, conn: socket.socket) -> None:
        self.selectors.append(read_line(conn))
        for index, part in enumerate(self.parts):
            if index == 1 and self.go is not None:
                assert self.go.wait(PEER_TIMEOUT), "the test never let the peer go on"
            conn.sendall(part)
        if self.send_eof:
            conn.shutdown(socket.SHUT_WR)
        self.outcome.put(wait_for_eof(conn))

    def wait_outcome(self) -> str:
        return self.outcome.get(timeout=PEER_TIMEOUT)


def read_line(conn: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return line


def wait_for_eof(conn: socket.socket) -> str:
    """Read (and drop) until the other side closes: "eof", or "reset" if it reset."""
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    return "eof"


class ResetAfter:
    """A handler that reads the selector line, sends `first`, waits for `go`, then resets."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.go = threading.Event()

    def __call__(self, conn: socket.socket) -> None:
        read_line(conn)
        conn.sendall(self.first)
        assert self.go.wait(PEER_TIMEOUT), "the test never let the peer go on"
        # SO_LINGER with a zero timeout: close() sends a reset (RST), not a FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


class Flooder:
    """A handler that sends 64 KiB chunks until the other side goes away (bounded)."""

    LIMIT = 4096  # 256 MiB: far more than the kernel buffers between here and the client.

    def __init__(self) -> None:
        self.outcome: queue.Queue[str] = queue.Queue()

    def __call__(self, conn: socket.socket) -> None:
        read_line(conn)
        chunk = b"\x00\n" * (CHUNK // 2)
        try:
            for _ in range(self.LIMIT):
                conn.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.outcome.put("gone")
            return
        self.outcome.put("never stopped")


@pytest.fixture
def upstream(serve: Callable[..., Server]) -> Iterator[Callable[[Callable[..., None]], None]]:
    """``upstream(handler)`` points the views at a new peer running `handler`."""

    def start(handler: Callable[..., None]) -> None:
        UPSTREAM.address = serve(handler).address

    yield start
    for sock in UPSTREAM.sockets:  # A failed test must not leak the views' sockets.
        sock.close()
    UPSTREAM.sockets.clear()
    UPSTREAM.closed.clear()


def the_socket() -> Socket:
    """The one pysock socket the request opened."""
    assert len(UPSTREAM.sockets) == 1, UPSTREAM.sockets
    return UPSTREAM.sockets[0]


def wait_closed(sock: Socket) -> None:
    futures.wait([sock.closed], timeout=PEER_TIMEOUT)
    assert sock.closed.done(), f"{sock!r} was not closed"


def wait_forgotten_closed() -> None:
    """The one socket a `readable_only` view opened ended cleanly."""
    assert len(UPSTREAM.closed) == 1, UPSTREAM.closed
    assert UPSTREAM.closed[0].result(PEER_TIMEOUT) is None


# -- Flask ---------------------------------------------------------------------------

flask_app = flask.Flask(__name__)


@flask_app.route("/stream")
def flask_stream() -> flask.Response:
    return flask.Response(open_upstream(b"/stream").stream(), mimetype="application/octet-stream")


@flask_app.route("/unwritten")
def flask_unwritten() -> flask.Response:
    return flask.Response(open_upstream_unwritten().stream(), mimetype="text/plain")


@flask_app.route("/lines")
def flask_lines() -> flask.Response:
    return flask.Response(open_upstream(b"/lines").readable, mimetype="text/plain")


@flask_app.route("/readable")
def flask_readable() -> flask.Response:
    return flask.Response(readable_only(b"/readable"), mimetype="text/plain")


# -- Django: settings, views and this module as the URLconf ---------------------------


def django_stream(request: Any) -> Any:
    sock = open_upstream(b"/stream")
    return StreamingHttpResponse(sock.stream(), content_type="application/octet-stream")


def django_unwritten(request: Any) -> Any:
    return StreamingHttpResponse(open_upstream_unwritten().stream(), content_type="text/plain")


def django_lines(request: Any) -> Any:
    return StreamingHttpResponse(open_upstream(b"/lines").readable, content_type="text/plain")


def django_readable(request: Any) -> Any:
    return StreamingHttpResponse(readable_only(b"/readable"), content_type="text/plain")


urlpatterns = [
    path("stream", django_stream),
    path("unwritten", django_unwritten),
    path("lines", django_lines),
    path("readable", django_readable),
]


@pytest.fixture(scope="session")
def django_app() -> WsgiApp:
    """Django configured once for the session (no database, no apps), and its WSGI app."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="not a secret: tests only",
            ALLOWED_HOSTS=["testserver", "127.0.0.1", "localhost"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            DATABASES={},
            USE_TZ=True,
            # Django's dictConfig closes every existing handler, pytest's own
            # among them; on Python 3.9 a closed FileHandler reopens its file at
            # the next record, which the next test's leak check sees as a leak.
            LOGGING_CONFIG=None,
        )
    import django  # type: ignore[import-untyped]
    from django.core.handlers.wsgi import WSGIHandler  # type: ignore[import-untyped]

    django.setup()
    return WSGIHandler()  # type: ignore[no-any-return]


# -- the two frameworks behind one interface -----------------------------------------


@dataclass
class Streamed:
    """A streaming response of a test client: its status, body iterator and close()."""

    status: int
    chunks: Iterator[bytes]
    close: Callable[[], None]


class Site:
    """A framework's app, fetched through the framework's test client."""

    def get(self, path: str) -> Streamed:
        raise NotImplementedError


class FlaskSite(Site):
    def get(self, path: str) -> Streamed:
        # buffered=False: the test client hands back the app's iterator, unread
        # (Werkzeug reads the first chunk to learn that the response started).
        # iter_encoded() yields its items as they are, as Werkzeug's server writes them.
        response = flask_app.test_client().get(path, buffered=False)
        return Streamed(response.status_code, response.iter_encoded(), response.close)


class DjangoSite(Site):
    def get(self, path: str) -> Streamed:
        from django.test import Client  # type: ignore[import-untyped]

        response = Client().get(path)
        assert response.streaming
        # The client wraps the content so that the end of the iteration calls
        # response.close(), as a WSGI server does; close() is what a server calls.
        return Streamed(response.status_code, iter(response.streaming_content), response.close)


@pytest.fixture(params=["flask", "django"])
def site(request: pytest.FixtureRequest) -> Site:
    if request.param == "flask":
        return FlaskSite()
    request.getfixturevalue("django_app")  # Django configured
    return DjangoSite()


# -- through the test clients ------------------------------------------------------------


@pytest.mark.parametrize("newline_every", [61, None], ids=["many-newlines", "no-newline"])
def test_streams_binary_in_chunks_and_closes(
    site: Site, upstream: Callable[..., None], newline_every: Optional[int]
) -> None:
    data = binary_data(newline_every)
    peer = Peer([data])
    upstream(peer)
    response = site.get("/stream")
    assert response.status == 200
    chunks = list(response.chunks)
    response.close()
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= CHUNK for chunk in chunks), [len(c) for c in chunks]
    # Chunks as they arrive, not lines: 16 to 21 for 1 MiB, where lines are some 21000.
    assert len(chunks) <= len(data) // 1024
    if newline_every is not None:
        assert len(chunks) < data.count(b"\n") / 100
    wait_closed(the_socket())
    assert peer.wait_outcome() == "eof"
    assert peer.selectors == [b"/stream\r\n"]


def test_streams_before_the_peer_is_done(site: Site, upstream: Callable[..., None]) -> None:
    first, rest = b"first chunk, and no newline " * 40, b"the rest\nof it\n" * 1000
    go = threading.Event()
    peer = Peer([first, rest], go)
    upstream(peer)
    response = site.get("/stream")
    try:
        received = b""
        for _ in range(len(first)):  # Bounded; one chunk on loopback.
            received += next(response.chunks)
            if len(received) >= len(first):
                break
        assert received == first  # Sent while the peer still holds `rest` back.
        assert not the_socket().closed.done()
        go.set()
        assert received + b"".join(response.chunks) == first + rest
    finally:
        go.set()
        response.close()
    wait_closed(the_socket())
    assert peer.wait_outcome() == "eof"


def test_client_going_away_closes_the_socket(
    site: Site, upstream: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    peer = Peer([b"x" * 1000], send_eof=False)  # Then it waits, and sends no EOF.
    upstream(peer)
    response = site.get("/stream")
    assert next(response.chunks) == b"x" * 1000
    response.close()  # What a WSGI server does when the HTTP client went away.
    wait_closed(the_socket())
    assert peer.wait_outcome() in ("eof", "reset")  # Closed from our side, not by its timeout.
    assert list(response.chunks) == []
    assert pysock_warnings(caplog) == []  # A client gone is no failure of the upstream.


def pysock_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pysock" and r.levelno >= logging.WARNING
    ]


def test_refused_upstream_fails_in_the_view(
    site: Site, upstream: Callable[..., None], unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """``stream()`` waits for the open, so the error is the view's: a 500 the framework logs."""
    UPSTREAM.address = f"127.0.0.1:{unused_port}"
    if isinstance(site, FlaskSite):
        response = flask_app.test_client().get("/unwritten")
        assert response.status_code == 500
        assert "Exception on /unwritten [GET]" in caplog.text
    else:
        from django.test import Client

        with pytest.raises(ConnectError):  # Django's test client raises the view's error.
            Client().get("/unwritten")
    sock = the_socket()
    assert isinstance(sock.opened.exception(0), ConnectError)
    assert sock.closed.done()  # stream() closed it: no ResourceWarning, no leaked descriptor.
    assert pysock_warnings(caplog) == []  # The framework reports it, not pysock.


def test_upstream_reset_mid_stream_logs_a_warning(
    site: Site, upstream: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    peer = ResetAfter(b"the first part, before the crash\n" * 100)
    upstream(peer)
    response = site.get("/stream")
    try:
        received = b""
        for _ in range(len(peer.first)):  # Bounded; one chunk on loopback.
            received += next(response.chunks)
            if len(received) >= len(peer.first):
                break
        assert received == peer.first
        peer.go.set()
        with pytest.raises(BrokenSocketError):
            next(response.chunks)
    finally:
        peer.go.set()
        response.close()
    wait_closed(the_socket())
    assert pysock_warnings(caplog) == [
        f"{UPSTREAM.address}: the upstream failed mid-stream after {len(peer.first)} bytes, "
        "the response is cut short: BrokenSocketError: "
        f"connection to {UPSTREAM.address} broken: Connection reset by peer"
    ]


def test_stream_waits_for_the_open_within_the_connect_timeout(blackhole: Blackhole) -> None:
    sock = connect(blackhole.address, connect_timeout=0.2, timeout=PEER_TIMEOUT)
    started = time.monotonic()
    with pytest.raises(SocketTimeout):
        sock.stream()
    assert time.monotonic() - started < PEER_TIMEOUT  # The connect deadline, not the read timeout.
    assert sock.closed.done()


def test_readable_streams_lines(site: Site, upstream: Callable[..., None]) -> None:
    peer = Peer([MENU])
    upstream(peer)
    response = site.get("/lines")
    chunks = list(response.chunks)
    response.close()
    assert b"".join(chunks) == MENU
    assert chunks == MENU.splitlines(keepends=True)  # readable iterates by lines
    wait_closed(the_socket())  # The peer's EOF ended the connection (allow_half_open=False).
    assert peer.wait_outcome() == "eof"


def test_readable_alone_closes_the_socket_when_the_client_goes_away(
    site: Site, upstream: Callable[..., None]
) -> None:
    peer = Peer([MENU], send_eof=False)  # The answer never ends by itself.
    upstream(peer)
    response = site.get("/readable")
    assert next(response.chunks) == MENU.splitlines(keepends=True)[0]
    assert not UPSTREAM.closed[0].done()
    response.close()  # The framework calls readable.close(): nothing else holds the socket.
    wait_forgotten_closed()  # Closed now, not at garbage collection with a ResourceWarning.
    assert peer.wait_outcome() == "eof"
    assert peer.selectors == [b"/readable\r\n"]


def test_readable_alone_streams_to_the_end(site: Site, upstream: Callable[..., None]) -> None:
    peer = Peer([MENU])
    upstream(peer)
    response = site.get("/readable")
    chunks = list(response.chunks)
    response.close()
    assert chunks == MENU.splitlines(keepends=True)
    wait_forgotten_closed()
    assert peer.wait_outcome() == "eof"


# -- through real WSGI servers on loopback -------------------------------------------


class QuietWsgirefHandler(wsgiref.simple_server.WSGIRequestHandler):
    timeout = PEER_TIMEOUT  # A server's blocked write to a vanished client must end.

    def log_message(self, format: str, *args: Any) -> None:
        pass  # No access log on stderr.


class QuietWerkzeugHandler(werkzeug.serving.WSGIRequestHandler):
    timeout = PEER_TIMEOUT

    def log(self, type: str, message: str, *args: Any) -> None:
        pass  # No access log (the "werkzeug" logger would add a stderr handler).


@contextmanager
def serving(app: WsgiApp, server_kind: str) -> Iterator[int]:
    """Serve `app` on 127.0.0.1 in a thread; yield the port; shut down and close."""
    server: Any
    if server_kind == "werkzeug":
        server = werkzeug.serving.make_server(
            "127.0.0.1", 0, app, request_handler=QuietWerkzeugHandler
        )
    else:
        server = wsgiref.simple_server.make_server(
            "127.0.0.1", 0, app, handler_class=QuietWsgirefHandler
        )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-wsgi-server"
    )
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(PEER_TIMEOUT)
        server.server_close()


SERVERS = [("flask", "wsgiref"), ("flask", "werkzeug"), ("django", "wsgiref")]


@pytest.fixture(params=SERVERS, ids=["-".join(pair) for pair in SERVERS])
def served(request: pytest.FixtureRequest) -> Iterator[int]:
    """The port of a real WSGI server running one of the sites."""
    framework, server_kind = request.param
    app = flask_app if framework == "flask" else request.getfixturevalue("django_app")
    with serving(app, server_kind) as port:
        yield port


@contextmanager
def http_get(port: int, path: str) -> Iterator[http.client.HTTPResponse]:
    """GET `path`; closing the response closes the connection (HTTP/1.0 or not)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PEER_TIMEOUT)
    try:
        conn.request("GET", path)
        with conn.getresponse() as response:  # It owns the socket once it is the last one.
            yield response
    finally:
        conn.close()


def test_real_server_streams_and_closes(upstream: Callable[..., None], served: int) -> None:
    data = binary_data(61)
    peer = Peer([data])
    upstream(peer)
    with http_get(served, "/stream") as response:
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/octet-stream"
        assert response.read() == data
    wait_closed(the_socket())
    assert peer.wait_outcome() == "eof"


def test_real_server_streams_lines(upstream: Callable[..., None], served: int) -> None:
    peer = Peer([MENU])
    upstream(peer)
    with http_get(served, "/lines") as response:
        assert response.status == 200
        assert response.read() == MENU
    wait_closed(the_socket())
    assert peer.wait_outcome() == "eof"


def test_real_server_readable_alone_client_going_away(
    upstream: Callable[..., None], served: int
) -> None:
    flood = Flooder()  # Lines of two bytes: readable's iteration yields each one.
    upstream(flood)
    with http_get(served, "/readable") as response:
        assert response.status == 200
        assert len(response.read(1000)) == 1000
    assert flood.outcome.get(timeout=PEER_TIMEOUT) == "gone"
    wait_forgotten_closed()


def test_real_server_client_going_away(upstream: Callable[..., None], served: int) -> None:
    flood = Flooder()
    upstream(flood)
    with http_get(served, "/stream") as response:
        assert response.status == 200
        assert len(response.read(1000)) == 1000
    # The client closed with data unread: its kernel resets the connection, the
    # server's next write fails, the server closes the iterator, and that closes the
    # upstream socket, so the flooding peer's writes fail in turn.
    assert flood.outcome.get(timeout=PEER_TIMEOUT) == "gone"
    wait_closed(the_socket())
