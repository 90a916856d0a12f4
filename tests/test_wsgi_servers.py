"""Streaming failures through real WSGI servers: Werkzeug, gunicorn sync and gunicorn gthread.

A Flask view connects to an upstream on loopback and returns
``Response(sock.stream())``; `http.client` fetches it from the server. Each
server is checked for the three ways a stream goes wrong:

* the upstream refuses the connection: the view itself raises the
  `ConnectError` (``stream()`` waits for the open), so the client gets a 500
  and the server's log has the error;
* the upstream resets the connection mid-body: the client sees the body cut
  short, and the ``pysock`` logger has a WARNING naming the upstream (Werkzeug
  takes a `ConnectionError` for a client that went away and logs nothing);
* the HTTP client goes away mid-body: the server closes the stream, and the
  upstream sees its connection closed within a second; pysock logs no warning.

gunicorn runs as a subprocess (one per worker class, for the module) on a
listening socket this process made, and loads this module's `gunicorn_app()`,
which sends the ``pysock`` logger's records to gunicorn's error log, as an
application would. The upstreams are stdlib servers in threads of this
process: gunicorn's worker connects to them over loopback.
"""

from __future__ import annotations

import http.client
import logging
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Union

import flask
import pytest
import werkzeug.serving

from pysock import connect

from .peers.tcp import PEER_TIMEOUT, Server

ROOT = Path(__file__).resolve().parent.parent
# The upstream closes its side within this of the HTTP client going away.
CLOSE_WITHIN = 1.0

# -- the application (also what gunicorn loads) -----------------------------------------

app = flask.Flask(__name__)


@app.route("/ready")
def ready() -> str:
    return "ready"


@app.route("/stream/<int:port>")
def stream(port: int) -> flask.Response:
    """Stream what the upstream on `port` sends, as the Workers ``new Response(socket.readable)``.

    Nothing is written first: a refused connect is found by ``stream()`` itself.
    """
    sock = connect(("127.0.0.1", port), timeout=PEER_TIMEOUT)
    return flask.Response(sock.stream(), mimetype="application/octet-stream")


def gunicorn_app() -> Any:
    """The app as gunicorn loads it, ``tests.test_wsgi_servers:gunicorn_app()``.

    gunicorn's own loggers have handlers, the root logger has none: the
    ``pysock`` logger gets the error log's handlers, so its WARNING lands there.
    """
    pysock_log = logging.getLogger("pysock")
    for handler in logging.getLogger("gunicorn.error").handlers:
        pysock_log.addHandler(handler)
    return app


# -- the servers --------------------------------------------------------------------------


class WsgiServer:
    """A server running `app` on 127.0.0.1:`port`; `log()` is all it has logged so far."""

    name = ""
    port = 0

    def log(self) -> str:
        raise NotImplementedError


class LogList(logging.Handler):
    """Keeps every record at WARNING and above, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class QuietWerkzeugHandler(werkzeug.serving.WSGIRequestHandler):
    timeout = PEER_TIMEOUT  # A blocked write to a vanished client must end.

    def log_request(self, code: Union[int, str] = "-", size: Union[int, str] = "-") -> None:
        pass  # No access log; errors are still logged.


class Werkzeug(WsgiServer):
    """Werkzeug's development server (``flask run``), threaded, in a thread of this process.

    It logs through the ``logging`` module: a handler on the root logger takes
    Flask's, Werkzeug's and pysock's records.
    """

    name = "werkzeug"

    def __init__(self) -> None:
        self.server = werkzeug.serving.make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=QuietWerkzeugHandler
        )
        self.port = self.server.server_port
        self.records = LogList()
        logging.getLogger().addHandler(self.records)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-werkzeug"
        )
        self.thread.start()

    def log(self) -> str:
        return "\n".join(self.records.lines)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(PEER_TIMEOUT)
        self.server.server_close()
        logging.getLogger().removeHandler(self.records)


class Gunicorn(WsgiServer):
    """gunicorn with one worker of `worker_class`, its error log in `directory`.

    It serves a listening socket made here (``--bind fd://N``): the port is
    known at once and requests wait in the backlog until the worker is up.
    """

    def __init__(self, worker_class: str, directory: Path) -> None:
        self.name = f"gunicorn-{worker_class}"
        self.error_log = directory / "error.log"
        self.output = directory / "output.txt"  # stdout and stderr
        with socket.create_server(("127.0.0.1", 0)) as listener, self.output.open("wb") as out:
            self.port = listener.getsockname()[1]
            args = [
                *(sys.executable, "-m", "gunicorn", "--worker-class", worker_class),
                *("--bind", f"fd://{listener.fileno()}", "--workers", "1"),
                *(("--threads", "4") if worker_class == "gthread" else ()),
                *("--error-logfile", str(self.error_log), "--log-level", "info"),
                *("--graceful-timeout", "1", "--chdir", str(ROOT)),
                *(("--no-control-socket",) if _has_control_socket() else ()),
                "tests.test_wsgi_servers:gunicorn_app()",
            ]
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                pass_fds=[listener.fileno()], cwd=ROOT,
            )  # fmt: skip
        try:
            with http_get(self.port, "/ready") as response:
                assert response.status == 200, response.status
        except Exception as exc:
            self.stop()
            output = self.output.read_text(errors="replace")
            raise RuntimeError(f"{self.name} did not start:\n{output}\n{self.log()}") from exc
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Quick shutdown (SIGINT: the workers are told to quit at once), bounded."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(PEER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(PEER_TIMEOUT)


def _has_control_socket() -> bool:
    """gunicorn 25.1 and later open a control socket in $HOME unless told not to."""
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    return any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS)


@pytest.fixture(scope="module", params=["werkzeug", "gunicorn-sync", "gunicorn-gthread"])
def wsgi_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WsgiServer]:
    """One server for the module's tests (set up before, and outside, each test's leak check)."""
    server: Union[Werkzeug, Gunicorn]
    if request.param == "werkzeug":
        server = Werkzeug()
    else:
        worker_class = request.param.split("-")[1]
        server = Gunicorn(worker_class, tmp_path_factory.mktemp(request.param))
    try:
        yield server
    finally:
        server.stop()


class Served:
    """The server of one test, and what it logs during the test."""

    def __init__(self, server: WsgiServer) -> None:
        self.server = server
        self.port = server.port
        self._mark = len(server.log())

    def log(self) -> str:
        return self.server.log()[self._mark :]

    def wait_logged(self, *needles: str) -> str:
        """Wait (bounded) until the log since the test began holds every needle; return it."""
        deadline = time.monotonic() + PEER_TIMEOUT
        while True:
            text = self.log()
            if all(needle in text for needle in needles):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"{self.server.name} did not log {needles}; it logged:\n{text}")
            threading.Event().wait(0.02)  # A log file has no change notification to wait on.


@pytest.fixture
def served(wsgi_server: WsgiServer) -> Served:
    return Served(wsgi_server)


@contextmanager
def http_get(port: int, path: str) -> Iterator[http.client.HTTPResponse]:
    """GET `path`; the connection is closed at the end, with whatever is unread."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PEER_TIMEOUT)
    try:
        conn.request("GET", path)
        with conn.getresponse() as response:
            yield response
    finally:
        conn.close()


def pysock_warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if "[WARNING]" in line and "mid-stream" in line]


# -- the upstreams ----------------------------------------------------------------------------


class ResetAfterFirst:
    """Sends `first`, waits for `go`, then resets the connection (RST: SO_LINGER 0)."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.go = threading.Event()

    def __call__(self, conn: socket.socket) -> None:
        conn.sendall(self.first)
        assert self.go.wait(PEER_TIMEOUT), "the test never let the upstream go on"
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


class Flooder:
    """Sends 64 KiB chunks until the other side goes away; `closed_at` gets when (monotonic)."""

    LIMIT = 4096  # 256 MiB: far more than every kernel buffer between here and the client.

    def __init__(self) -> None:
        self.closed_at: queue.Queue[float] = queue.Queue()

    def __call__(self, conn: socket.socket) -> None:
        chunk = b"\x00" * 65536
        try:
            for _ in range(self.LIMIT):
                conn.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.closed_at.put(time.monotonic())
            return
        raise AssertionError("the flooded side never went away")


# -- the tests -------------------------------------------------------------------------------


def test_refused_upstream_is_a_logged_500(served: Served, unused_port: int) -> None:
    with http_get(served.port, f"/stream/{unused_port}") as response:
        body = response.read()
        assert response.status == 500, (response.status, body)
    # Flask logs the view's exception, with its traceback, in the server's log.
    served.wait_logged("Exception on /stream/", "ConnectError", f"127.0.0.1:{unused_port}")


def test_upstream_reset_mid_stream_is_logged(served: Served, serve: Callable[..., Server]) -> None:
    upstream = ResetAfterFirst(b"the first part of the answer\n" * 100)
    address = serve(upstream).address
    try:
        with http_get(served.port, f"/stream/{address.split(':')[1]}") as response:
            assert response.status == 200
            assert response.read(len(upstream.first)) == upstream.first
            upstream.go.set()
            with pytest.raises(http.client.IncompleteRead):  # The chunked body has no end.
                response.read()
    finally:
        upstream.go.set()
    log = served.wait_logged(
        f"[WARNING] {address}: the upstream failed mid-stream "
        f"after {len(upstream.first)} bytes, the response is cut short: BrokenSocketError: "
    )
    assert len(pysock_warnings(log)) == 1, log
    if served.server.name == "werkzeug":
        # Werkzeug took the ConnectionError for a client that went away:
        # pysock's warning is the only trace of the failure.
        assert [line for line in log.splitlines() if line.startswith("[")] == pysock_warnings(log)
    else:
        # gunicorn drops an OSError only for EPIPE, ECONNRESET and ENOTCONN; pysock's
        # BrokenSocketError has no errno, so gunicorn logs it too, as a socket error.
        assert "Socket error processing request." in log


def test_client_gone_mid_stream_closes_the_upstream(
    served: Served, serve: Callable[..., Server]
) -> None:
    flood = Flooder()
    port = serve(flood).port
    with http_get(served.port, f"/stream/{port}") as response:
        assert response.status == 200
        assert len(response.read(1000)) == 1000
        gone_at = time.monotonic()
    # The client closed with data unread: its kernel resets the connection, the
    # server's next write fails, the server closes the stream, and that closes
    # the upstream socket, so the flooding upstream's send fails in turn.
    closed_after = flood.closed_at.get(timeout=PEER_TIMEOUT) - gone_at
    assert closed_after < CLOSE_WITHIN, f"the upstream saw the close after {closed_after:.3f} s"
    # The server's close() is not an upstream failure: no warning (it would have
    # been logged before the close).
    assert pysock_warnings(served.log()) == []
