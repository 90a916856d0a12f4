"""Ask a PostgreSQL server for TLS, log in, run SELECT 1 and print the row.

Usage: python examples/postgres_sslrequest.py [HOST:PORT] [--user USER]
       [--database DB] [--cafile CA.pem]

PostgreSQL's STARTTLS is the SSLRequest: an 8-byte message before any other,
answered by one byte, "S" (go ahead with TLS) or "N" (no TLS here). See
https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL
This example only supports the "trust" authentication method (no password).
"""

from __future__ import annotations

import argparse
import ssl
import struct
import sys
from typing import Final, Optional

from pysock import PysockError, Socket, connect

# Seconds for the connect, the TLS handshake and each read or write.
TIMEOUT: Final = 10.0
SSL_REQUEST_CODE: Final = 80877103  # 1234 << 16 | 5679: "this is an SSLRequest"
PROTOCOL_VERSION: Final = 196608  # 3 << 16: protocol 3.0, in the StartupMessage
# A bound on one backend message, so that a bad length cannot make us allocate
# gigabytes; the replies of this example are a few hundred bytes.
MAX_MESSAGE: Final = 1 << 20


class PostgresError(Exception):
    """The server sent an ErrorResponse, or something this example does not handle."""


def send(sock: Socket, kind: bytes, body: bytes) -> None:
    """A frontend message: a type byte, then an Int32 length that counts itself."""
    sock.writable.write(kind + struct.pack("!I", 4 + len(body)) + body)


def receive(sock: Socket) -> tuple[bytes, bytes]:
    """A backend message: (type byte, body). Raises IncompleteReadError on EOF."""
    kind, length = struct.unpack("!cI", sock.readable.readexactly(5))
    if not 4 <= length <= MAX_MESSAGE:
        raise PostgresError(f"bad message length {length}")
    body: bytes = sock.readable.readexactly(length - 4)
    if kind == b"E":  # ErrorResponse: fields of a code byte and a C string; M is the message
        fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
        raise PostgresError(f"server error: {fields.get(b'M', body)}")
    return kind, body


def login(sock: Socket, user: str, database: str) -> None:
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    # The StartupMessage has no type byte: a length, the protocol version, the parameters.
    sock.writable.write(struct.pack("!II", 8 + len(params), PROTOCOL_VERSION) + params)
    while True:  # Authentication, ParameterStatus..., BackendKeyData, ReadyForQuery
        kind, body = receive(sock)
        if kind == b"R" and body[:4] != b"\0\0\0\0":  # 0 is AuthenticationOk
            method = struct.unpack("!I", body[:4])[0]
            raise PostgresError(f"authentication method {method} is not supported here")
        if kind == b"Z":
            return


def select_one(sock: Socket) -> list[Optional[str]]:
    """Run SELECT 1 with the simple query protocol and return the row's columns."""
    send(sock, b"Q", b"SELECT 1\0")
    row: list[Optional[str]] = []
    while True:  # RowDescription, DataRow, CommandComplete, ReadyForQuery
        kind, body = receive(sock)
        if kind == b"D":  # DataRow: Int16 count, then per column an Int32 length and bytes
            offset = 2
            for _ in range(struct.unpack_from("!H", body)[0]):
                (size,) = struct.unpack_from("!i", body, offset)
                offset += 4
                if size < 0:  # -1 is NULL
                    row.append(None)
                    continue
                row.append(body[offset : offset + size].decode())
                offset += size
        elif kind == b"Z":
            return row


def session(address: str, user: str, database: str, context: ssl.SSLContext) -> None:
    with connect(
        address, secure_transport="starttls", tls_context=context, timeout=TIMEOUT
    ) as sock:
        sock.writable.write(struct.pack("!II", 8, SSL_REQUEST_CODE))
        answer = sock.readable.readexactly(1)
        if answer != b"S":  # b"N": never fall back to plaintext on our own
            raise PostgresError(f"the server refused TLS (answered {answer!r})")
        with sock.start_tls() as tls_sock:
            tls_sock.opened.result(TIMEOUT)  # wait for the handshake, raise its error
            assert tls_sock.tls is not None
            print(f"* TLS: {tls_sock.tls.version}, cipher {tls_sock.tls.cipher}")
            login(tls_sock, user, database)
            print(f"* logged in as {user} to {database}")
            print(f"SELECT 1 -> {select_one(tls_sock)}")
            send(tls_sock, b"X", b"")  # Terminate: the server then closes the connection


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="postgres_sslrequest.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("address", nargs="?", default="localhost:5432", help="HOST:PORT")
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--database", default="postgres")
    parser.add_argument("--cafile", help="trust this CA (PEM) instead of the system's CAs")
    args = parser.parse_args(argv)
    try:
        # Verification stays on (like sslmode=verify-full); --cafile only changes whom we trust.
        context = ssl.create_default_context(cafile=args.cafile)
        session(args.address, args.user, args.database, context)
    except (PysockError, OSError, PostgresError) as exc:  # ssl.SSLError is an OSError
        print(f"postgres_sslrequest.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
