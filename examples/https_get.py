"""Fetch a page with HTTP/1.1 over TLS, offering ALPN "http/1.1".

Usage: python examples/https_get.py [HOST:PORT] [PATH] [--cafile CA.pem]

Prints the status line, the headers and the length of the body. A real
program would use an HTTP library; this one shows the bytes on the wire.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from typing import Final, Optional

from pysock import PysockError, Socket, connect

# Seconds for the connect, the TLS handshake and each read or write.
TIMEOUT: Final = 10.0
# Bounds on what we accept from the server, so that a broken one cannot fill memory.
MAX_LINE: Final = 8192
MAX_HEADERS: Final = 100


class HttpError(Exception):
    """The server's answer is not HTTP/1.1 as this example understands it."""


def read_line(sock: Socket) -> str:
    line = sock.readable.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        raise HttpError(f"a truncated or overlong line: {line[:80]!r}")
    return line.decode("latin-1").rstrip("\r\n")


def read_body(sock: Socket, headers: dict[str, str]) -> bytes:
    """The body framed by Content-Length, chunked encoding or the end of the connection."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while size := int(read_line(sock).split(";")[0], 16):  # RFC 9112 7.1: hex size
            chunks.append(sock.readable.readexactly(size))
            read_line(sock)  # the CRLF after each chunk
        while read_line(sock):  # trailer fields, up to an empty line
            pass
        return b"".join(chunks)
    if "content-length" in headers:
        return bytes(sock.readable.readexactly(int(headers["content-length"])))
    return bytes(sock.readable.read())  # "Connection: close": the body ends at EOF


def get(address: str, path: str, context: ssl.SSLContext) -> None:
    # The Host header is "host:port", the port left out when it is the default (RFC 9110 7.2).
    host = address.removesuffix(":443")
    with connect(address, secure_transport="on", tls_context=context, timeout=TIMEOUT) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        sock.writable.write(request.encode())
        info = sock.opened.result()  # the write waited for the handshake: this is done
        assert sock.tls is not None
        print(f"* TLS: {sock.tls.version}, ALPN {info.alpn}")
        status = read_line(sock)
        if not status.startswith("HTTP/1."):
            raise HttpError(f"not an HTTP/1.x answer: {status!r}")
        print(status)
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = read_line(sock)
            if not line:
                break
            print(line)
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise HttpError(f"more than {MAX_HEADERS} header lines")
        print(f"* body: {len(read_body(sock, headers))} bytes")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="https_get.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("address", nargs="?", default="example.com:443", help="HOST:PORT")
    parser.add_argument("path", nargs="?", default="/", help="the path to GET (default /)")
    parser.add_argument("--cafile", help="trust this CA (PEM) instead of the system's CAs")
    args = parser.parse_args(argv)
    try:
        # Verification stays on; --cafile only changes whom we trust.
        context = ssl.create_default_context(cafile=args.cafile)
        # pysock never modifies a context it is given: offer ALPN on the context itself
        # (without tls_context, connect(alpn_protocols=["http/1.1"]) does the same).
        context.set_alpn_protocols(["http/1.1"])
        get(args.address, args.path, context)
    except (PysockError, OSError, HttpError, ValueError) as exc:  # a bad chunk size too
        print(f"https_get.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
