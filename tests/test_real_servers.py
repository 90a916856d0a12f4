"""STARTTLS against real servers: PostgreSQL 15 (SSLRequest) and SMTP (aiosmtpd).

The servers are child processes started once per session (tests/peers/real_servers.py);
these tests skip when a server is not installed, and fail instead under CI.
"""

from __future__ import annotations

import ssl
import struct
import time
from typing import Iterator

import pytest
import trustme

from pysock import Socket, StartTlsError, TLSError, connect

from .peers.real_servers import (  # noqa: F401 (fixtures)
    ChildServer,
    pg_startup_message,
    postgres,
    smtp_server,
)

TIMEOUT = 10
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")

# PostgreSQL -----------------------------------------------------------------------------

SSL_REQUEST = struct.pack("!II", 8, 80877103)
TERMINATE = b"X\0\0\0\4"


def pg_message(sock: Socket) -> tuple[bytes, bytes]:
    """One backend message: (type byte, payload)."""
    header = sock.readable.readexactly(5)
    (length,) = struct.unpack("!I", header[1:])
    return header[:1], sock.readable.readexactly(length - 4)


def pg_until_ready(sock: Socket) -> list[tuple[bytes, bytes]]:
    """Messages up to and including ReadyForQuery (`Z`); an ErrorResponse fails the test."""
    messages: list[tuple[bytes, bytes]] = []
    while True:
        kind, payload = pg_message(sock)
        assert kind != b"E", f"PostgreSQL error: {payload!r}"
        messages.append((kind, payload))
        if kind == b"Z":
            return messages


def pg_query(sock: Socket, sql: str) -> list[tuple[bytes, bytes]]:
    query = sql.encode() + b"\0"
    sock.writable.write(b"Q" + struct.pack("!I", 4 + len(query)) + query)
    return pg_until_ready(sock)


def pg_row_values(payload: bytes) -> list[bytes]:
    """The column values of a DataRow (`D`) payload (no NULLs expected)."""
    (count,) = struct.unpack("!H", payload[:2])
    values, offset = [], 2
    for _ in range(count):
        (size,) = struct.unpack("!i", payload[offset : offset + 4])
        values.append(payload[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return values


def pg_session_select_1(sock: Socket) -> None:
    """StartupMessage, SELECT 1, Terminate: works over plaintext and TLS alike."""
    sock.writable.write(pg_startup_message())
    kinds = [kind for kind, _ in pg_until_ready(sock)]
    assert kinds[0] == b"R" and kinds[-1] == b"Z"
    answer = pg_query(sock, "SELECT 1")
    assert [kind for kind, _ in answer] == [b"T", b"D", b"C", b"Z"]
    assert pg_row_values(answer[1][1]) == [b"1"]
    sock.writable.write(TERMINATE)


def pg_ssl_answer(address: str) -> bytes:
    with connect(address, timeout=TIMEOUT) as sock:
        sock.writable.write(SSL_REQUEST)
        return sock.readable.readexactly(1)


def pg_admin(address: str, *statements: str) -> None:
    """Run statements one by one (ALTER SYSTEM refuses a multi-statement query)."""
    with connect(address, timeout=TIMEOUT) as sock:
        sock.writable.write(pg_startup_message())
        pg_until_ready(sock)
        for statement in statements:
            pg_query(sock, statement)
        sock.writable.write(TERMINATE)
        assert sock.readable.read() == b""


def pg_wait_for_ssl_answer(address: str, expected: bytes) -> None:
    """pg_reload_conf() only signals the server: wait (bounded) until new sessions see it."""
    deadline = time.monotonic() + TIMEOUT
    while (answer := pg_ssl_answer(address)) != expected:
        assert time.monotonic() < deadline, f"the server still answers {answer!r}"
        time.sleep(0.05)


@pytest.fixture
def postgres_without_ssl(postgres: ChildServer) -> Iterator[ChildServer]:  # noqa: F811
    """The shared server with `ssl = off` for one test; `ssl = on` again afterwards."""
    pg_admin(postgres.address, "ALTER SYSTEM SET ssl = off", "SELECT pg_reload_conf()")
    pg_wait_for_ssl_answer(postgres.address, b"N")
    try:
        yield postgres
    finally:
        pg_admin(postgres.address, "ALTER SYSTEM RESET ssl", "SELECT pg_reload_conf()")
        pg_wait_for_ssl_answer(postgres.address, b"S")


def pg_start_tls(address: str, context: ssl.SSLContext) -> tuple[Socket, Socket]:
    """SSLRequest, exactly the one-byte `S`, start_tls(): (old socket, TLS socket)."""
    sock = connect(address, secure_transport="starttls", tls_context=context, timeout=TIMEOUT)
    try:
        sock.writable.write(SSL_REQUEST)
        assert sock.readable.readexactly(1) == b"S"
        return sock, sock.start_tls()
    except BaseException:
        sock.close()
        raise


def test_postgres_sslrequest_then_start_tls(
    postgres: ChildServer,  # noqa: F811
    client_ctx: ssl.SSLContext,
) -> None:
    sock, tls_sock = pg_start_tls(postgres.address, client_ctx)
    try:
        assert sock.upgraded is True
        assert sock.closed.done()
        assert tls_sock.secure_transport == "on"
        info = tls_sock.opened.result(TIMEOUT)
        assert info.remote_address == postgres.address
        assert tls_sock.tls is not None
        assert tls_sock.tls.version in TLS_VERSIONS
        assert tls_sock.tls.cipher
        tls_sock.writable.write(pg_startup_message())
        kinds = [kind for kind, _ in pg_until_ready(tls_sock)]
        assert kinds[0] == b"R" and kinds[-1] == b"Z"
        answer = pg_query(tls_sock, "SELECT 1")
        assert [kind for kind, _ in answer] == [b"T", b"D", b"C", b"Z"]
        assert pg_row_values(answer[1][1]) == [b"1"]
        assert sock.upgraded is True and sock.closed.done()
    finally:
        tls_sock.close()  # the client ends the session: see the test below for Terminate
        sock.close()


def test_postgres_terminate_ends_the_tls_session_cleanly(
    postgres: ChildServer,  # noqa: F811
    client_ctx: ssl.SSLContext,
) -> None:
    sock, tls_sock = pg_start_tls(postgres.address, client_ctx)
    try:
        pg_session_select_1(tls_sock)  # ends with Terminate (`X`)
        # The backend answers Terminate with close_notify and closes: a clean end.
        assert tls_sock.readable.read() == b""
        assert tls_sock.closed.result(TIMEOUT) is None
    finally:
        tls_sock.close()
        sock.close()


def test_postgres_refuses_tls_and_the_session_goes_on_in_plaintext(
    postgres_without_ssl: ChildServer, client_ctx: ssl.SSLContext
) -> None:
    with connect(
        postgres_without_ssl.address,
        secure_transport="starttls",
        tls_context=client_ctx,
        timeout=TIMEOUT,
    ) as sock:
        sock.writable.write(SSL_REQUEST)
        assert sock.readable.readexactly(1) == b"N"
        pg_session_select_1(sock)  # never calls start_tls()
        assert sock.readable.read() == b""
        assert not sock.upgraded and sock.tls is None
        assert sock.closed.result(TIMEOUT) is None


def test_postgres_with_an_untrusted_certificate_is_a_tls_error(
    postgres: ChildServer,  # noqa: F811
) -> None:
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # trusts another CA only
    with connect(
        postgres.address, secure_transport="starttls", tls_context=stranger, timeout=TIMEOUT
    ) as sock:
        sock.writable.write(SSL_REQUEST)
        assert sock.readable.readexactly(1) == b"S"
        with sock.start_tls() as tls_sock:
            error = tls_sock.opened.exception(TIMEOUT)
            assert isinstance(error, TLSError)
            assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
            with pytest.raises(TLSError):
                tls_sock.writable.write(pg_startup_message())


# SMTP -----------------------------------------------------------------------------------


def smtp_reply(sock: Socket) -> tuple[int, list[bytes]]:
    """A reply: its code and the text of each line (`250-...` continues, `250 ...` ends)."""
    lines: list[bytes] = []
    while True:
        line = sock.readable.readuntil(b"\r\n")
        assert len(line) >= 5 and line[3:4] in (b"-", b" "), f"not an SMTP reply: {line!r}"
        lines.append(line[4:-2])
        if line[3:4] == b" ":
            return int(line[:3]), lines


def smtp_command(sock: Socket, command: bytes, expected: int) -> list[bytes]:
    sock.writable.write(command + b"\r\n")
    code, lines = smtp_reply(sock)
    assert code == expected, f"{command!r} answered {code} {lines!r}"
    return lines


def offers_starttls(ehlo_lines: list[bytes]) -> bool:
    return any(line.upper() == b"STARTTLS" for line in ehlo_lines)


def test_smtp_starttls_then_a_message_over_tls(
    smtp_server: ChildServer,  # noqa: F811
    client_ctx: ssl.SSLContext,
) -> None:
    sock = connect(
        smtp_server.address, secure_transport="starttls", tls_context=client_ctx, timeout=TIMEOUT
    )
    try:
        assert smtp_reply(sock)[0] == 220
        assert offers_starttls(smtp_command(sock, b"EHLO client.example", 250))
        sock.writable.write(b"STARTTLS\r\n")
        line = sock.readable.readuntil(b"\r\n")  # exactly the go-ahead, nothing after it
        assert line.startswith(b"220 ")
        tls_sock = sock.start_tls()
        try:
            assert sock.upgraded is True and sock.closed.done()
            info = tls_sock.opened.result(TIMEOUT)
            assert info.remote_address == smtp_server.address
            assert tls_sock.tls is not None and tls_sock.tls.version in TLS_VERSIONS
            assert not offers_starttls(smtp_command(tls_sock, b"EHLO client.example", 250))
            smtp_command(tls_sock, b"MAIL FROM:<alice@example.com>", 250)
            smtp_command(tls_sock, b"RCPT TO:<bob@example.com>", 250)
            smtp_command(tls_sock, b"DATA", 354)
            tls_sock.writable.write(b"Subject: pysock\r\n\r\nsent over STARTTLS\r\n.\r\n")
            assert smtp_reply(tls_sock)[0] == 250
            smtp_command(tls_sock, b"QUIT", 221)
        finally:
            tls_sock.close()
    finally:
        sock.close()


def test_smtp_requires_starttls_before_mail(
    smtp_server: ChildServer,  # noqa: F811
    client_ctx: ssl.SSLContext,
) -> None:
    with connect(
        smtp_server.address, secure_transport="starttls", tls_context=client_ctx, timeout=TIMEOUT
    ) as sock:
        assert smtp_reply(sock)[0] == 220
        smtp_command(sock, b"EHLO client.example", 250)
        smtp_command(sock, b"MAIL FROM:<alice@example.com>", 530)
        smtp_command(sock, b"QUIT", 221)
        assert sock.readable.read() == b""
        assert sock.closed.result(TIMEOUT) is None
        with pytest.raises(StartTlsError):
            sock.start_tls()  # the connection is over
