"""Security promises under attack: no secrets in reprs, messages or logs, and no
peer bytes in an error message unescaped (the hostile peers: tests/peers/hostile.py).
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path
from typing import Any, Callable

import pytest
import trustme

from pysock import (
    BrokenSocketError,
    ConnectError,
    IncompleteReadError,
    PysockError,
    SocketClosedError,
    SocketTimeout,
    StartTlsError,
    TLSError,
    connect,
)

from .helpers import recv_all_or_reset as _recv_all_or_reset
from .helpers import reset as _reset
from .peers.hostile import GO_AHEAD, NASTY, SECRET, WAIT, assert_clean_message
from .peers.hostile import answering as _answering
from .peers.hostile import discarding as _discarding
from .peers.tcp import Server
from .peers.tls import client_context, close_cleanly, server_context
from .peers.tls import custom_leaf as _custom_leaf
from .peers.tls import quiet_tls_echo as _quiet_tls_echo

# -- no secrets in reprs or logs ---------------------------------------------------------


def _secret_texts(leaf: trustme.LeafCert, der: bytes) -> list[str]:
    """Text forms of what must never appear: data, key and certificate bodies."""
    key_lines = leaf.private_key_pem.bytes().decode().splitlines()[1:-1]
    cert_lines = leaf.cert_chain_pems[0].bytes().decode().splitlines()[1:-1]
    return [
        SECRET.decode(),
        SECRET.hex(),
        repr(SECRET)[2:-1],
        "BEGIN",
        "PRIVATE KEY",
        der[:16].hex(),
        repr(der[:16])[2:-1],
        *key_lines[:2],
        *cert_lines[:2],
    ]


def _secret_free(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} in {text!r}"


def _scenarios(
    serve: Callable[..., Server],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    unused_port: int,
) -> tuple[list[object], list[BaseException], bytes]:
    """Run a TLS session and every kind of failure with SECRET in flight.

    Returns the objects a user may print (sockets, infos, streams), the errors
    raised, and the peer certificate's DER.
    """
    objects: list[object] = []
    errors: list[BaseException] = []

    def echo_then_part(conn: socket.socket) -> None:
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(65536))
            tls.recv(65536)  # the client's "bye"
            tls.sendall(SECRET)  # less than the client waits for, then a clean end
            close_cleanly(tls)

    server = serve(echo_then_part)
    sock = connect(server.address, secure_transport="on", tls_context=client_ctx, timeout=WAIT)
    sock.writable.write(SECRET)
    assert sock.readable.readexactly(len(SECRET)) == SECRET
    assert sock.tls is not None
    der = sock.tls.peer_certificate_der
    objects += [sock, sock.opened.result(0), sock.tls, sock.readable, sock.writable]
    sock.writable.write(b"bye")
    with pytest.raises(IncompleteReadError) as incomplete:
        sock.readable.readexactly(len(SECRET) + 1)
    errors.append(incomplete.value)
    assert incomplete.value.partial == SECRET
    sock.close()
    with pytest.raises(SocketClosedError) as closed:
        sock.writable.write(SECRET)
    errors.append(closed.value)
    objects += [sock, sock.readable, sock.writable]

    def secret_then_ragged_eof(conn: socket.socket) -> None:
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(SECRET)
            tls.shutdown(socket.SHUT_RDWR)  # a FIN without close_notify

    server = serve(secret_then_ragged_eof)
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        with pytest.raises(BrokenSocketError) as broken:
            while sock.readable.read1(65536):
                pass
        errors.append(broken.value)

    stranger = client_context(trustme.CA())
    server = serve(_quiet_tls_echo(server_ctx))
    with connect(server.address, secure_transport="on", tls_context=stranger) as failed:
        with pytest.raises(TLSError) as tls_error:
            failed.writable.write(SECRET)
        errors.append(tls_error.value)

    # A STARTTLS refusal shows the unread plaintext (escaped, cut short) so that a
    # user who forgot to read the server's reply recognises it: what is sent here
    # is not one of the secrets, and the message must show it without its controls.
    def inject(conn: socket.socket) -> None:
        conn.sendall(GO_AHEAD + b"UNREAD-REPLY" + NASTY)
        _recv_all_or_reset(conn)

    server = serve(inject)
    with connect(server.address, secure_transport="starttls", tls_context=client_ctx) as plain:
        assert plain.readable.readline() == GO_AHEAD
        with pytest.raises(StartTlsError) as refused:
            plain.start_tls()
        assert "UNREAD-REPLY\\x1b" in str(refused.value)
        errors.append(refused.value)
        objects.append(plain)

    def silent(conn: socket.socket) -> None:
        _recv_all_or_reset(conn)

    server = serve(silent)
    with connect(server.address, timeout=0.05) as idle:
        idle.writable.write(SECRET)
        with pytest.raises(SocketTimeout) as timed_out:
            idle.readable.read(1)
        errors.append(timed_out.value)

    refused_sock = connect(f"127.0.0.1:{unused_port}")
    connect_error = refused_sock.opened.exception(WAIT)
    assert isinstance(connect_error, ConnectError)
    errors.append(connect_error)
    refused_sock.close()
    return objects, errors, der


def test_reprs_and_messages_hold_no_secrets(
    serve: Callable[..., Server],
    leaf: trustme.LeafCert,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    unused_port: int,
) -> None:
    objects, errors, der = _scenarios(serve, server_ctx, client_ctx, unused_port)
    secrets = _secret_texts(leaf, der)
    kinds = {type(error) for error in errors}
    assert kinds >= {
        IncompleteReadError,
        BrokenSocketError,
        SocketClosedError,
        TLSError,
        StartTlsError,
        SocketTimeout,
        ConnectError,
    }
    for item in [*objects, *errors]:
        _secret_free(repr(item) + str(item), secrets)
    for error in errors:
        assert isinstance(error, PysockError)
        _secret_free(repr(error.args), secrets)
        assert_clean_message(error)


def test_nothing_is_logged_at_default_levels_and_debug_logs_no_secrets(
    serve: Callable[..., Server],
    leaf: trustme.LeafCert,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    unused_port: int,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level(logging.WARNING):  # the default threshold of an unconfigured program
        _scenarios(serve, server_ctx, client_ctx, unused_port)
    assert [r for r in caplog.records if r.name.startswith("pysock")] == []
    caplog.clear()
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="pysock"):
        _, _, der = _scenarios(serve, server_ctx, client_ctx, unused_port)
    records = [r for r in caplog.records if r.name.startswith("pysock")]
    assert records, "pysock logs its connects and endings at DEBUG"
    secrets = _secret_texts(leaf, der)
    for record in caplog.records:
        message = record.getMessage()
        _secret_free(message, secrets)
        assert "EVIL" not in message and "\x1b" not in message, message
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# -- peer bytes never reach a message unescaped ---------------------------------------------


def _odd_subject_context(ca: trustme.CA) -> ssl.SSLContext:
    odd = NASTY.decode("latin-1").replace("\x00", "")
    leaf = ca.issue_cert("localhost", common_name=odd, organization_name=odd)
    return server_context(leaf, ssl.TLSVersion.TLSv1_3)


def _odd_san_context(ca: trustme.CA, directory: Path) -> ssl.SSLContext:
    return _custom_leaf(ca, directory, dns="evil\x1b[31m\r\n.example", common_name="EVIL\x1b[0m")


def test_error_messages_never_echo_peer_bytes(
    serve: Callable[..., Server],
    ca: trustme.CA,
    leaf: trustme.LeafCert,
    client_ctx: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    """A hostile peer puts NASTY wherever it can reach an error message."""
    tls13 = server_context(leaf, ssl.TLSVersion.TLSv1_3)
    outcomes: list[tuple[BaseException, str]] = []

    def failed_open(peer: Callable[[socket.socket], None], **options: Any) -> None:
        server = serve(peer)
        options.setdefault("tls_context", client_ctx)
        with connect(server.address, secure_transport="on", **options) as sock:
            error = sock.opened.exception(WAIT)
            assert isinstance(error, TLSError), repr(error)
            outcomes.append((error, server.address))

    # A certificate whose subject and SAN hold escapes, newlines and invalid UTF-8.
    failed_open(_quiet_tls_echo(_odd_subject_context(ca)), expected_server_hostname="other")
    failed_open(_quiet_tls_echo(_odd_san_context(ca, tmp_path)))
    failed_open(
        _quiet_tls_echo(_odd_subject_context(ca)), tls_context=client_context(trustme.CA())
    )
    # Garbage, a bogus alert and a bogus handshake record in answer to the ClientHello.
    for reply in (NASTY, b"\x15\x03\x03\x00\x02\x02\xee" + NASTY, b"\x16\x03\x03\x00\x20" + NASTY):
        failed_open(_discarding(_answering(reply)))

    # Plaintext injected into an open TLS stream.
    def plaintext_in_tls(conn: socket.socket) -> None:
        with tls13.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello")
            tls.recv(1)  # the client's cue
            socket.socket.sendall(tls, NASTY)  # the plain socket's method: no record
            _recv_all_or_reset(tls)

    server = serve(plaintext_in_tls)
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        assert sock.readable.readexactly(5) == b"hello"
        sock.writable.write(b"!")
        with pytest.raises(BrokenSocketError) as broken:
            sock.readable.read()
        outcomes.append((broken.value, server.address))

    # Plain TCP: NASTY, then a reset.
    def nasty_then_reset(conn: socket.socket) -> None:
        conn.sendall(NASTY)
        conn.recv(1)
        _reset(conn)

    server = serve(nasty_then_reset)
    with connect(server.address) as sock:
        assert sock.readable.readexactly(len(NASTY)) == NASTY  # data is data
        sock.writable.write(b"!")
        with pytest.raises(BrokenSocketError) as reset:
            sock.readable.read()
        outcomes.append((reset.value, server.address))

    # A refused STARTTLS: NASTY right after the go-ahead.
    def nasty_go_ahead(conn: socket.socket) -> None:
        conn.sendall(GO_AHEAD + NASTY)
        _recv_all_or_reset(conn)

    server = serve(nasty_go_ahead)
    with connect(server.address, secure_transport="starttls", tls_context=client_ctx) as sock:
        assert sock.readable.readline() == GO_AHEAD
        with pytest.raises(StartTlsError) as refused:
            sock.start_tls()
        outcomes.append((refused.value, server.address))

    assert len(outcomes) == 9
    for error, address in outcomes:
        assert_clean_message(error, address)
        if error.__cause__ is not None:
            assert "EVIL" not in str(error.__cause__)
