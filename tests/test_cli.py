"""The `pysock` console script, driven as a user would: a subprocess on real servers."""

from __future__ import annotations

import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import trustme

from pysock.cli._preambles import PROTOCOLS

from .helpers import recv_all
from .peers.proxies import Proxy, dante_proxy  # noqa: F401 (fixtures)
from .peers.real_servers import (  # noqa: F401 (fixtures)
    ChildServer,
    ipv6_loopback_works,
    pg_startup_message,
    postgres,
    smtp_server,
)
from .peers.tcp import Server, echo
from .peers.tls import close_cleanly, server_context, tls_echo, wrap

TIMEOUT = 30  # Per run of the script: a cold interpreter on a loaded machine.
SCRIPT = Path(sys.executable).with_name("pysock")
# The --timeout of the timeout tests, and the seconds a run may take beyond it: the
# interpreter's start and a loaded machine, never near the hang limit below.
SECONDS = 1.0
SLACK = 5.0
HANG = 20.0  # A run of a timeout test this long hangs: it is killed and the test fails.


def run(
    *args: str, stdin: bytes = b"", timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    if not SCRIPT.exists():
        pytest.fail(f"no console script at {SCRIPT}: reinstall with `pip install -e .[test]`")
    return subprocess.run(
        [str(SCRIPT), *args], input=stdin, capture_output=True, timeout=timeout, check=False
    )


def run_timed(*args: str, stdin: bytes = b"") -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Run with ``--timeout SECONDS``; the result and the seconds it took."""
    start = time.monotonic()
    try:
        result = run(*args, "--timeout", f"{SECONDS:g}", stdin=stdin, timeout=HANG)
    except subprocess.TimeoutExpired:  # subprocess.run() has killed it.
        pytest.fail(f"pysock {' '.join(args)} --timeout {SECONDS:g} still ran after {HANG}s")
    elapsed = time.monotonic() - start
    assert SECONDS <= elapsed < SECONDS + SLACK, (elapsed, result.stderr)
    return result, elapsed


def last_line(stderr: bytes) -> str:
    """The error line, checked to be the only one (the ``* `` lines come before it)."""
    text = lines(stderr)
    assert text.count("pysock: error:") == 1 and text.endswith("\n"), text
    return text.splitlines()[-1]


def lines(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    return text


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


Stall = Callable[..., Server]


@pytest.fixture
def stalling(serve: Callable[..., Server]) -> Iterator[Stall]:
    """``stalling(first=b"", tls=None)``: a server that accepts, sends `first` (after a
    TLS handshake with `tls`), then neither reads nor answers until the test ends."""
    release = threading.Event()

    def start(first: bytes = b"", tls: ssl.SSLContext | None = None) -> Server:
        def handler(conn: socket.socket) -> None:
            with wrap(conn, tls) if tls else conn as peer:  # wrap() takes conn over.
                peer.sendall(first)
                release.wait(HANG + TIMEOUT)  # Set when the test ends.

        return serve(handler)

    yield start
    release.set()


def test_plain_echo_and_details_on_stderr(echo_server: Server) -> None:
    result = run(echo_server.address, stdin=b"hello\n")
    assert result.returncode == 0
    assert result.stdout == b"hello\n"
    err = lines(result.stderr)
    assert f"* connected to {echo_server.address} (from 127.0.0.1:" in err
    assert "* connection closed by the server" in err


def test_binary_safe_both_ways(echo_server: Server) -> None:
    payload = bytes(range(256)) * 4 + os.urandom(1 << 20)
    result = run(echo_server.address, stdin=payload)
    assert result.returncode == 0
    assert result.stdout == payload


def test_python_dash_m_runs_the_same_client(echo_server: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pysock", echo_server.address],
        input=b"via -m\n",
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == b"via -m\n"


def test_eof_on_stdin_half_closes(serve: Callable[..., Server]) -> None:
    def answer_after_eof(conn: socket.socket) -> None:
        request = recv_all(conn)  # Returns only once the client half-closed.
        conn.sendall(b"got %d bytes\n" % len(request))

    server = serve(answer_after_eof)
    result = run(server.address, stdin=b"x" * 1000)
    assert result.returncode == 0
    assert result.stdout == b"got 1000 bytes\n"


def test_crlf(serve: Callable[..., Server]) -> None:
    received: list[bytes] = []

    def record(conn: socket.socket) -> None:
        received.append(recv_all(conn))

    server = serve(record)
    result = run(server.address, "--crlf", stdin=b"EHLO a\nQUIT\r\n")
    server.stop()
    assert result.returncode == 0
    assert received == [b"EHLO a\r\nQUIT\r\n"]


def test_tls_details_and_echo(
    serve: Callable[..., Server], leaf: trustme.LeafCert, cafile: str
) -> None:
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)
    context.set_alpn_protocols(["h2", "http/1.1"])
    server = serve(tls_echo(context))
    result = run(server.address, "--tls", "--cafile", cafile, "--alpn", "h2", stdin=b"over tls\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"over tls\n"
    err = lines(result.stderr)
    assert "* TLS: TLSv1.3, cipher TLS_" in err and "ALPN h2" in err
    assert "IP Address:127.0.0.1" in err  # the certificate's names
    assert "* certificate: expires " in err


def _refused_by_client(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        try:
            wrap(conn, context)
        except (ssl.SSLError, OSError):
            pass  # The client refuses our certificate: expected.

    return handler


def test_untrusted_certificate_is_one_line_and_status_1(
    serve: Callable[..., Server], leaf: trustme.LeafCert
) -> None:
    server = serve(_refused_by_client(server_context(leaf, ssl.TLSVersion.TLSv1_3)))
    result = run(server.address, "--tls", stdin=b"secret\n")
    assert result.returncode == 1
    err = lines(result.stderr)
    assert err.count("\n") == 1 and err.startswith("pysock: error: TLS handshake with ")
    assert "certificate verify failed" in err and result.stdout == b""


def test_insecure_is_loud(serve: Callable[..., Server], leaf: trustme.LeafCert) -> None:
    server = serve(tls_echo(server_context(leaf, ssl.TLSVersion.TLSv1_3)))
    result = run(server.address, "--tls", "--insecure", stdin=b"ok\n")
    assert result.returncode == 0 and result.stdout == b"ok\n"
    err = lines(result.stderr)
    assert "WARNING: --insecure" in err and "certificate: not verified" in err


def test_tls12_stdin_eof_keeps_reading(
    serve: Callable[..., Server], leaf: trustme.LeafCert, cafile: str
) -> None:
    def answer_then_close(conn: socket.socket) -> None:
        tls = wrap(conn, server_context(leaf, ssl.TLSVersion.TLSv1_2))
        request = tls.recv(100)
        tls.sendall(b"answer to " + request)
        close_cleanly(tls)

    server = serve(answer_then_close)
    result = run(server.address, "--tls", "--cafile", cafile, stdin=b"question\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"answer to question\n"
    # The note "stdin ended; writable.close() cannot half-close TLSv1.2 ..." comes from
    # the stdin thread, which may not get to print it before the server's close ends
    # the session.
    assert "* connection closed by the server" in lines(result.stderr)


def test_refused_port(unused_port: int) -> None:
    result = run(f"127.0.0.1:{unused_port}")
    assert result.returncode == 1
    err = lines(result.stderr)
    assert err == f"pysock: error: cannot connect to 127.0.0.1:{unused_port}: Connection refused\n"


def test_bad_host() -> None:
    result = run("name-that-does-not-exist.invalid:80")
    assert result.returncode == 1
    err = lines(result.stderr)
    assert err.startswith("pysock: error: cannot resolve 'name-that-does-not-exist.invalid'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("localhost",), "port"),
        (("127.0.0.1:0",), "port"),
        (("127.0.0.1:80", "--cafile", "x.pem"), "--cafile needs --tls or --starttls"),
        (("127.0.0.1:80", "80"), "the port is given twice: '127.0.0.1:80' and '80'"),
        (("[::1]:80", "80"), "the port is given twice"),
        (("127.0.0.1", "http"), "the port must be a number, not 'http'"),
        (("127.0.0.1", "0"), "port 0 is outside 1..65535"),
        (("unix:/run/x.sock", "80"), "a unix: address takes no port"),
        (("https://example.com:443",), "is a URL: give HOST:PORT or HOST PORT"),
    ],
)
def test_bad_arguments_are_status_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    err = lines(result.stderr)
    assert err.startswith("pysock: error:") and message in err and err.count("\n") == 1


def test_reset_is_status_3(serve: Callable[..., Server]) -> None:
    def reset(conn: socket.socket) -> None:
        # Wait for the client's half-close (its stdin is at EOF), so that the reset
        # reaches an open connection. A reset that lands before the client has seen
        # its connect finish is a connect failure (status 1), as in asyncio and trio.
        assert recv_all(conn) == b""
        conn.sendall(b"partial")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = serve(reset)
    result = run(server.address, "--half-close")  # stdin at EOF: keep reading
    assert result.returncode == 3
    assert result.stdout in (b"", b"partial")
    # The documented shape: "pysock: error: " and the error, which names the address.
    # The reason is the OS's text for ECONNRESET.
    pattern = rf"pysock: error: connection to {re.escape(server.address)} broken: \S.*"
    assert re.fullmatch(pattern, last_line(result.stderr))


def test_tls_eof_without_close_notify_is_status_3(
    serve: Callable[..., Server], leaf: trustme.LeafCert, cafile: str
) -> None:
    def truncate(conn: socket.socket) -> None:
        tls = wrap(conn, server_context(leaf, ssl.TLSVersion.TLSv1_3))
        assert tls.recv(100) == b""  # The client's close_notify: its stdin is at EOF.
        tls.sendall(b"partial")
        tls.close()  # TCP FIN, no close_notify: what a truncation attack looks like.

    server = serve(truncate)
    result = run(server.address, "--tls", "--cafile", cafile)
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"partial"  # Every byte that came is shown.
    pattern = (
        rf"pysock: error: TLS connection to {re.escape(server.address)} "
        r"ended without close_notify \(.+\)"
    )
    assert re.fullmatch(pattern, last_line(result.stderr))


def _smtp_like(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"220 test ESMTP\r\n")
        file = conn.makefile("rb")
        assert file.readline() == b"EHLO pysock\r\n"
        conn.sendall(b"250-test\r\n250 STARTTLS\r\n")
        assert file.readline() == b"STARTTLS\r\n"
        conn.sendall(b"220 go ahead\r\n")
        file.close()
        tls = wrap(conn, context)
        line = tls.recv(100)
        tls.sendall(b"250 hello " + line)
        close_cleanly(tls)

    return handler


def test_starttls_smtp(serve: Callable[..., Server], leaf: trustme.LeafCert, cafile: str) -> None:
    server = serve(_smtp_like(server_context(leaf, ssl.TLSVersion.TLSv1_3)))
    result = run(server.address, "--starttls", "smtp", "--cafile", cafile, stdin=b"EHLO x\r\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"250 hello EHLO x\r\n"
    err = lines(result.stderr)
    assert "* <- 220 test ESMTP" in err and "* -> STARTTLS" in err and "* <- 220 go ahead" in err
    assert "* TLS: TLSv1.3" in err


def test_starttls_refused_names_the_answer(serve: Callable[..., Server], cafile: str) -> None:
    def refuse(conn: socket.socket) -> None:
        conn.sendall(b"220 test\r\n")
        file = conn.makefile("rb")
        file.readline()
        conn.sendall(b"250 test\r\n")
        file.readline()
        conn.sendall(b"454 TLS not available \x1b[31mred\r\n")
        file.close()

    server = serve(refuse)
    result = run(server.address, "--starttls", "smtp", "--cafile", cafile)
    assert result.returncode == 1
    err = lines(result.stderr)
    assert "pysock: error: smtp: the server refused TLS: 454 TLS not available" in err
    assert "\x1b" not in err and "\\x1b[31m" in err  # peer bytes escaped


def test_starttls_xmpp_answer_without_an_end_is_refused(serve: Callable[..., Server]) -> None:
    def endless_features(conn: socket.socket) -> None:
        conn.recv(4096)  # The stream header.
        try:
            conn.sendall(b"<stream:features>" + b"<x/>" * 20000)  # No </stream:features>.
            recv_all(conn)  # Until the client gives up and closes.
        except ConnectionError:
            pass  # It closed with our bytes unread: a reset, as expected then.

    server = serve(endless_features)
    result = run(server.address, "--starttls", "xmpp")
    assert result.returncode == 1
    assert last_line(result.stderr).startswith(
        "pysock: error: xmpp: the server's answer is not xmpp: "
    )


def test_starttls_postgres(postgres: ChildServer, cafile: str) -> None:  # noqa: F811
    query = b"SELECT 1\0"
    session = (
        pg_startup_message()
        + b"Q"
        + struct.pack("!I", 4 + len(query))
        + query
        + b"X\0\0\0\4"  # Terminate: the server ends the session.
    )
    result = run(postgres.address, "--starttls", "postgres", "--cafile", cafile, stdin=session)
    assert result.returncode == 0, result.stderr
    err = lines(result.stderr)
    assert "* -> SSLRequest" in err and "* <- S" in err and "* TLS: TLSv1.3" in err
    assert b"Z" in result.stdout and b"SELECT 1" in result.stdout


def test_starttls_smtp_on_a_real_server(
    smtp_server: ChildServer,  # noqa: F811
    cafile: str,
) -> None:
    # Interactive: stdin stays open until the answer came (aiosmtpd drops a reply
    # when the client's close_notify arrives with the command).
    with subprocess.Popen(
        [str(SCRIPT), smtp_server.address, "--starttls", "smtp", "--cafile", cafile],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(b"EHLO again\r\n")
            child.stdin.flush()
            assert child.stdout.readline().startswith(b"250")  # after TLS: EHLO again
            while child.stdout.readline().startswith(b"250-"):
                pass
            child.stdin.write(b"QUIT\r\n")
            child.stdin.flush()
            rest = child.stdout.readline()  # 221, then the server closes
            child.stdin.close()
            rest += child.stdout.read()
            assert child.wait(TIMEOUT) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(TIMEOUT)
        assert child.stderr is not None
        err = lines(child.stderr.read())
    assert rest.startswith(b"221"), (rest, err)
    assert "* TLS: TLSv1.3" in err


def test_through_a_socks5_proxy(request: pytest.FixtureRequest, echo_server: Server) -> None:
    # Dante passes the half-close on stdin's EOF through (microsocks closes both ways).
    proxy: Proxy = request.getfixturevalue("dante_proxy")
    result = run(echo_server.address, "--proxy", proxy.url, stdin=b"via the proxy\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"via the proxy\n"
    assert f"* connected to {proxy.address}" in lines(result.stderr)


def test_a_refusing_proxy_is_one_line_and_status_1(unused_port: int) -> None:
    result = run("127.0.0.1:25", "--proxy", f"http://127.0.0.1:{unused_port}")
    assert result.returncode == 1
    assert "Traceback" not in lines(result.stderr)
    assert lines(result.stderr).strip().count("\n") == 0
    assert f"the proxy http://127.0.0.1:{unused_port} failed" in lines(result.stderr)


def test_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(10)

        def echo_once() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                conn.sendall(recv_all(conn))

        peer = threading.Thread(target=echo_once)
        peer.start()
        try:
            result = run(f"unix:{path}", stdin=b"over a unix socket\n")
        finally:
            peer.join(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"over a unix socket\n"
    assert f"* connected to {path}" in lines(result.stderr)


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "soon"])
def test_timeout_must_be_a_positive_number(seconds: str) -> None:
    result = run("127.0.0.1:80", "--timeout", seconds)
    assert result.returncode == 2
    assert lines(result.stderr).splitlines()[-1] == (
        f"pysock: error: argument --timeout: not a positive number of seconds: {seconds!r}"
    )


@pytest.mark.parametrize("args", [("HOST:PORT",), ("HOST", "PORT")])
def test_host_port_as_one_or_two_arguments(echo_server: Server, args: tuple[str, ...]) -> None:
    values = {"HOST": echo_server.host, "PORT": str(echo_server.port)}
    values["HOST:PORT"] = echo_server.address
    result = run(*(values[arg] for arg in args), stdin=b"either way\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"either way\n"
    assert f"* connected to {echo_server.address} (from " in lines(result.stderr)


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_host_then_port(serve: Callable[..., Server], host: str) -> None:
    if not ipv6_loopback_works():
        pytest.skip("no IPv6 loopback here")
    server = serve(echo, host="::1")
    result = run(host, str(server.port), stdin=b"over v6\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"over v6\n"
    assert f"* connected to [::1]:{server.port} (from [::1]:" in lines(result.stderr)


@pytest.mark.parametrize("flag", ["--cafile", "--cert", "--key"])
def test_a_missing_file_is_named(tmp_path: Path, cafile: str, flag: str) -> None:
    missing = str(tmp_path / "missing.pem")
    given = {"--cafile": cafile, "--cert": cafile, "--key": cafile, flag: missing}
    args = [arg for name in ("--cafile", "--cert", "--key") for arg in (name, given[name])]
    result = run("127.0.0.1:80", "--tls", *args)
    assert result.returncode == 2
    assert lines(result.stderr) == (
        f"pysock: error: cannot use {flag} {missing!r}: No such file or directory\n"
    )


def test_a_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate\n")
    result = run("127.0.0.1:80", "--tls", "--cafile", str(junk))
    assert result.returncode == 2
    assert lines(result.stderr).startswith(f"pysock: error: cannot use --cafile {str(junk)!r}: ")
    assert lines(result.stderr).count("\n") == 1


# --timeout: every wait on a silent server ends, with status 1 before the session
# and 4 in it; see docs/cli.md.


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_starttls_with_a_silent_server_times_out(stalling: Stall, protocol: str) -> None:
    server = stalling()  # postgres: the server took the SSLRequest and never answers.
    result, _ = run_timed(server.address, "--starttls", protocol)
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        f"pysock: error: {protocol}: the STARTTLS exchange with {server.address} "
        f"timed out after {SECONDS:g}s"
    )


@pytest.mark.parametrize(
    ("protocol", "first"),
    [
        ("smtp", b"220 test ESMTP\r\n"),  # silent after EHLO
        ("smtp", b"220 test ESMTP\r\n250-test\r\n"),  # a multiline reply left unfinished
        ("imap", b"* OK ready\r\n"),  # silent after a001 STARTTLS
        ("pop3", b"+OK ready\r\n"),
        ("ftp", b"220 ready\r\n"),
        ("xmpp", b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
    ],
)
def test_starttls_with_a_server_silent_midway_times_out(
    stalling: Stall, protocol: str, first: bytes
) -> None:
    server = stalling(first)
    result, _ = run_timed(server.address, "--starttls", protocol)
    assert result.returncode == 1
    assert last_line(result.stderr).endswith(f"timed out after {SECONDS:g}s")


def test_starttls_bounds_the_whole_exchange(serve: Callable[..., Server]) -> None:
    # A line every 0.1 s keeps each read far below --timeout: only a deadline for the
    # whole exchange ends it.
    release = threading.Event()

    def trickle(conn: socket.socket) -> None:
        try:
            while not release.wait(0.1):
                conn.sendall(b"220-still greeting you\r\n")
        except OSError:
            pass  # The client gave up: expected.

    server = serve(trickle)
    try:
        result, _ = run_timed(server.address, "--starttls", "smtp")
    finally:
        release.set()
    assert result.returncode == 1
    assert "* <- 220-still greeting you" in lines(result.stderr)
    assert last_line(result.stderr) == (
        f"pysock: error: smtp: the STARTTLS exchange with {server.address} "
        f"timed out after {SECONDS:g}s"
    )


def test_a_tls_handshake_after_starttls_times_out(stalling: Stall) -> None:
    server = stalling(b"220 test\r\n250 STARTTLS\r\n220 go ahead\r\n")
    result, _ = run_timed(server.address, "--starttls", "smtp")
    assert result.returncode == 1
    assert "* <- 220 go ahead" in lines(result.stderr)
    assert last_line(result.stderr).endswith(f"timed out after {SECONDS}s")


def test_a_tls_handshake_times_out(stalling: Stall) -> None:
    server = stalling()
    result, _ = run_timed(server.address, "--tls")
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        f"pysock: error: connecting to {server.address} timed out after {SECONDS}s"
    )


@pytest.mark.parametrize("first", [b"", b"some of the answer\n"])
def test_a_silent_server_after_stdin_ended_times_out(stalling: Stall, first: bytes) -> None:
    server = stalling(first)
    result, _ = run_timed(server.address, stdin=b"request\n")
    assert result.returncode == 4
    assert result.stdout == first
    assert last_line(result.stderr) == (
        f"pysock: error: {server.address} sent nothing for {SECONDS:g}s "
        f"after the end of stdin (--timeout {SECONDS:g})"
    )


def test_a_silent_server_over_tls_times_out(
    stalling: Stall, leaf: trustme.LeafCert, cafile: str
) -> None:
    server = stalling(b"hello\n", tls=server_context(leaf, ssl.TLSVersion.TLSv1_3))
    result, _ = run_timed(server.address, "--tls", "--cafile", cafile)
    assert result.returncode == 4, result.stderr
    assert result.stdout == b"hello\n"
    assert "sent nothing for" in last_line(result.stderr)


def test_a_server_that_reads_nothing_times_the_write_out(stalling: Stall) -> None:
    server = stalling()
    # More than the kernel buffers on both sides hold (a few MiB on loopback).
    result, _ = run_timed(server.address, stdin=bytes(64 << 20))
    assert result.returncode == 4
    assert last_line(result.stderr) == (
        f"pysock: error: writing to {server.address} timed out after {SECONDS:g}s "
        f"(--timeout {SECONDS:g}); an unknown part of stdin was sent"
    )


def test_an_open_stdin_keeps_an_idle_session_alive(serve: Callable[..., Server]) -> None:
    # Interactive: the user may type for longer than --timeout while the server waits
    # for a command; only once stdin ends does a silent server end the session.
    release = threading.Event()

    def answer_one_line(conn: socket.socket) -> None:
        conn.sendall(b"ready\n")
        with conn.makefile("rb") as file:
            request = file.readline()
        conn.sendall(b"you said " + request)
        release.wait(HANG + TIMEOUT)  # Then silent, until the test ends.

    server = serve(answer_one_line)
    command = [str(SCRIPT), server.address, "--timeout", f"{SECONDS:g}"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        assert child.stdin is not None
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                child.wait(3 * SECONDS)  # Idle for three timeouts, and still there.
            child.stdin.write(b"hello\n")
            start = time.monotonic()
            out, err = child.communicate(timeout=HANG)  # Closes stdin first: Ctrl-D.
            elapsed = time.monotonic() - start
        finally:
            release.set()
            if child.poll() is None:
                child.kill()
                child.wait(TIMEOUT)
    assert child.returncode == 4, err
    assert out == b"ready\nyou said hello\n"
    assert "sent nothing for" in last_line(err)
    assert elapsed < SECONDS + SLACK
