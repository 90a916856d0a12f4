"""One session of the ``pysock`` command: open the connection, pump both ways, end.

stdin goes to the socket and the socket to stdout, byte for byte, stdin from
its own thread so that a blocked stdin never stalls the output. EOF on stdin
half-closes the connection (``writable.close()``) and the output goes on
until the server's EOF. How the session ends becomes the exit status
(`pysock.cli._report`).

``--timeout S`` bounds every wait on the server and no wait on the user: the
opening (one deadline for DNS, connect and TLS handshake: ``connect_timeout``),
the STARTTLS exchange as a whole (`negotiate`), the handshake after it, each
write (``timeout``), and each read once stdin has ended. While stdin is open
a read timeout is not an error: the server may be waiting for the user's next
command, and a session that died while its user was typing would surprise
them. Ctrl-D ends stdin, and from then on a silent server ends the session
within S seconds.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import threading
from typing import Any, BinaryIO, Final, Optional, Union

from .. import Socket, connect
from ..errors import BrokenSocketError, PysockError, SocketClosedError, SocketTimeout
from ._preambles import negotiate
from ._report import (
    EXIT_BROKEN,
    EXIT_OK,
    EXIT_OPEN_FAILED,
    EXIT_TIMED_OUT,
    EXIT_USAGE,
    escape,
    fail,
    say,
)

__all__ = ["Address", "Session"]

_CHUNK: Final = 65536  # One read or write: big enough for bulk, small enough to stay interactive.

# What connect() takes: "host:port" as typed, or (host, port) from ``HOST PORT``.
Address = Union[str, tuple[str, int]]


class Session:
    """One connection: open it, pump both directions, report how it ended."""

    def __init__(
        self, args: argparse.Namespace, address: Address, context: Optional[ssl.SSLContext]
    ) -> None:
        self.args = args
        self.address = address
        self.context = context
        self.timeout: Optional[float] = args.timeout
        self.remote = "the server"  # Its real endpoint, once connected.
        self.send_error: Optional[BaseException] = None
        # Set by the stdin thread when it will send nothing more: from then on a
        # read timeout ends the session (module docstring).
        self.stdin_ended = threading.Event()

    def run(self) -> int:
        try:
            sock = self._open()
        except (TypeError, ValueError) as exc:
            if isinstance(exc, PysockError):
                return fail(EXIT_OPEN_FAILED, str(exc))
            return fail(EXIT_USAGE, str(exc))
        except PysockError as exc:
            return fail(EXIT_OPEN_FAILED, str(exc))
        with sock:
            return self._pump(sock)

    def _options(self) -> dict[str, Any]:
        args = self.args
        options: dict[str, Any] = {
            "secure_transport": "on" if args.tls else "starttls" if args.starttls else "off",
            "allow_half_open": args.half_close,
            "timeout": self.timeout,  # Each read and write, the STARTTLS exchange's too.
            "connect_timeout": self.timeout,  # One deadline: DNS, connect, TLS handshake.
        }
        if self.context is not None:
            options["tls_context"] = self.context
        if args.servername:
            options["expected_server_hostname"] = args.servername
        if args.proxy:
            options["proxy"] = args.proxy
        return options

    def _open(self) -> Socket:
        sock = connect(self.address, **self._options())
        try:
            info = sock.opened.result()  # Bounded by connect_timeout.
            self.remote = info.remote_address
            say(f"connected to {info.remote_address} (from {info.local_address})")
            if self.args.starttls:
                host = self.args.servername or _host(self.address)
                negotiate(sock, self.args.starttls, host, say, self.timeout)
                plain, sock = sock, sock.start_tls()
                plain.close()
                sock.opened.result()  # The handshake: connect_timeout again, from start_tls().
        except BaseException:
            sock.close()
            raise
        if sock.tls is not None:
            _describe_tls(sock)
        return sock

    def _pump(self, sock: Socket) -> int:
        sender = threading.Thread(target=self._send_stdin, args=(sock,), daemon=True)
        sender.start()
        try:
            if not self._copy_to_stdout(sock):
                return fail(
                    EXIT_TIMED_OUT,
                    f"{self.remote} sent nothing for {self.timeout:g}s after the end of "
                    f"stdin (--timeout {self.timeout:g})",
                )
        except BrokenSocketError as exc:
            return self._broken(exc)
        except BrokenPipeError:
            _silence_stdout()  # Our reader (`| head`) is gone: a normal way to stop.
            return EXIT_OK
        if self.args.half_close:
            sender.join()  # The server is done; stdin may still have more to send.
        if isinstance(self.send_error, (BrokenSocketError, SocketTimeout)):
            return self._broken(self.send_error)
        say("connection closed by the server")
        return EXIT_OK

    def _broken(self, exc: BaseException) -> int:
        """Report a connection broken once open; a write timeout breaks it too."""
        # The reader may see the write timeout's BrokenSocketError (its __cause__)
        # before the stdin thread has stored its SocketTimeout.
        if any(isinstance(e, SocketTimeout) for e in (exc, exc.__cause__, self.send_error)):
            return fail(
                EXIT_TIMED_OUT,
                f"writing to {self.remote} timed out after {self.timeout:g}s "
                f"(--timeout {self.timeout:g}); an unknown part of stdin was sent",
            )
        return fail(EXIT_BROKEN, str(exc))

    def _copy_to_stdout(self, sock: Socket) -> bool:
        """Socket -> stdout: True at the server's EOF, False if it went silent (--timeout)."""
        out: BinaryIO = sys.stdout.buffer
        read1 = sock.readable.read1
        while True:
            try:
                data = read1(_CHUNK)
            except SocketTimeout:  # Loses no data: the socket stays usable.
                if self.stdin_ended.is_set():
                    return False
                continue  # The user may still type: the server may be waiting for them.
            except BrokenSocketError as exc:
                # The bytes read before the break are the error's: show them too.
                out.write(getattr(exc, "partial", b""))
                out.flush()
                raise
            if not data:
                return True
            out.write(data)
            out.flush()

    def _send_stdin(self, sock: Socket) -> None:
        """stdin -> socket, in a thread: a blocked stdin never stalls the output."""
        try:
            self._copy_stdin(sock)
        except PysockError as exc:
            self.send_error = exc
        except OSError as exc:
            self.send_error = exc
            say(f"cannot read stdin: {exc}")
        finally:
            self.stdin_ended.set()

    def _copy_stdin(self, sock: Socket) -> None:
        crlf = _CrlfWriter() if self.args.crlf else None
        fd = sys.stdin.fileno()
        while True:
            data = os.read(fd, _CHUNK)
            if not data:
                break
            sock.writable.write(crlf.convert(data) if crlf else data)
        try:
            sock.writable.close()  # EOF on stdin: half-close, keep reading.
        except (BrokenSocketError, SocketTimeout, SocketClosedError):
            raise
        except PysockError as exc:  # TLS 1.2 cannot half-close: just stop sending.
            say(f"stdin ended; {exc}")


class _CrlfWriter:
    """LF -> CRLF across chunk boundaries, leaving existing CRLF alone."""

    def __init__(self) -> None:
        self.after_cr = False

    def convert(self, data: bytes) -> bytes:
        if not data:
            return data
        lines = data.split(b"\n")
        out = [lines[0]]
        for index, line in enumerate(lines[1:]):
            before = lines[index]
            cr_before = before.endswith(b"\r") or (index == 0 and not before and self.after_cr)
            out.append(b"\n" if cr_before else b"\r\n")
            out.append(line)
        self.after_cr = data.endswith(b"\r")
        return b"".join(out)


def _describe_tls(sock: Socket) -> None:
    tls = sock.tls
    assert tls is not None
    say(f"TLS: {tls.version}, cipher {tls.cipher}, ALPN {tls.alpn or '(none)'}")
    cert = tls.peer_certificate
    if not cert:
        say("certificate: not verified (--insecure)")
        return
    subject = ", ".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
    names = ", ".join(f"{kind}:{value}" for kind, value in cert.get("subjectAltName", ()))
    say(f"certificate: subject {escape(subject) or '(empty)'}; names {escape(names)}")
    say(f"certificate: expires {escape(str(cert.get('notAfter', '?')))}")


def _host(address: Address) -> str:
    if isinstance(address, tuple):
        return address[0]
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that does
    # not raise BrokenPipeError a second time (the recipe in the signal docs).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
