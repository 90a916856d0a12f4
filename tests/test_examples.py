"""The scripts in examples/, run as a newcomer would run them, against local servers.

Each script runs with `sys.executable` from the repository's root, so the examples
cannot rot: an API change that breaks one breaks this test.
"""

from __future__ import annotations

import http.client
import re
import select
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import trustme

from .peers.real_servers import ChildServer, postgres, smtp_server  # noqa: F401 (fixtures)
from .peers.tcp import Server
from .peers.tls import close_cleanly, wrap

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30  # Per run of a script: a cold interpreter on a loaded machine.
SCRIPTS = ("gopher", "smtp_starttls", "postgres_sslrequest", "redis_ping", "https_get")
# The web views: servers that stream a gopher answer as their response's body.
WEB_SCRIPTS = ("flask_stream", "django_stream")


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{script}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """The script's output, once it exited 0 and wrote nothing to stderr."""
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout


def read_until(conn: socket.socket, end: bytes) -> bytes:
    """Read from a peer socket (it has a timeout) until `end`, or EOF."""
    data = b""
    while end not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


# A gopher menu (RFC 1436): type and display text, selector, host, port; "." ends it.
MENU = "iWelcome to a test menu\t\tlocalhost\t70\r\n1About\t/about\tlocalhost\t70\r\n.\r\n"


def test_gopher(serve: Callable[..., Server]) -> None:
    selectors: list[bytes] = []

    def gopher(conn: socket.socket) -> None:
        selectors.append(read_until(conn, b"\r\n"))
        conn.sendall(MENU.encode())  # then Server closes the connection: the end of the answer

    server = serve(gopher)
    out = succeeded(run("gopher", server.address, "/about"))
    assert out == MENU.replace("\r\n", "\n")  # text mode reads CRLF as a newline
    assert selectors == [b"/about\r\n"]


def test_redis_ping(serve: Callable[..., Server]) -> None:
    def resp(conn: socket.socket) -> None:
        command = read_until(conn, b"PING\r\n")
        conn.sendall(b"+PONG\r\n" if command == b"*1\r\n$4\r\nPING\r\n" else b"-ERR unknown\r\n")

    server = serve(resp)
    assert succeeded(run("redis_ping", server.address)) == "+PONG\n"


def test_redis_error_reply(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: conn.sendall(b"-NOAUTH Authentication required.\r\n"))
    result = run("redis_ping", server.address)
    assert result.returncode == 1 and result.stdout == ""
    assert (
        result.stderr
        == "redis_ping.py: error: unexpected reply '-NOAUTH Authentication required.'\n"
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_https_get(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, cafile: str, chunked: bool
) -> None:
    server_ctx.set_alpn_protocols(["http/1.1"])
    requests: list[bytes] = []
    body = b"<h1>hello</h1>\n" * 10

    def http(conn: socket.socket) -> None:
        tls = wrap(conn, server_ctx)
        requests.append(read_until(tls, b"\r\n\r\n"))
        if chunked:
            framing = b"Transfer-Encoding: chunked\r\n\r\n"
            payload = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
                10,
                body[:10],
                len(body) - 10,
                body[10:],
            )
        else:
            framing, payload = b"Content-Length: %d\r\n\r\n" % len(body), body
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n" + framing + payload)
        close_cleanly(tls)

    server = serve(http)
    out = succeeded(
        run("https_get", f"localhost:{server.port}", "/index.html", "--cafile", cafile)
    )
    lines = out.splitlines()
    assert lines[0].startswith("* TLS: TLSv1.") and lines[0].endswith("ALPN http/1.1")
    assert lines[1:3] == ["HTTP/1.1 200 OK", "Content-Type: text/html"]
    assert lines[-1] == f"* body: {len(body)} bytes"
    assert requests == [
        f"GET /index.html HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
        "Connection: close\r\n\r\n".encode()
    ]


def test_smtp_starttls(smtp_server: ChildServer, cafile: str) -> None:  # noqa: F811
    out = succeeded(run("smtp_starttls", smtp_server.address, "--cafile", cafile))
    assert out.startswith("S: 220 ")
    assert "C: STARTTLS\nS: 220 Ready to start TLS\n* TLS: TLSv1.3, cipher TLS_" in out
    assert out.count("C: EHLO localhost\n") == 2 and "S: 250-STARTTLS\n" in out
    assert out.endswith("C: QUIT\nS: 221 Bye\n")


def test_postgres_sslrequest(postgres: ChildServer, cafile: str) -> None:  # noqa: F811
    out = succeeded(run("postgres_sslrequest", postgres.address, "--cafile", cafile))
    assert out.startswith("* TLS: TLSv1.3, cipher TLS_")
    assert "* logged in as postgres to postgres\n" in out
    assert out.endswith("SELECT 1 -> ['1']\n")


def test_postgres_error_is_one_line(postgres: ChildServer, cafile: str) -> None:  # noqa: F811
    result = run("postgres_sslrequest", postgres.address, "--database", "nope", "--cafile", cafile)
    assert result.returncode == 1
    assert result.stderr == (
        'postgres_sslrequest.py: error: server error: database "nope" does not exist\n'
    )


def test_untrusted_certificate_is_one_line(smtp_server: ChildServer) -> None:  # noqa: F811
    result = run("smtp_starttls", smtp_server.address)  # the system's CAs: not the test CA
    assert result.returncode == 1
    assert result.stderr.startswith("smtp_starttls.py: error: ")
    assert "certificate verify failed" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_refused_is_one_line(script: str, unused_port: int) -> None:
    result = run(script, f"127.0.0.1:{unused_port}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"{script}.py: error: cannot connect to 127.0.0.1:{unused_port}: Connection refused\n"
    )


def fetch_once(script: str, upstream: str, path: str) -> tuple[int, bytes, str]:
    """Start a web example with --once on a free port, GET `path`; its status, body, stderr."""
    command = [sys.executable, str(ROOT / "examples" / f"{script}.py"), upstream]
    command += ["--listen", "127.0.0.1:0", "--once"]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
            banner = process.stdout.readline() if ready else ""
            found = re.match(r"\* serving http://127\.0\.0\.1:(\d+)/ from gopher ", banner)
            assert found, f"no banner from {script}.py: {banner!r}"
            conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=TIMEOUT)
            try:
                conn.request("GET", path)
                with conn.getresponse() as response:
                    status, body = response.status, response.read()
            finally:
                conn.close()
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert (process.returncode, stdout) == (0, ""), (process.returncode, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    return status, body, stderr


@pytest.mark.parametrize("script", WEB_SCRIPTS)
def test_web_view_streams_gopher(serve: Callable[..., Server], script: str) -> None:
    selectors: list[bytes] = []

    def gopher(conn: socket.socket) -> None:
        selectors.append(read_until(conn, b"\r\n"))
        conn.sendall(MENU.encode())

    server = serve(gopher)
    status, body, stderr = fetch_once(script, server.address, "/about")
    assert (status, body) == (200, MENU.encode())  # byte for byte: CRLFs kept
    assert selectors == [b"/about\r\n"]  # the request's path is the selector, as in Workers
    assert '"GET /about HTTP/1.1" 200' in stderr  # the server's access log, and nothing else
    assert stderr.count("\n") == 1, stderr


@pytest.mark.parametrize("script", WEB_SCRIPTS)
def test_web_view_unreachable_gopher_is_502(script: str, unused_port: int) -> None:
    status, body, _ = fetch_once(script, f"127.0.0.1:{unused_port}", "/")
    assert status == 502
    assert (
        body
        == (
            f"cannot reach the gopher server: cannot connect to 127.0.0.1:{unused_port}: "
            "Connection refused\n"
        ).encode()
    )
