"""No byte pysock received is dropped: a read that fails carries its bytes in `partial`.

The stdlib hands a reader every byte that came before a reset or a TLS end
without close_notify, and only then the error. pysock raises the error in the
same call (so that the end is never mistaken for a clean one) with the bytes
that call read in the error's ``partial``.
"""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Callable

import pytest
import trustme

from pysock import BrokenSocketError, Socket, SocketReader, SocketTimeout, connect

from .helpers import LINGER_ZERO as _LINGER_ZERO
from .peers.tcp import Server
from .peers.tls import client_context, server_context

TIMEOUT = 10
DATA = bytes(range(256)) * 19 + b"tail without a newline"  # 4,886 bytes, no b"\n" at the end
# Each read that gathers the whole of DATA before meeting the end.
READS: dict[str, Callable[[SocketReader], object]] = {
    "read": lambda r: r.read(),
    "read(n)": lambda r: r.read(len(DATA) + 100),
    "readline": lambda r: r.readline(),
    "readuntil": lambda r: r.readuntil(b"\r\n\r\n"),
    "readexactly": lambda r: r.readexactly(len(DATA) + 100),
    "iteration": lambda r: list(r),
    "readinto": lambda r: r.readinto(bytearray(len(DATA) + 100)),
}


def _last_line_start() -> int:
    return DATA.rindex(b"\n") + 1


def _expected(name: str) -> bytes:
    # readline and iteration return the complete lines first; the error carries
    # the bytes of the line it was reading.
    if name in ("readline", "iteration"):
        return DATA[_last_line_start() :]
    return DATA


def _drain_lines(name: str, reader: SocketReader) -> None:
    if name == "readline":
        for _ in range(DATA.count(b"\n")):
            assert reader.readline().endswith(b"\n")


def sends_then_resets(sent: threading.Event) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        conn.recv(1)  # The client is ready: it reads from now on.
        conn.sendall(DATA)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        conn.close()
        sent.set()

    return handler


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("name", list(READS))
def test_a_reset_after_data_raises_with_the_data(
    serve: Callable[..., Server], name: str, timeout: float
) -> None:
    sent = threading.Event()
    server = serve(sends_then_resets(sent))
    with connect(server.address, timeout=timeout) as sock:
        sock.writable.write(b"!")
        assert sent.wait(TIMEOUT)
        _drain_lines(name, sock.readable)
        if name == "iteration":
            lines: list[bytes] = []
            with pytest.raises(BrokenSocketError) as info:
                for line in sock.readable:
                    lines.append(line)
            assert b"".join(lines) == DATA[: _last_line_start()]
        else:
            with pytest.raises(BrokenSocketError) as info:
                READS[name](sock.readable)
        assert info.value.partial == _expected(name)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        # The bytes went with the error; later reads raise it again, empty-handed.
        with pytest.raises(BrokenSocketError) as again:
            sock.readable.read()
        assert again.value.partial == b""
        assert again.value is not info.value


def test_a_reset_while_idle_keeps_the_bytes_for_the_next_read(
    serve: Callable[..., Server],
) -> None:
    """The background thread sees the reset first: the bytes still come with the error."""
    sent = threading.Event()
    server = serve(sends_then_resets(sent))
    with connect(server.address) as sock:
        sock.writable.write(b"!")
        assert isinstance(sock.closed.exception(TIMEOUT), BrokenSocketError)
        with pytest.raises(BrokenSocketError) as info:
            sock.readable.read()
        assert info.value.partial == DATA


def test_a_reset_met_by_a_write_keeps_the_bytes_for_the_next_read(
    serve: Callable[..., Server],
) -> None:
    sent = threading.Event()
    server = serve(sends_then_resets(sent))
    with connect(server.address) as sock:
        sock.writable.write(b"!")
        assert sent.wait(TIMEOUT)
        with pytest.raises(BrokenSocketError):
            for _ in range(100):  # The first send after a reset may still succeed.
                sock.writable.write(b"x" * 1024)
        with pytest.raises(BrokenSocketError) as info:
            sock.readable.read()
        assert info.value.partial == DATA


@pytest.fixture
def tls_server(ca: trustme.CA, leaf: trustme.LeafCert) -> ssl.SSLContext:
    return server_context(leaf, ssl.TLSVersion.TLSv1_3)


def ends_without_close_notify(
    context: ssl.SSLContext, sent: threading.Event
) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        tls = context.wrap_socket(conn, server_side=True)
        tls.recv(1)
        tls.sendall(DATA)
        # A TCP FIN without close_notify: SSLSocket.shutdown() drops the TLS layer first.
        tls.shutdown(socket.SHUT_WR)
        sent.set()
        try:
            tls.recv(1)
        except OSError:
            pass
        tls.close()

    return handler


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("name", list(READS))
def test_a_tls_end_without_close_notify_raises_with_the_data(
    serve: Callable[..., Server],
    ca: trustme.CA,
    tls_server: ssl.SSLContext,
    name: str,
    timeout: float,
) -> None:
    sent = threading.Event()
    server = serve(ends_without_close_notify(tls_server, sent))
    sock = connect(
        server.address, secure_transport="on", tls_context=client_context(ca), timeout=timeout
    )
    with sock:
        sock.writable.write(b"!")
        assert sent.wait(TIMEOUT)
        _drain_lines(name, sock.readable)
        if name == "iteration":
            with pytest.raises(BrokenSocketError) as info:
                for _line in sock.readable:
                    pass
        else:
            with pytest.raises(BrokenSocketError) as info:
                READS[name](sock.readable)
        assert info.value.partial == _expected(name)
        assert "close_notify" in str(info.value)
        with pytest.raises(BrokenSocketError) as again:
            sock.readable.read()
        assert again.value.partial == b""


def test_the_same_error_is_raised_afresh_each_time(unused_port: int) -> None:
    """A stored error raised again keeps its cause and gets a traceback of its own."""
    sock = connect(("127.0.0.1", unused_port))
    depths = []
    for _ in range(3):
        try:
            sock.readable.read(1)
        except ConnectionError as exc:
            depth = 0
            tb = exc.__traceback__
            while tb is not None:
                depth += 1
                tb = tb.tb_next
            depths.append(depth)
            assert isinstance(exc.__cause__, ConnectionRefusedError)
    assert len(set(depths)) == 1, depths
    stored = sock.opened.exception(0)
    assert stored is not None
    sock.close()


# -- ignore_unexpected_eof: an explicit choice to take a TLS end without close_notify ------


def tolerant_client(server: Server, ca: trustme.CA) -> Socket:
    """A TLS client that takes an end without close_notify as clean."""
    return connect(
        server.address,
        secure_transport="on",
        tls_context=client_context(ca),
        ignore_unexpected_eof=True,
    )


@pytest.mark.parametrize("name", ["read", "readline", "iteration"])
def test_ignore_unexpected_eof_takes_the_end_as_clean(
    serve: Callable[..., Server], ca: trustme.CA, tls_server: ssl.SSLContext, name: str
) -> None:
    sent = threading.Event()
    server = serve(ends_without_close_notify(tls_server, sent))
    sock = tolerant_client(server, ca)
    with sock:
        sock.writable.write(b"!")
        assert sent.wait(TIMEOUT)
        if name == "read":
            assert sock.readable.read() == DATA
        elif name == "readline":
            lines = [sock.readable.readline() for _ in range(DATA.count(b"\n") + 1)]
            assert b"".join(lines) == DATA
        else:
            assert b"".join(sock.readable) == DATA
        assert sock.readable.read() == b""
        assert sock.closed.result(TIMEOUT) is None


def test_ignore_unexpected_eof_on_an_idle_socket(
    serve: Callable[..., Server], ca: trustme.CA, tls_server: ssl.SSLContext
) -> None:
    """The background thread sees the end first: still a clean one, the data still there."""
    sent = threading.Event()
    server = serve(ends_without_close_notify(tls_server, sent))
    sock = tolerant_client(server, ca)
    with sock:
        sock.writable.write(b"!")
        assert sock.closed.result(TIMEOUT) is None
        assert sock.readable.read() == DATA


def test_the_contexts_own_flag_does_not_accept_a_truncation(
    serve: Callable[..., Server], ca: trustme.CA, tls_server: ssl.SSLContext
) -> None:
    """Python 3.9 sets OP_IGNORE_UNEXPECTED_EOF on every default context: pysock ignores it."""
    flag = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if not flag:
        pytest.skip("this ssl module has no OP_IGNORE_UNEXPECTED_EOF")
    context = client_context(ca)
    context.options |= flag
    sent = threading.Event()
    server = serve(ends_without_close_notify(tls_server, sent))
    with connect(server.address, secure_transport="on", tls_context=context) as sock:
        sock.writable.write(b"!")
        assert sent.wait(TIMEOUT)
        with pytest.raises(BrokenSocketError) as info:
            sock.readable.read()
        assert info.value.partial == DATA
        assert "ignore_unexpected_eof=True" in str(info.value)


def test_ignore_unexpected_eof_still_reports_a_reset(
    serve: Callable[..., Server], ca: trustme.CA, tls_server: ssl.SSLContext
) -> None:
    def handler(conn: socket.socket) -> None:
        tls = tls_server.wrap_socket(conn, server_side=True)
        tls.recv(1)
        tls.sendall(b"some")
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        tls.shutdown(socket.SHUT_RD)  # Drops the TLS layer without close_notify.
        tls.close()

    server = serve(handler)
    sock = tolerant_client(server, ca)
    with sock:
        sock.writable.write(b"!")
        assert isinstance(sock.closed.exception(TIMEOUT), BrokenSocketError)


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on `sock` that the other end's kernel has not acknowledged (Linux)."""
    import fcntl
    import struct
    import termios

    return int(struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0])


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_bytes_before_a_write_timeout_are_read_before_its_error(
    serve: Callable[..., Server], tls_server: ssl.SSLContext, ca: trustme.CA, tls: bool
) -> None:
    # A write timeout breaks the connection (an unknown amount was sent), but what
    # the peer had sent before is its data: reads return it, then raise.
    arrived, done = threading.Event(), threading.Event()

    def sends_then_never_reads(conn: socket.socket) -> None:
        if tls:
            conn = tls_server.wrap_socket(conn, server_side=True)
        conn.sendall(DATA)
        for _ in range(1000):  # Bounded: until the client's kernel holds every byte.
            if _unacknowledged(conn) == 0:
                arrived.set()
                break
            threading.Event().wait(0.005)
        done.wait(TIMEOUT)
        conn.close()

    server = serve(sends_then_never_reads)
    options = {"secure_transport": "on", "tls_context": client_context(ca)} if tls else {}
    with connect(server.address, **options) as sock:  # type: ignore[arg-type]
        try:
            sock.opened.result(TIMEOUT)
            assert arrived.wait(TIMEOUT)
            sock.timeout = 0.2
            with pytest.raises(SocketTimeout):
                for _ in range(256):  # The peer never reads: both buffers fill up.
                    sock.writable.write(bytes(1 << 20))
            with pytest.raises(BrokenSocketError) as info:
                sock.readable.read()
            assert info.value.partial == DATA
        finally:
            done.set()
