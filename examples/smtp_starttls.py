"""Upgrade an SMTP connection to TLS with STARTTLS (RFC 3207), then say goodbye.

Usage: python examples/smtp_starttls.py [HOST:PORT] [--cafile CA.pem]

The conversation: the server's greeting, EHLO, STARTTLS, the TLS handshake
(start_tls()), EHLO again over TLS, QUIT. No mail is sent.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from typing import Final, Optional

from pysock import PysockError, Socket, connect

# Seconds for the connect, the TLS handshake and each read or write.
TIMEOUT: Final = 10.0
# RFC 5321 section 4.5.3.1.5: a reply line is at most 512 bytes with its CRLF.
MAX_LINE: Final = 512


class SmtpError(Exception):
    """The server answered with a code we did not expect."""


def reply(sock: Socket, expected: str) -> list[str]:
    """Read one reply: its lines, printed as they come. "250-..." goes on, "250 ..." ends it."""
    lines = []
    while True:
        raw = sock.readable.readline(MAX_LINE)
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        print(f"S: {line}")
        lines.append(line)
        if not raw.endswith(b"\n"):
            raise SmtpError(f"the server closed the connection or sent a bad line: {line!r}")
        if not line.startswith(expected):
            raise SmtpError(f"expected {expected}, got {line!r}")
        if line[3:4] != "-":
            return lines


def command(sock: Socket, text: str, expected: str) -> list[str]:
    print(f"C: {text}")
    sock.writable.write(text.encode() + b"\r\n")
    return reply(sock, expected)


def smtp_session(address: str, context: ssl.SSLContext) -> None:
    # RFC 5321 4.1.1.1: EHLO names the client; a real client gives its own domain name
    # (socket.getfqdn(), which may wait on DNS).
    me = "localhost"
    # "starttls": plaintext until start_tls(), which verifies the certificate of the
    # host in `address` (or expected_server_hostname, if you pass it).
    with connect(
        address, secure_transport="starttls", tls_context=context, timeout=TIMEOUT
    ) as sock:
        reply(sock, "220")  # the greeting
        if "STARTTLS" not in (line[4:].upper() for line in command(sock, f"EHLO {me}", "250")):
            raise SmtpError("the server does not offer STARTTLS")
        command(sock, "STARTTLS", "220")
        # start_tls() returns a new socket; `sock` is done. It refuses to go on if the
        # server sent anything after "220" (the injection of CVE-2011-0411).
        with sock.start_tls() as tls_sock:
            # The handshake runs in the background; opened.result() waits for it and
            # raises its error (a TLSError for a certificate that does not verify).
            tls_sock.opened.result(TIMEOUT)
            assert tls_sock.tls is not None  # set once the handshake is complete
            print(f"* TLS: {tls_sock.tls.version}, cipher {tls_sock.tls.cipher}")
            command(tls_sock, f"EHLO {me}", "250")  # RFC 3207: start over after TLS
            command(tls_sock, "QUIT", "221")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="smtp_starttls.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("address", nargs="?", default="localhost:587", help="HOST:PORT")
    parser.add_argument("--cafile", help="trust this CA (PEM) instead of the system's CAs")
    args = parser.parse_args(argv)
    try:
        # Certificate and hostname verification stay on; --cafile only changes whom we trust.
        context = ssl.create_default_context(cafile=args.cafile)
        smtp_session(args.address, context)
    except (PysockError, OSError, SmtpError) as exc:  # ssl.SSLError is an OSError
        print(f"smtp_starttls.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
