"""``pysock HOST:PORT``: an interactive client in the spirit of ``openssl s_client``.

stdin goes to the socket and the socket to stdout, byte for byte; what
happens to the connection (endpoints, TLS version, cipher, ALPN, the peer
certificate's subject and expiry, the STARTTLS preamble) goes to stderr, one
``* `` line each, with peer-controlled text escaped. EOF on stdin
half-closes the connection (``writable.close()``) and the output goes on
until the server's EOF.

``--timeout S`` bounds every wait on the server and no wait on the user
(`pysock.cli._session` says which waits). This module parses the arguments
and builds the TLS context; the session does the rest.

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
import re
import ssl
from typing import Final, Optional, Sequence

from .. import __version__
from .._tls import OP_IGNORE_UNEXPECTED_EOF
from ._preambles import PROTOCOLS
from ._report import EXIT_INTERRUPTED, EXIT_USAGE, fail, say
from ._session import Address, Session

__all__ = ["main"]

_DIGITS: Final = re.compile(r"[0-9]+")  # int() would also take " 80", "+80" and "8_0".


class _UsageError(Exception):
    """A bad argument or file: exit status 2, with this message."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the client; returns the exit status (the console script exits with it)."""
    args = _parser().parse_args(argv)
    try:
        address = _address(args.address, args.port)
        context = _tls_context(args)
    except _UsageError as exc:
        return fail(EXIT_USAGE, str(exc))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return fail(EXIT_USAGE, f"cannot set up TLS: {exc}")
    try:
        return Session(args, address, context).run()
    except KeyboardInterrupt:
        say("interrupted")
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
        say("WARNING: --insecure: the server's certificate and name are NOT verified")
    return context


def _check_file(flag: str, path: str) -> None:
    """Name the file: ssl's own errors for a missing one say only "No such file"."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _UsageError(f"cannot use {flag} {path!r}: {exc.strerror or exc}") from None
