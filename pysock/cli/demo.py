"""A transcript of pysock at work, offline: ``python -m pysock.cli.demo`` (``make demo``).

Each part starts its own one-connection server on 127.0.0.1 (port 0) in a
thread, written with the standard library, and drives it with pysock's public
API: (1) plain TCP with a half-close, (2) TLS from the first byte, (3) an
SMTP-like STARTTLS upgrade, (4) the destination guard refusing loopback, (5)
a connection to a port where nothing listens. Parts 2 and 3 need
certificates from ``trustme`` (in the ``test`` extra, which ``make install``
installs) and are skipped with a note when it is missing.

The transcript reads like a session at the Python prompt: each ``>>>`` line
is the call the demo really made, as you would type it (with a ``#`` comment
saying what it does), followed by what it returned (nothing for None, as at
the prompt) or the error it raised. An error number is always shown the same
way, compared with its portable name (``error.errno == errno.ECONNREFUSED``),
since the numbers differ between systems. ``==`` lines head each part. Every
blocking call has a timeout. Exit status 0 on success; 1 with a one-line
error otherwise.
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


def show(code: str, note: str = "") -> None:
    """Print `code` as typed at the Python prompt, with a comment saying what it does."""
    say(f">>> {code}  # {note}" if note else f">>> {code}")


def echo(value: object) -> None:
    """Print a result as the Python prompt does: its repr, and nothing for None."""
    if value is not None:
        say(repr(value))


def write(name: str, sock: Socket, data: bytes, note: str = "") -> None:
    show(f"{name}.writable.write({data!r})", note)
    echo(sock.writable.write(data))


def expect_line(name: str, sock: Socket, want: bytes, note: str = "") -> None:
    show(f"{name}.readable.readline()", note)
    got = sock.readable.readline()
    echo(got)
    if got != want:
        raise DemoError(f"expected {want!r}, read {got!r}")


def check_connect_error(error: Optional[BaseException]) -> ConnectError:
    """Show the opening's error by its class and message (its repr would show the errno
    as a bare number: `show_errno` shows it, the one way)."""
    show("isinstance(error, ConnectError)", "the opening failed")
    echo(isinstance(error, ConnectError))
    if not isinstance(error, ConnectError):
        raise DemoError(f"expected a ConnectError, got {error!r}")
    show("print(error)")
    say(str(error))
    return error


def show_errno(error: OSError, name: str) -> None:
    """The one way the transcript shows an errno: compared with its portable name."""
    show(f"error.errno == errno.{name}", f"{name} is {getattr(errno, name)} on this system")
    echo(error.errno == getattr(errno, name))
    if error.errno != getattr(errno, name):
        raise DemoError(f"expected errno {name}, got {error.errno}")


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
        show(f"sock = connect({server.address!r}, timeout={TIMEOUT})", "returns at once")
        with connect(server.address, timeout=TIMEOUT) as sock:
            show("sock", "connecting or, on loopback, already open")
            echo(sock)
            write("sock", sock, b"hello\n", "waits until the connection is open")
            show(f"sock.opened.result({TIMEOUT})", "the connection's endpoints")
            echo(sock.opened.result(TIMEOUT))
            expect_line("sock", sock, b"echo: hello\n")
            half_close(sock)


def half_close(sock: Socket) -> None:
    write("sock", sock, b"the end\n")
    show("sock.writable.close()", "half-close: the server reads EOF; reading goes on")
    sock.writable.close()
    expect_line("sock", sock, b"EOF seen after 8 more bytes; bye\n")
    show("sock.readable.read()", "up to the server's EOF: nothing more")
    echo(sock.readable.read())
    show(f"sock.closed.result({TIMEOUT})", "None: a clean end, both directions closed")
    echo(sock.closed.result(TIMEOUT))
    show("sock")
    echo(sock)


def client_context(certs: Certs, alpn: Optional[list[str]] = None) -> ssl.SSLContext:
    """The client's context, shown as the calls that make it."""
    show("ctx = ssl.create_default_context()", "verifies certificates and hostnames")
    show("ca.configure_trust(ctx)", "ca: the trustme.CA that issued the server's certificate")
    client = tls_contexts(certs)[1]
    if alpn is not None:
        show(f"ctx.set_alpn_protocols({alpn!r})")
        client.set_alpn_protocols(alpn)
    return client


def part_tls(certs: Certs) -> None:
    say('\n== part 2: TLS (secure_transport="on"), an echo server offering ALPN h2, http/1.1')
    server_ctx = tls_contexts(certs)[0]
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client_ctx = client_context(certs, ["http/1.1"])
    with Server(tls_echo_server(server_ctx)) as server:
        show(
            f"sock = connect({server.address!r}, secure_transport='on', tls_context=ctx, "
            f"timeout={TIMEOUT})"
        )
        with connect(
            server.address, secure_transport="on", tls_context=client_ctx, timeout=TIMEOUT
        ) as sock:
            show(f"sock.opened.result({TIMEOUT})", "after the TLS handshake")
            echo(sock.opened.result(TIMEOUT))
            tls = sock.tls
            if tls is None:
                raise DemoError("sock.tls is None after opened")
            show("sock.tls.version, sock.tls.cipher, sock.tls.alpn")
            echo((tls.version, tls.cipher, tls.alpn))
            show("sock.tls.peer_certificate['subjectAltName']")
            echo(tls.peer_certificate["subjectAltName"])
            write("sock", sock, b"hello over TLS\n")
            expect_line("sock", sock, b"hello over TLS\n")
            show("sock.close()", "sends close_notify")
            sock.close()
        show(f"sock.closed.result({TIMEOUT})", "None: a clean end")
        echo(sock.closed.result(TIMEOUT))


def part_starttls(certs: Certs) -> None:
    say('\n== part 3: STARTTLS (secure_transport="starttls"), an SMTP-like server')
    server_ctx = tls_contexts(certs)[0]
    client_ctx = client_context(certs)
    with Server(smtp_server(server_ctx)) as server:
        show(
            f"sock = connect({server.address!r}, secure_transport='starttls', tls_context=ctx, "
            f"timeout={TIMEOUT})"
        )
        with connect(
            server.address, secure_transport="starttls", tls_context=client_ctx, timeout=TIMEOUT
        ) as sock:
            expect_line("sock", sock, b"220 demo ESMTP\r\n", "plaintext until start_tls()")
            write("sock", sock, b"EHLO client\r\n")
            expect_line("sock", sock, b"250-demo\r\n")
            expect_line("sock", sock, b"250 STARTTLS\r\n")
            write("sock", sock, b"STARTTLS\r\n")
            expect_line("sock", sock, b"220 Go ahead\r\n")
            show("tls_sock = sock.start_tls()", "a new Socket: TLS over the same connection")
            with sock.start_tls() as tls_sock:
                upgraded_on_tls(sock, tls_sock)
                show("tls_sock.close()")
                tls_sock.close()
            show(f"tls_sock.closed.result({TIMEOUT})", "None: a clean end")
            echo(tls_sock.closed.result(TIMEOUT))


def upgraded_on_tls(sock: Socket, tls_sock: Socket) -> None:
    show("sock.upgraded", "the old socket is done, its closed future complete")
    echo(sock.upgraded)
    show("sock")
    echo(sock)
    show("sock.readable.readline()", "the old socket's streams are closed")
    try:
        sock.readable.readline()
    except SocketClosedError as exc:
        say(f"SocketClosedError: {exc}")
    else:
        raise DemoError("the old socket's readable still reads after start_tls()")
    show(f"tls_sock.opened.result({TIMEOUT})", "after the TLS handshake")
    echo(tls_sock.opened.result(TIMEOUT))
    show("tls_sock.tls.version")
    tls = tls_sock.tls
    echo(tls.version if tls else None)
    write("tls_sock", tls_sock, b"EHLO client\r\n")
    expect_line("tls_sock", tls_sock, b"250 demo\r\n")
    write("tls_sock", tls_sock, b"QUIT\r\n")
    expect_line("tls_sock", tls_sock, b"221 Bye\r\n")


def part_refused() -> None:
    say("\n== part 5: a port where nothing listens")
    with socket.socket() as probe:  # bound, not listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
        show(f"sock = connect({address!r}, timeout={TIMEOUT})")
        with connect(address, timeout=TIMEOUT) as sock:
            show(f"error = sock.opened.exception({TIMEOUT})", "the opening's error, or None")
            error = sock.opened.exception(TIMEOUT)
            show_errno(check_connect_error(error), "ECONNREFUSED")
            show("sock.close()")
            sock.close()


def part_guard() -> None:
    say("\n== part 4: beyond Workers, the destination guard for server-side code")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        show(f"sock = connect({address!r}, address_filter=deny_private, timeout={TIMEOUT})")
        with connect(address, address_filter=deny_private, timeout=TIMEOUT) as sock:
            show(f"error = sock.opened.exception({TIMEOUT})", "refused before any packet")
            error = sock.opened.exception(TIMEOUT)
            show_errno(check_connect_error(error), "EACCES")
            show("sock.close()")
            sock.close()
        listener.setblocking(False)
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            say("# (and the listener saw no connection)")
        else:
            raise DemoError("the guard let a connection reach the listener")


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
