"""A transcript of pysock at work, offline: ``python -m pysock._demo`` (``make demo``).

Each part starts its own one-connection server on 127.0.0.1 (port 0) in a
thread, written with the standard library, and drives it with pysock's public
API: (1) plain TCP with a half-close, (2) TLS from the first byte, (3) an
SMTP-like STARTTLS upgrade, then a connection to a refused port. Parts 2 and 3
need certificates from ``trustme`` (in the ``test`` extra, which
``make install`` installs) and are skipped with a note when it is missing.

Lines: ``->`` the client sends, ``<-`` the client receives, ``==`` a future
completed or a state was read. Every blocking call has a timeout. Exit status
0 on success; 1 with a one-line error otherwise.
"""

from __future__ import annotations

import errno
import socket
import ssl
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Final, Optional

from pysock import ConnectError, Socket, SocketClosedError, connect, deny_private

if TYPE_CHECKING:
    import trustme

    Certs = tuple[trustme.CA, trustme.LeafCert]

TIMEOUT: Final = 5.0  # seconds; each step takes milliseconds on loopback
Handler = Callable[[socket.socket], None]


class DemoError(Exception):
    """Something did not go as the transcript says it should."""


# -- the client's side of the transcript ---------------------------------------------


def say(line: str) -> None:
    print(line, flush=True)


def write(sock: Socket, data: bytes) -> None:
    say(f"-> write {data!r}")
    sock.writable.write(data)


def expect_line(sock: Socket, want: bytes) -> None:
    got = sock.readable.readline()
    say(f"<- read {got!r}")
    if got != want:
        raise DemoError(f"expected {want!r}, read {got!r}")


# -- the servers ---------------------------------------------------------------------


class Server:
    """Serve one connection on 127.0.0.1 in a thread; its error is raised on exit."""

    def __init__(self, handler: Handler) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TIMEOUT)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._handler = handler
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="demo-server", daemon=True)

    def _run(self) -> None:
        try:
            conn, _ = self._listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                self._handler(conn)
        except BaseException as exc:
            self._error = exc
        finally:
            self._listener.close()

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], *_: object) -> None:
        self._thread.join(TIMEOUT + 1)
        if exc_type is not None:
            return  # The client's error is the one to report.
        if self._thread.is_alive():
            raise DemoError("the server thread did not finish")
        if self._error is not None:
            error = self._error
            raise DemoError(f"server: {type(error).__name__}: {error}") from error


def recv_line(conn: socket.socket) -> bytes:
    """One line, byte by byte, so nothing after it is consumed (the TLS handshake)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return line


def expect_command(conn: socket.socket, verb: bytes) -> None:
    line = recv_line(conn)
    if not line.startswith(verb):
        raise DemoError(f"the server expected {verb!r}, read {line!r}")


def drain(conn: socket.socket) -> None:
    """Read until the client is gone; over TLS, answer its close_notify with ours."""
    try:
        while conn.recv(4096):
            pass
        if isinstance(conn, ssl.SSLSocket):
            # Without this reply (SSLSocket.close() sends none), a pysock client's
            # `closed` sometimes fails after close(): a race reported to the
            # library author (TlsConnection.close() vs the idle hang-up watch).
            conn.unwrap()
    except OSError:
        pass  # The client may be gone already: how it left is not part of the demo.


def plain_server(conn: socket.socket) -> None:
    conn.sendall(b"echo: " + recv_line(conn))
    rest = b""
    while chunk := conn.recv(4096):  # until the client's half-close
        rest += chunk
    conn.sendall(b"EOF seen after %d more bytes; bye\n" % len(rest))


def tls_echo_server(context: ssl.SSLContext) -> Handler:
    def handle(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(recv_line(tls))
            drain(tls)

    return handle


def smtp_server(context: ssl.SSLContext) -> Handler:
    def handle(conn: socket.socket) -> None:
        conn.sendall(b"220 demo ESMTP\r\n")
        expect_command(conn, b"EHLO")
        conn.sendall(b"250-demo\r\n250 STARTTLS\r\n")
        expect_command(conn, b"STARTTLS")
        conn.sendall(b"220 Go ahead\r\n")
        with context.wrap_socket(conn, server_side=True) as tls:
            expect_command(tls, b"EHLO")
            tls.sendall(b"250 demo\r\n")
            expect_command(tls, b"QUIT")
            tls.sendall(b"221 Bye\r\n")
            drain(tls)

    return handle


# -- certificates --------------------------------------------------------------------


def load_certificates() -> Optional[Certs]:
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()
    return ca, ca.issue_cert("127.0.0.1", "localhost")


def tls_contexts(certs: Certs) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with the leaf certificate and a client context trusting the CA."""
    ca, leaf = certs
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


# -- the parts -----------------------------------------------------------------------


def part_plain() -> None:
    say("\n== part 1: plain TCP, an echo server that answers once more after EOF")
    with Server(plain_server) as server:
        say(f'-> connect("{server.address}")')
        with connect(server.address, timeout=TIMEOUT) as sock:
            open_at_write = sock.opened.done()
            say(f"   {sock!r}")
            write(sock, b"hello\n")
            if open_at_write:
                say("   (opened.done() was already True: on loopback, connect() opened it)")
            else:
                say("   (opened.done() was False at that write: it waited for the connection)")
            say(f"== opened: {sock.opened.result(TIMEOUT)}")
            say(f"   {sock!r}")
            expect_line(sock, b"echo: hello\n")
            half_close(sock)


def half_close(sock: Socket) -> None:
    write(sock, b"the end\n")
    say("-> writable.close()   (half-close: the server reads EOF)")
    sock.writable.close()
    say(f"   {sock!r}")
    if sock.closed.done():
        say("   (the answer and the EOF were already in: the connection is over,")
        say("   and the bytes that came before the EOF stay readable)")
    else:
        say("   (the write side is closed; reading goes on)")
    expect_line(sock, b"EOF seen after 8 more bytes; bye\n")
    say(f"<- read {sock.readable.read()!r}   (the server's EOF)")
    say(f"== closed: {sock.closed.result(TIMEOUT)}")
    say(f"   {sock!r}")


def part_tls(certs: Certs) -> None:
    say('\n== part 2: TLS (secure_transport="on"), an echo server offering ALPN h2, http/1.1')
    server_ctx, client_ctx = tls_contexts(certs)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client_ctx.set_alpn_protocols(["http/1.1"])
    with Server(tls_echo_server(server_ctx)) as server:
        say(f'-> connect("{server.address}", secure_transport="on", tls_context=ctx)')
        say('   (ctx trusts the demo CA; ctx.set_alpn_protocols(["http/1.1"]))')
        with connect(
            server.address, secure_transport="on", tls_context=client_ctx, timeout=TIMEOUT
        ) as sock:
            say(f"== opened: {sock.opened.result(TIMEOUT)}")
            tls = sock.tls
            if tls is None:
                raise DemoError("sock.tls is None after opened")
            say(f"== tls.version={tls.version!r} tls.cipher={tls.cipher!r} tls.alpn={tls.alpn!r}")
            names = tls.peer_certificate["subjectAltName"]
            say(f"== tls.peer_certificate['subjectAltName']: {names}")
            write(sock, b"hello over TLS\n")
            expect_line(sock, b"hello over TLS\n")
            say("-> close()   (sends close_notify)")
        say(f"== closed: {sock.closed.result(TIMEOUT)}   {sock!r}")


def part_starttls(certs: Certs) -> None:
    say('\n== part 3: STARTTLS (secure_transport="starttls"), an SMTP-like server')
    server_ctx, client_ctx = tls_contexts(certs)
    with Server(smtp_server(server_ctx)) as server:
        say(f'-> connect("{server.address}", secure_transport="starttls", tls_context=ctx)')
        with connect(
            server.address, secure_transport="starttls", tls_context=client_ctx, timeout=TIMEOUT
        ) as sock:
            expect_line(sock, b"220 demo ESMTP\r\n")
            write(sock, b"EHLO client\r\n")
            expect_line(sock, b"250-demo\r\n")
            expect_line(sock, b"250 STARTTLS\r\n")
            write(sock, b"STARTTLS\r\n")
            expect_line(sock, b"220 Go ahead\r\n")
            say("-> tls_sock = sock.start_tls()")
            with sock.start_tls() as tls_sock:
                upgraded_on_tls(sock, tls_sock)
                say("-> tls_sock.close()")
            say(f"== closed: {tls_sock.closed.result(TIMEOUT)}   {tls_sock!r}")


def upgraded_on_tls(sock: Socket, tls_sock: Socket) -> None:
    say(f"== old socket: upgraded={sock.upgraded} closed: {sock.closed.result(TIMEOUT)}")
    say(f"   {sock!r}")
    try:
        sock.readable.readline()
    except SocketClosedError as exc:
        say(f"== old socket: readable.readline() raises SocketClosedError: {exc}")
    else:
        raise DemoError("the old socket's readable still reads after start_tls()")
    say(f"== new socket opened: {tls_sock.opened.result(TIMEOUT)}")
    tls = tls_sock.tls
    say(f"== new socket: tls.version={tls.version if tls else None!r}   {tls_sock!r}")
    write(tls_sock, b"EHLO client\r\n")
    expect_line(tls_sock, b"250 demo\r\n")
    write(tls_sock, b"QUIT\r\n")
    expect_line(tls_sock, b"221 Bye\r\n")


def part_refused() -> None:
    say("\n== a port where nothing listens")
    with socket.socket() as probe:  # bound, not listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
        say(f'-> connect("{address}")')
        with connect(address, timeout=TIMEOUT) as sock:
            error = sock.opened.exception(TIMEOUT)
    if not isinstance(error, ConnectError) or error.errno is None:
        raise DemoError(f"expected a ConnectError with an errno, got {error!r}")
    name = errno.errorcode.get(error.errno, "?")
    say(f"== opened failed: ConnectError errno={error.errno} ({name}): {error}")


def part_guard() -> None:
    say("\n== part 4: beyond Workers, the destination guard for server-side code")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        say(f'-> connect("{address}", address_filter=deny_private)')
        with connect(address, address_filter=deny_private, timeout=TIMEOUT) as sock:
            error = sock.opened.exception(TIMEOUT)
        listener.setblocking(False)
        try:
            listener.accept()[0].close()
            reached = True
        except BlockingIOError:
            reached = False
    if not isinstance(error, ConnectError) or error.errno != errno.EACCES or reached:
        raise DemoError(f"expected a ConnectError with EACCES and no connection, got {error!r}")
    say(f"== refused, and nothing reached the listener: ConnectError errno=EACCES: {error}")


def main() -> int:
    started = time.monotonic()
    try:
        part_plain()
        certs = load_certificates()
        if certs is None:
            say("\n== parts 2 and 3 (TLS, STARTTLS) skipped: trustme is not installed,")
            say("   so there is no certificate to serve (`make install` installs it)")
        else:
            part_tls(certs)
            part_starttls(certs)
        part_guard()
        part_refused()
    except Exception as exc:
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    say(f"\n== done in {time.monotonic() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
