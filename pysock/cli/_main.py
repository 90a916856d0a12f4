"""``pysock HOST:PORT``: an interactive client in the spirit of ``openssl s_client``.

stdin goes to the socket and the socket to stdout, byte for byte; what
happens to the connection (endpoints, TLS version, cipher, ALPN, the peer
certificate's subject and expiry, the STARTTLS preamble) goes to stderr, one
``* `` line each, with peer-controlled text escaped. EOF on stdin
half-closes the connection (``writable.close()``) and the output goes on
until the server's EOF.

``--timeout S`` bounds every wait on the server and no wait on the user: the
opening (one deadline for DNS, connect and TLS handshake: ``connect_timeout``),
the STARTTLS exchange as a whole (`negotiate`), the handshake after it, each
write (``timeout``), and each read once stdin has ended. While stdin is open
a read timeout is not an error: the server may be waiting for the user's next
command, and a session that died while its user was typing would surprise
them. Ctrl-D ends stdin, and from then on a silent server ends the session
within S seconds.

Exit status:
    0: the connection ended cleanly;
    1: it could not be opened (DNS, refused, timeout, TLS, STARTTLS refused);
    2: bad arguments or files (argparse's convention);
    3: it broke once open (a reset, a TLS EOF without close_notify);
    4: it timed out once open (``--timeout``);
    130: interrupted (Ctrl-C).
Errors are one line on stderr, ``pysock: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import ssl
import sys
import threading
from typing import Any, BinaryIO, Final, Optional, Sequence, Union

from .. import Socket, __version__, connect
from .._tls import OP_IGNORE_UNEXPECTED_EOF
from ..errors import BrokenSocketError, PysockError, SocketClosedError, SocketTimeout
from ._preambles import PROTOCOLS, escape, negotiate

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_OPEN_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_BROKEN: Final = 3
EXIT_TIMED_OUT: Final = 4
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it.
_CHUNK: Final = 65536  # One read or write: big enough for bulk, small enough to stay interactive.
_DIGITS: Final = re.compile(r"[0-9]+")  # int() would also take " 80", "+80" and "8_0".

# What connect() takes: "host:port" as typed, or (host, port) from ``HOST PORT``.
Address = Union[str, tuple[str, int]]


class _UsageError(Exception):
    """A bad argument or file: exit status 2, with this message."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the client; returns the exit status (the console script exits with it)."""
    args = _parser().parse_args(argv)
    try:
        address = _address(args.address, args.port)
        context = _tls_context(args)
    except _UsageError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return _fail(EXIT_USAGE, f"cannot set up TLS: {exc}")
    try:
        return _Session(args, address, context).run()
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pysock",
        description="Connect to HOST:PORT (or HOST PORT); stdin goes to the socket, the socket "
        "to stdout, connection details to stderr. EOF on stdin half-closes the connection.",
        epilog="Exit status: 0 clean end, 1 could not connect, 2 bad arguments, "
        "3 connection broken, 4 timed out once connected (--timeout), 130 interrupted.",
    )
    parser.add_argument(
        "address",
        metavar="HOST:PORT",
        help="e.g. example.com:443, [::1]:25, unix:/run/x.sock; or HOST, then PORT",
    )
    parser.add_argument(
        "port", nargs="?", metavar="PORT", help="the port, when HOST has none (as with nc)"
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", help="TLS from the first byte")
    tls.add_argument(
        "--starttls",
        choices=sorted(PROTOCOLS),
        help="speak the protocol's own STARTTLS preamble, then upgrade to TLS",
    )
    parser.add_argument("--cafile", help="trust the CA certificates in this PEM file")
    parser.add_argument("--cert", help="client certificate (PEM) for TLS")
    parser.add_argument("--key", help="private key (PEM) for --cert, if not in the same file")
    parser.add_argument("--servername", help="name to verify and send as SNI")
    parser.add_argument(
        "--alpn", action="append", metavar="P", help="offer ALPN protocol P (repeatable)"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do NOT verify the server's certificate or name (for tests only)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="wait at most S seconds for the server, each time: to connect (DNS, TCP, TLS "
        "handshake), for the whole STARTTLS exchange and for the handshake after it, for "
        "each write, and, once stdin has ended, for the server's next bytes (exit status 4). "
        "While stdin is open a silent server is waited for: you may be typing",
    )
    parser.add_argument(
        "--half-close",
        action="store_true",
        help="after the server's EOF keep sending stdin (allow_half_open=True)",
    )
    parser.add_argument("--crlf", action="store_true", help="send line ends as CRLF")
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="go through a proxy: socks5h://[user:pass@]host:port, socks5://..., http://...",
    )
    parser.add_argument("--version", action="version", version=f"pysock {__version__}")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    # 0 would time every wait out at once; inf is no timeout at all (leave --timeout out).
    if not (0 < value < math.inf):  # Also refuses NaN.
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _address(host: str, port: Optional[str]) -> Address:
    """HOST:PORT as typed, or HOST PORT (the nc habit) as a (host, port) tuple."""
    if "://" in host:  # connect()'s own message suggests a connect() call.
        raise _UsageError(f"{host!r} is a URL: give HOST:PORT or HOST PORT")
    if port is None:
        if ":" not in host:
            raise _UsageError(f"no port in {host!r}: give HOST:PORT or HOST PORT")
        return host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # "[::1] 8080": the brackets are for HOST:PORT, not needed here.
    elif host.startswith("unix:"):
        raise _UsageError(f"a unix: address takes no port, not {port!r}")
    elif host.count(":") == 1 or "]:" in host:  # A bare IPv6 literal has two or more.
        raise _UsageError(f"the port is given twice: {host!r} and {port!r}")
    if not _DIGITS.fullmatch(port):
        raise _UsageError(f"the port must be a number, not {port!r}")
    return host, int(port)


def _tls_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """pysock's secure defaults, plus the files and ALPN given; None when no TLS is asked."""
    if not (args.tls or args.starttls):
        for flag in ("cafile", "cert", "key", "servername", "alpn"):
            if getattr(args, flag):
                raise _UsageError(f"--{flag} needs --tls or --starttls")
        if args.insecure:
            raise _UsageError("--insecure needs --tls or --starttls")
        return None
    if args.key and not args.cert:
        raise _UsageError("--key needs --cert")
    for flag in ("cafile", "cert", "key"):
        if getattr(args, flag):
            _check_file(f"--{flag}", getattr(args, flag))
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except ssl.SSLError as exc:
        raise _UsageError(f"cannot use --cafile {args.cafile!r}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options &= ~OP_IGNORE_UNEXPECTED_EOF
    if args.cert:
        try:
            context.load_cert_chain(args.cert, args.key)
        except ssl.SSLError as exc:
            files = f"--cert {args.cert!r}" + (f" and --key {args.key!r}" if args.key else "")
            raise _UsageError(f"cannot use {files}: {exc}") from None
    if args.alpn:
        context.set_alpn_protocols(args.alpn)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _say("WARNING: --insecure: the server's certificate and name are NOT verified")
    return context


def _check_file(flag: str, path: str) -> None:
    """Name the file: ssl's own errors for a missing one say only "No such file"."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _UsageError(f"cannot use {flag} {path!r}: {exc.strerror or exc}") from None


class _Session:
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
                return _fail(EXIT_OPEN_FAILED, str(exc))
            return _fail(EXIT_USAGE, str(exc))
        except PysockError as exc:
            return _fail(EXIT_OPEN_FAILED, str(exc))
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
            _say(f"connected to {info.remote_address} (from {info.local_address})")
            if self.args.starttls:
                host = self.args.servername or _host(self.address)
                negotiate(sock, self.args.starttls, host, _say, self.timeout)
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
                return _fail(
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
        _say("connection closed by the server")
        return EXIT_OK

    def _broken(self, exc: BaseException) -> int:
        """Report a connection broken once open; a write timeout breaks it too."""
        # The reader may see the write timeout's BrokenSocketError (its __cause__)
        # before the stdin thread has stored its SocketTimeout.
        if any(isinstance(e, SocketTimeout) for e in (exc, exc.__cause__, self.send_error)):
            return _fail(
                EXIT_TIMED_OUT,
                f"writing to {self.remote} timed out after {self.timeout:g}s "
                f"(--timeout {self.timeout:g}); an unknown part of stdin was sent",
            )
        return _fail(EXIT_BROKEN, str(exc))

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
            _say(f"cannot read stdin: {exc}")
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
            _say(f"stdin ended; {exc}")


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
    _say(f"TLS: {tls.version}, cipher {tls.cipher}, ALPN {tls.alpn or '(none)'}")
    cert = tls.peer_certificate
    if not cert:
        _say("certificate: not verified (--insecure)")
        return
    subject = ", ".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
    names = ", ".join(f"{kind}:{value}" for kind, value in cert.get("subjectAltName", ()))
    _say(f"certificate: subject {escape(subject) or '(empty)'}; names {escape(names)}")
    _say(f"certificate: expires {escape(str(cert.get('notAfter', '?')))}")


def _host(address: Address) -> str:
    if isinstance(address, tuple):
        return address[0]
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def _say(message: str) -> None:
    print(f"* {message}", file=sys.stderr, flush=True)


def _fail(status: int, message: str) -> int:
    # escape(): one line whatever the message holds (a name, a peer's answer).
    print(f"pysock: error: {escape(message)}", file=sys.stderr, flush=True)
    return status


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that does
    # not raise BrokenPipeError a second time (the recipe in the signal docs).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
