"""``pysock HOST:PORT``: an interactive client in the spirit of ``openssl s_client``.

stdin goes to the socket and the socket to stdout, byte for byte; what
happens to the connection (endpoints, TLS version, cipher, ALPN, the peer
certificate's subject and expiry, the STARTTLS preamble, how it ended) goes
to stderr, one ``* `` line each, with peer-controlled text escaped. EOF on
stdin half-closes the connection (``writable.close()``) and the output goes
on until the server's EOF.

Exit status:
    0: the connection ended cleanly;
    1: it could not be opened (DNS, refused, timeout, TLS, STARTTLS refused);
    2: bad arguments or files (argparse's convention);
    3: it broke once open (a reset, a TLS EOF without close_notify);
    130: interrupted (Ctrl-C).
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import threading
from typing import Any, BinaryIO, Final, Optional, Sequence

from . import __version__
from ._negotiate import PROTOCOLS, escape, negotiate
from ._socket import Socket, connect
from ._tls import OP_IGNORE_UNEXPECTED_EOF
from .errors import BrokenSocketError, PysockError

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_OPEN_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_BROKEN: Final = 3
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it.
_CHUNK: Final = 65536  # One read or write: big enough for bulk, small enough to stay interactive.


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the client; returns the exit status (the console script exits with it)."""
    args = _parser().parse_args(argv)
    try:
        context = _tls_context(args)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return _fail(EXIT_USAGE, f"cannot set up TLS: {exc}")
    try:
        return _Session(args, context).run()
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pysock",
        description="Connect to HOST:PORT; stdin goes to the socket, the socket to stdout, "
        "connection details to stderr. EOF on stdin half-closes the connection.",
        epilog="Exit status: 0 clean end, 1 could not connect, 2 bad arguments, "
        "3 connection broken, 130 interrupted.",
    )
    parser.add_argument(
        "address", metavar="HOST:PORT", help="e.g. example.com:443, [::1]:25, unix:/run/x.sock"
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
        "--timeout", type=_seconds, metavar="S", help="seconds to connect (and handshake)"
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
    value = float(text)
    if not value >= 0:  # Also refuses NaN.
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _tls_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """pysock's secure defaults, plus the files and ALPN given; None when no TLS is asked."""
    if not (args.tls or args.starttls):
        for flag in ("cafile", "cert", "key", "servername", "alpn"):
            if getattr(args, flag):
                raise ValueError(f"--{flag} needs --tls or --starttls")
        if args.insecure:
            raise ValueError("--insecure needs --tls or --starttls")
        return None
    context = ssl.create_default_context(cafile=args.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options &= ~OP_IGNORE_UNEXPECTED_EOF
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    elif args.key:
        raise ValueError("--key needs --cert")
    if args.alpn:
        context.set_alpn_protocols(args.alpn)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _say("WARNING: --insecure: the server's certificate and name are NOT verified")
    return context


class _Session:
    """One connection: open it, pump both directions, report how it ended."""

    def __init__(self, args: argparse.Namespace, context: Optional[ssl.SSLContext]) -> None:
        self.args = args
        self.context = context
        self.send_error: Optional[BaseException] = None

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

    def _open(self) -> Socket:
        args = self.args
        transport = "on" if args.tls else "starttls" if args.starttls else "off"
        options: dict[str, Any] = {
            "secure_transport": transport,
            "allow_half_open": args.half_close,
            "connect_timeout": args.timeout,
        }
        if self.context is not None:
            options["tls_context"] = self.context
        if args.servername:
            options["expected_server_hostname"] = args.servername
        if args.proxy:
            options["proxy"] = args.proxy
        sock = connect(args.address, **options)
        try:
            info = sock.opened.result()
            _say(f"connected to {info.remote_address} (from {info.local_address})")
            if args.starttls:
                negotiate(sock, args.starttls, args.servername or _host(args.address), _say)
                plain, sock = sock, sock.start_tls()
                plain.close()
                sock.opened.result()
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
            _copy_to_stdout(sock)
        except BrokenSocketError as exc:
            _say(f"connection broken: {exc}")
            return EXIT_BROKEN
        except BrokenPipeError:
            _silence_stdout()  # Our reader (`| head`) is gone: a normal way to stop.
            return EXIT_OK
        if self.args.half_close:
            sender.join()  # The server is done; stdin may still have more to send.
        if isinstance(self.send_error, BrokenSocketError):
            _say(f"connection broken: {self.send_error}")
            return EXIT_BROKEN
        _say("connection closed by the server")
        return EXIT_OK

    def _send_stdin(self, sock: Socket) -> None:
        """stdin -> socket, in a thread: a blocked stdin never stalls the output."""
        crlf = _CrlfWriter() if self.args.crlf else None
        fd = sys.stdin.fileno()
        try:
            while True:
                data = os.read(fd, _CHUNK)
                if not data:
                    break
                sock.writable.write(crlf.convert(data) if crlf else data)
            try:
                sock.writable.close()  # EOF on stdin: half-close, keep reading.
            except PysockError as exc:  # TLS 1.2 cannot half-close: just stop sending.
                _say(f"stdin ended; {exc}")
        except PysockError as exc:
            self.send_error = exc
        except OSError as exc:
            self.send_error = exc
            _say(f"cannot read stdin: {exc}")


def _copy_to_stdout(sock: Socket) -> None:
    out: BinaryIO = sys.stdout.buffer
    read1 = sock.readable.read1
    while True:
        data = read1(_CHUNK)
        if not data:
            return
        out.write(data)
        out.flush()


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


def _host(address: str) -> str:
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def _say(message: str) -> None:
    print(f"* {message}", file=sys.stderr, flush=True)


def _fail(status: int, message: str) -> int:
    print(f"pysock: error: {message}", file=sys.stderr, flush=True)
    return status


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that does
    # not raise BrokenPipeError a second time (the recipe in the signal docs).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
