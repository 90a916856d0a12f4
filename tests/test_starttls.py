"""start_tls(): the upgrade, its misuse, and the STARTTLS injection (CVE-2011-0411)."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from typing import Any, Callable

import pytest

from pysock import SocketClosedError, StartTlsError, connect

from .helpers import recv_all, recv_all_or_reset
from .peers.tcp import Server
from .peers.tls import close_cleanly, tls_echo, wrap

TIMEOUT = 10


def starttls_server(
    context: ssl.SSLContext, extra: bytes = b""
) -> Callable[[socket.socket], None]:
    """A line protocol: greeting, then ``STARTTLS`` -> ``GO`` (+ `extra`), then TLS echo."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"HELLO\r\n")
        if conn.recv(100) != b"STARTTLS\r\n":
            return
        conn.sendall(b"GO\r\n" + extra)
        if extra:
            # An attacker's bytes went out with the go-ahead: the client must
            # refuse, so the next thing here is its close, never a ClientHello.
            received = recv_all_or_reset(conn)
            assert received == b"", received
            return
        tls = wrap(conn, context)
        while data := tls.recv(65536):
            tls.sendall(data)
        close_cleanly(tls)

    return handler


def negotiate(sock: object) -> None:
    from pysock import Socket

    assert isinstance(sock, Socket)
    assert sock.readable.readline() == b"HELLO\r\n"
    sock.writable.write(b"STARTTLS\r\n")
    assert sock.readable.readline() == b"GO\r\n"


def test_start_tls_upgrades_the_connection(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = serve(starttls_server(server_ctx))
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    negotiate(sock)
    assert sock.tls is None
    with sock.start_tls() as tls:
        assert sock.upgraded
        assert sock.closed.result(0) is None
        assert repr(sock) == f"<pysock.Socket {server.address} starttls closed>"
        assert tls.secure_transport == "on" and not tls.upgraded
        tls.writable.write(b"secret\n")  # waits for the handshake
        assert tls.readable.readline() == b"secret\n"
        assert tls.opened.result(0).remote_address == server.address
        assert tls.tls is not None and tls.tls.version in ("TLSv1.2", "TLSv1.3")
        # The old socket's streams are gone; close() on it no longer touches the connection.
        with pytest.raises(SocketClosedError):
            sock.readable.read(1)
        with pytest.raises(SocketClosedError):
            sock.writable.write(b"plaintext")
        sock.close()
        tls.writable.write(b"still up\n")
        assert tls.readable.readline() == b"still up\n"


def test_start_tls_takes_its_options_from_connect(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = serve(starttls_server(server_ctx))
    sock = connect(
        server.address,
        secure_transport="starttls",
        tls_context=client_ctx,
        timeout=7,
        allow_half_open=True,
    )
    negotiate(sock)
    with sock.start_tls(expected_server_hostname="localhost") as tls:
        options = tls._connection.options
        assert options.timeout == 7 and options.allow_half_open
        assert options.tls_context is client_ctx
        assert options.expected_server_hostname == "localhost"
        tls.opened.result(TIMEOUT)
    sock.close()


def test_start_tls_with_a_wrong_hostname_fails_verification(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    from pysock import TLSError

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"HELLO\r\n")
        conn.recv(100)
        conn.sendall(b"GO\r\n")
        try:
            wrap(conn, server_ctx)
        except (ssl.SSLError, OSError):
            pass

    server = serve(handler)
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    negotiate(sock)
    with sock.start_tls(expected_server_hostname="other.example") as tls:
        assert isinstance(tls.opened.exception(TIMEOUT), TLSError)
    sock.close()


@pytest.mark.parametrize("transport", ["off", "on"])
def test_start_tls_needs_a_starttls_socket(
    serve: Callable[..., Server],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    transport: str,
) -> None:
    server = serve(tls_echo(server_ctx) if transport == "on" else lambda conn: recv_all(conn))
    with connect(server.address, secure_transport=transport, tls_context=client_ctx) as sock:  # type: ignore[arg-type]
        sock.opened.result(TIMEOUT)
        with pytest.raises(StartTlsError, match="secure_transport='starttls'"):
            sock.start_tls()


def test_start_tls_twice(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = serve(starttls_server(server_ctx))
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    negotiate(sock)
    with sock.start_tls() as tls:
        with pytest.raises(StartTlsError, match="already"):
            sock.start_tls()
        tls.opened.result(TIMEOUT)
    sock.close()


def test_start_tls_on_a_closed_socket(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: recv_all(conn))
    sock = connect(server.address, secure_transport="starttls")
    sock.opened.result(TIMEOUT)
    sock.close()
    with pytest.raises(StartTlsError, match="closed"):
        sock.start_tls()
    assert not sock.upgraded


def test_start_tls_bad_options_are_argument_errors(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: recv_all(conn))
    with connect(server.address, secure_transport="starttls") as sock:
        with pytest.raises(TypeError):
            sock.start_tls(tls_context="ctx")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            sock.start_tls(tls_context=ssl.create_default_context(), alpn_protocols=["h2"])
        with pytest.raises(ValueError, match="server context"):
            sock.start_tls(tls_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        assert not sock.upgraded


def test_start_tls_while_another_thread_reads(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: recv_all(conn))  # Sends nothing: the reader stays blocked.
    sock = connect(server.address, secure_transport="starttls")
    sock.opened.result(TIMEOUT)
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            sock.readable.readline()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not sock.readable._lock.locked():  # The reader is inside its call.
        assert time.monotonic() < deadline
        time.sleep(0.001)
    with pytest.raises(StartTlsError, match="another thread is reading"):
        sock.start_tls()  # At once, rather than after the read returns.
    assert not sock.upgraded
    sock.close()
    thread.join(TIMEOUT)
    assert isinstance(outcome[0], SocketClosedError)


def test_start_tls_takes_its_options_by_position(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = serve(starttls_server(server_ctx))
    sock = connect(server.address, secure_transport="starttls")
    negotiate(sock)
    with sock.start_tls("localhost", client_ctx) as tls:  # By position, as api.md lists them.
        assert tls.opened.result(TIMEOUT).remote_address == server.address
    sock.close()


def test_injection_in_the_same_packet_is_refused(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = serve(starttls_server(server_ctx, extra=b"250 INJECTED\r\n"))
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    negotiate(sock)  # the reader's buffer now also holds the injected line
    with pytest.raises(StartTlsError, match="CVE-2011-0411"):
        sock.start_tls()
    assert sock.closed.done() and not sock.upgraded
    assert sock.closed.result(TIMEOUT) is None  # pysock closed it, as close() does.
    # Closed as by close(): the injected line is not handed out, by any read method.
    with pytest.raises(SocketClosedError):
        sock.readable.readline()
    with pytest.raises(SocketClosedError):
        sock.readable.read()
    with pytest.raises(SocketClosedError):
        sock.writable.write(b"QUIT\r\n")
    server.stop()  # the handler asserts that no ClientHello arrived


def test_injection_waiting_in_the_kernel_is_refused(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    sent = threading.Event()

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"GO\r\n")
        conn.recv(1)  # the client's signal that it has read the go-ahead
        conn.sendall(b"INJECTED")
        sent.set()
        assert recv_all_or_reset(conn) == b""

    server = serve(handler)
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    assert sock.readable.readexactly(4) == b"GO\r\n"
    sock.writable.write(b"!")
    assert sent.wait(TIMEOUT)
    assert sock._connection.sock is not None
    # The bytes are in the kernel, not in pysock (select: tests/portable has no poll).
    readable, _, _ = select.select([sock._connection.sock], [], [], TIMEOUT)
    assert readable
    with pytest.raises(StartTlsError, match="CVE-2011-0411"):
        sock.start_tls()
    server.stop()


def test_start_tls_waits_for_the_open(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    def handler(conn: socket.socket) -> None:
        tls = wrap(conn, server_ctx)
        tls.sendall(b"implicit")
        close_cleanly(tls)

    server = serve(handler)
    # "localhost" goes through DNS: the socket is usually still connecting here.
    sock = connect(("localhost", server.port), secure_transport="starttls", tls_context=client_ctx)
    with sock.start_tls() as tls:
        assert tls.readable.read() == b"implicit"
    sock.close()


def test_a_refusal_shows_the_unread_bytes_and_names_both_causes(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext
) -> None:
    """The usual cause is benign: the user never read the server's reply to STARTTLS."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"220 mail.example.com ESMTP ready\r\n")
        assert recv_all_or_reset(conn) == b""

    server = serve(handler)
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    assert sock.readable.peek(1)  # The greeting arrived, and stays unread.
    with pytest.raises(StartTlsError) as info:
        sock.start_tls()
    message = str(info.value)
    assert "'220 mail.example.com ESMTP ready\\r\\n'" in message  # escaped
    assert "not read yet" in message and "injected" in message
    assert "CVE-2011-0411" in message and server.address in message
    server.stop()


def test_a_refusal_cuts_long_unread_bytes_short(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext
) -> None:
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"x" * 5000)
        assert recv_all_or_reset(conn) == b""

    server = serve(handler)
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    assert sock.readable.peek(1)
    with pytest.raises(StartTlsError) as info:
        sock.start_tls()
    assert "x" * 60 + "'..." in str(info.value)
    assert "x" * 61 not in str(info.value)
    server.stop()


@pytest.mark.parametrize("end", ["reset", "close"])
def test_a_connection_that_ends_right_after_the_checks_is_a_start_tls_error(
    serve: Callable[..., Server],
    client_ctx: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
    end: str,
) -> None:
    """The race between start_tls()'s checks and its take-over, pinned: the selector
    thread's reset (or another thread's close()) lands right after the checks passed."""
    from pysock import _starttls

    checked = _starttls._check_upgradable

    def check_then_end(old: Any, unread: bytes) -> None:
        checked(old, unread)
        if end == "reset":
            old._broken_by(ConnectionResetError(104, "Connection reset by peer"))
        else:
            old.close()

    monkeypatch.setattr(_starttls, "_check_upgradable", check_then_end)

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"HELLO\r\n")
        assert conn.recv(100) == b"STARTTLS\r\n"
        conn.sendall(b"GO\r\n")
        assert recv_all_or_reset(conn) == b""  # The end, never a ClientHello.

    server = serve(handler)
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    negotiate(sock)
    with pytest.raises(StartTlsError, match="start_tls"):
        sock.start_tls()
    assert not sock.upgraded
    sock.close()
    server.stop()
