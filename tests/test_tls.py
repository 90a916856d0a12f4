"""TLS (docs/tls.md) against stdlib TLS peers, over TLS 1.2 and 1.3."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
from typing import Callable, Optional

import pytest
import trustme

import pysock
from pysock import (
    BrokenSocketError,
    SocketClosedError,
    SocketTimeout,
    TLSError,
    TLSInfo,
    connect,
)
from pysock._handshake import Turn

from .helpers import recv_all, same_error, wait_until
from .peers.tcp import Server
from .peers.tls import (
    RecordingTlsServerSide,
    close_cleanly,
    server_context,
    tls_echo,
    tls_record_types,
    wrap,
)

TIMEOUT = 10
MiB = 1024 * 1024
VERSION_NAMES = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}


def test_echo_over_tls(
    serve: Callable[..., Server],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    tls_version: ssl.TLSVersion,
) -> None:
    server = serve(tls_echo(server_ctx))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        assert sock.secure_transport == "on"
        info = sock.opened.result(TIMEOUT)
        assert info.remote_address == server.address and info.alpn is None
        tls = sock.tls
        assert isinstance(tls, TLSInfo)
        assert tls.version == VERSION_NAMES[tls_version]
        assert tls.cipher and tls.alpn is None
        assert tls.peer_certificate["subjectAltName"]
        assert ssl.DER_cert_to_PEM_cert(tls.peer_certificate_der).startswith("-----BEGIN")
        sock.writable.write(b"hello over tls\n")
        assert sock.readable.readline() == b"hello over tls\n"


def test_tls_info_repr_hides_the_certificate(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = serve(tls_echo(server_ctx))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        sock.opened.result(TIMEOUT)
        assert "peer_certificate" not in repr(sock.tls)


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
def test_8_mib_each_way_over_tls_with_a_reader_and_a_writer_thread(
    serve: Callable[..., Server],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    timeout: float,
) -> None:
    payload = os.urandom(8 * MiB)
    server = serve(tls_echo(server_ctx))
    digest = hashlib.sha256()
    errors: list[BaseException] = []
    with connect(
        server.address, secure_transport="on", tls_context=client_ctx, timeout=timeout
    ) as sock:

        def write() -> None:
            try:
                view = memoryview(payload)
                for start in range(0, len(payload), 300_000):
                    sock.writable.write(view[start : start + 300_000])
            except BaseException as exc:
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        total = 0
        while total < len(payload):
            chunk = sock.readable.read1(65536)
            assert chunk
            digest.update(chunk)
            total += len(chunk)
        writer.join(TIMEOUT)
    assert errors == [] and total == len(payload)
    assert digest.digest() == hashlib.sha256(payload).digest()


def test_untrusted_certificate_is_a_tls_error_and_no_plaintext_leaves(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext
) -> None:
    recorder = RecordingTlsServerSide(server_ctx)
    server = serve(recorder)
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # trusts some other CA only
    sock = connect(server.address, secure_transport="on", tls_context=stranger)
    with pytest.raises(TLSError) as info:
        sock.writable.write(b"secret before the handshake")
    error = info.value
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert server.address in str(error) and "certificate verify failed" in str(error)
    assert same_error(sock.opened.exception(0), error) and same_error(
        sock.closed.exception(0), error
    )
    with pytest.raises(TLSError):
        sock.readable.read(1)
    sock.close()
    server.stop()
    assert b"secret" not in recorder.raw
    assert tls_record_types(recorder.raw)[0] == 22  # the ClientHello, then TLS records only


def test_the_default_context_verifies(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext
) -> None:
    server = serve(RecordingTlsServerSide(server_ctx))
    with connect(server.address, secure_transport="on") as sock:
        assert isinstance(sock.opened.exception(TIMEOUT), TLSError)


@pytest.mark.parametrize("how", ["reset", "eof"])
def test_a_handshake_cut_by_the_peer_is_a_tls_error_with_an_ssl_cause(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext, how: str
) -> None:
    def cut(conn: socket.socket) -> None:
        conn.recv(4096)  # The ClientHello; then no answer but a reset or a FIN.
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    server = serve(cut)
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        error = sock.opened.exception(TIMEOUT)
    assert isinstance(error, TLSError)
    assert isinstance(error.__cause__, ssl.SSLError)  # TLSError's cause: what failed.


def test_a_client_certificate_refused_after_the_handshake_is_a_tls_error(
    serve: Callable[..., Server],
    leaf: trustme.LeafCert,
    ca: trustme.CA,
    client_ctx: ssl.SSLContext,
) -> None:
    # Over TLS 1.3 the server checks the client's certificate after the client has
    # finished: opened succeeds, and the refusal (an alert) is the first record.
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)

    def refuse(conn: socket.socket) -> None:
        try:
            wrap(conn, context)
        except ssl.SSLError:
            pass  # No certificate came: the handshake fails on this side.

    server = serve(refuse)
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        error = sock.opened.exception(TIMEOUT)
        if error is None:  # Usually: the alert is read after the open.
            with pytest.raises(TLSError, match="CERTIFICATE_REQUIRED") as info:
                sock.readable.read()
            error = info.value
        # Or the server's reset came before our handshake had finished: opened fails.
        assert isinstance(error, TLSError), error
        assert isinstance(error.__cause__, ssl.SSLError)
        assert same_error(sock.closed.exception(TIMEOUT), error)


def test_wrong_hostname_is_a_tls_error(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    recorder = RecordingTlsServerSide(server_ctx)
    server = serve(recorder)
    sock = connect(
        server.address,
        secure_transport="on",
        tls_context=client_ctx,
        expected_server_hostname="wrong.example",
    )
    with pytest.raises(TLSError) as info:
        sock.writable.write(b"secret before the handshake")
    error = info.value
    assert same_error(sock.opened.exception(0), error)
    assert "wrong.example" in str(error.__cause__)
    sock.close()
    server.stop()
    assert b"secret" not in recorder.raw
    assert tls_record_types(recorder.raw)[0] == 22  # the ClientHello, then TLS records only


def test_expected_server_hostname_overrides_the_address(
    serve: Callable[..., Server],
    ca: trustme.CA,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    tls_version: ssl.TLSVersion,
) -> None:
    # A certificate for "db.internal" only, reached at 127.0.0.1.
    named = server_context(ca.issue_cert("db.internal"), tls_version)
    server = serve(tls_echo(named))
    with connect(
        server.address,
        secure_transport="on",
        tls_context=client_ctx,
        expected_server_hostname="db.internal",
    ) as sock:
        assert sock.opened.result(TIMEOUT).remote_address == server.address
    server2 = serve(RecordingTlsServerSide(named))
    with connect(server2.address, secure_transport="on", tls_context=client_ctx) as sock:
        assert isinstance(sock.opened.exception(TIMEOUT), TLSError)


def test_alpn_is_negotiated(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server = serve(tls_echo(server_ctx))
    client_ctx.set_alpn_protocols(["http/1.1"])
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        assert sock.opened.result(TIMEOUT).alpn == "http/1.1"
        assert sock.tls is not None and sock.tls.alpn == "http/1.1"


def test_alpn_protocols_option_configures_the_default_context(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext
) -> None:
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server = serve(RecordingTlsServerSide(server_ctx))
    # The default context trusts the system CAs only, so verification fails after
    # ALPN was offered; the ClientHello shows the offer.
    with connect(server.address, secure_transport="on", alpn_protocols=["h2"]) as sock:
        assert isinstance(sock.opened.exception(TIMEOUT), TLSError)
    server.stop()


IGNORE_UNEXPECTED_EOF = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0x80)


@pytest.fixture(params=[False, True], ids=["plain-context", "ignore-unexpected-eof"])
def eof_ctx(request: pytest.FixtureRequest, client_ctx: ssl.SSLContext) -> ssl.SSLContext:
    """The client context, and the same with OP_IGNORE_UNEXPECTED_EOF (Python 3.9's
    default): pysock tells a truncation from a close_notify either way."""
    if request.param:
        if ssl.OPENSSL_VERSION_INFO < (3,):
            pytest.skip("OP_IGNORE_UNEXPECTED_EOF exists from OpenSSL 3 on")
        client_ctx.options |= IGNORE_UNEXPECTED_EOF
    else:
        client_ctx.options &= ~IGNORE_UNEXPECTED_EOF
    return client_ctx


def test_ragged_eof_is_a_broken_socket(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, eof_ctx: ssl.SSLContext
) -> None:
    def ragged(conn: socket.socket) -> None:
        tls = wrap(conn, server_ctx)
        tls.sendall(b"truncated?")
        tls.shutdown(socket.SHUT_RDWR)  # TCP FIN, no close_notify
        tls.close()

    server = serve(ragged)
    with connect(server.address, secure_transport="on", tls_context=eof_ctx) as sock:
        error = sock.closed.exception(TIMEOUT)  # noticed on the idle socket
        assert isinstance(error, BrokenSocketError) and "close_notify" in str(error)
        with pytest.raises(BrokenSocketError):
            sock.readable.read()


def test_ragged_eof_while_reading(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, eof_ctx: ssl.SSLContext
) -> None:
    go = threading.Event()

    def ragged(conn: socket.socket) -> None:
        tls = wrap(conn, server_ctx)
        go.wait(TIMEOUT)
        tls.shutdown(socket.SHUT_RDWR)
        tls.close()

    server = serve(ragged)
    with connect(server.address, secure_transport="on", tls_context=eof_ctx) as sock:
        sock.opened.result(TIMEOUT)
        threading.Timer(0.1, go.set).start()
        with pytest.raises(BrokenSocketError, match="close_notify"):
            sock.readable.read()


def test_clean_close_notify_is_eof(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, eof_ctx: ssl.SSLContext
) -> None:
    def goodbye(conn: socket.socket) -> None:
        tls = wrap(conn, server_ctx)
        tls.sendall(b"goodbye")
        close_cleanly(tls)

    server = serve(goodbye)
    with connect(server.address, secure_transport="on", tls_context=eof_ctx) as sock:
        assert sock.closed.result(TIMEOUT) is None  # idle: the loop decrypted the end
        assert sock.readable.read() == b"goodbye"
        assert sock.readable.read() == b""


def test_tls13_half_close(
    serve: Callable[..., Server], leaf: trustme.LeafCert, client_ctx: ssl.SSLContext
) -> None:
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)

    def answer_after_close_notify(conn: socket.socket) -> None:
        tls = wrap(conn, context)
        request = b""
        while data := tls.recv(65536):
            request += data
        tls.sendall(b"answer to " + request)
        close_cleanly(tls)

    server = serve(answer_after_close_notify)
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        sock.writable.write(b"question")
        sock.writable.close()
        assert sock.readable.read() == b"answer to question"
        assert sock.closed.result(TIMEOUT) is None


def test_tls13_half_close_keeps_the_records_already_received(
    serve: Callable[..., Server], leaf: trustme.LeafCert, client_ctx: ssl.SSLContext
) -> None:
    # OpenSSL's SSL_shutdown reads, and drops, records that arrived before it sends
    # close_notify; over TLS 1.3 they are the peer's data and must stay readable.
    context = server_context(leaf, ssl.TLSVersion.TLSv1_3)
    payload = os.urandom(MiB)

    def stream_then_finish(conn: socket.socket) -> None:
        tls = wrap(conn, context)
        tls.recv(10)
        tls.sendall(payload)
        while tls.recv(65536):  # until the client's close_notify
            pass
        close_cleanly(tls)

    server = serve(stream_then_finish)
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        sock.writable.write(b"go")
        first = sock.readable.read1(1)  # more records wait, received but not decrypted
        sock.writable.close()
        rest = sock.readable.read()
        assert hashlib.sha256(first + rest).digest() == hashlib.sha256(payload).digest()
        assert sock.closed.result(TIMEOUT) is None


def test_tls12_half_close_before_open_waits_for_the_version(
    serve: Callable[..., Server], leaf: trustme.LeafCert, client_ctx: ssl.SSLContext
) -> None:
    server = serve(tls_echo(server_context(leaf, ssl.TLSVersion.TLSv1_2)))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        with pytest.raises(pysock.PysockError, match=r"TLS 1\.3"):
            sock.writable.close()  # before open: waits for the handshake, as a write would
        assert sock.opened.done()
        sock.writable.write(b"still open")
        assert sock.readable.readexactly(10) == b"still open"


def test_close_is_clean_when_the_peer_does_not_answer_close_notify(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    def hang_up_after_close_notify(conn: socket.socket) -> None:
        tls = wrap(conn, server_ctx)
        tls.sendall(tls.recv(100))
        try:
            while tls.recv(100):  # until the client's close_notify
                pass
        except OSError:
            pass
        tls.close()  # TCP FIN (or a reset), no close_notify back

    server = serve(hang_up_after_close_notify)
    for _ in range(20):  # a race once lost about one round in three
        sock = connect(server.address, secure_transport="on", tls_context=client_ctx)
        sock.writable.write(b"hi")
        assert sock.readable.read1(100) == b"hi"
        sock.close()
        assert sock.closed.result(TIMEOUT) is None


def test_close_notify_then_close_from_the_peer_is_a_clean_end(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    def terminate(conn: socket.socket) -> None:  # as PostgreSQL answers Terminate
        tls = wrap(conn, server_ctx)
        tls.recv(5)
        close_cleanly(tls)  # our close_notify in answer may meet a reset

    server = serve(terminate)
    for _ in range(20):  # a race once lost about one round in four
        with connect(
            server.address, secure_transport="on", tls_context=client_ctx, timeout=TIMEOUT
        ) as sock:
            sock.writable.write(b"X\0\0\0\4")
            assert sock.readable.read() == b""
            assert sock.closed.result(TIMEOUT) is None


def test_tls12_half_close_is_a_clear_error(
    serve: Callable[..., Server], leaf: trustme.LeafCert, client_ctx: ssl.SSLContext
) -> None:
    server = serve(tls_echo(server_context(leaf, ssl.TLSVersion.TLSv1_2)))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        sock.opened.result(TIMEOUT)
        with pytest.raises(pysock.PysockError, match=r"TLS 1\.3"):
            sock.writable.close()
        sock.writable.write(b"still open")
        assert sock.readable.readexactly(10) == b"still open"


def test_a_stalled_handshake_never_stalls_another_socket(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    silent = serve(lambda conn: recv_all(conn))  # Takes the ClientHello, never answers.
    echo = serve(tls_echo(server_ctx))
    stalled = [connect(silent.address, secure_transport="on", tls_context=client_ctx)]
    stalled += [connect(silent.address, secure_transport="on", tls_context=client_ctx)]
    try:
        with connect(echo.address, secure_transport="on", tls_context=client_ctx) as sock:
            sock.writable.write(b"through\n")
            assert sock.readable.readline() == b"through\n"  # Not held up by the others.
        assert not any(sock.opened.done() for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


def test_close_during_the_handshake(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext
) -> None:
    server = serve(lambda conn: recv_all(conn))  # never answers the ClientHello
    sock = connect(server.address, secure_transport="on", tls_context=client_ctx)
    time.sleep(0.1)
    assert not sock.opened.done()
    started = time.monotonic()
    sock.close()
    assert isinstance(sock.opened.exception(TIMEOUT), SocketClosedError)
    assert time.monotonic() - started < 1


def test_a_server_that_never_answers_the_client_hello(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext
) -> None:
    server = serve(lambda conn: recv_all(conn))
    sock = connect(
        server.address, secure_transport="on", tls_context=client_ctx, connect_timeout=0.3
    )
    error = sock.opened.exception(TIMEOUT)
    assert isinstance(error, SocketTimeout)
    sock.close()


def test_the_users_context_is_not_modified(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    before = (client_ctx.options, client_ctx.verify_mode, client_ctx.check_hostname)
    before_versions = (client_ctx.minimum_version, client_ctx.maximum_version)
    server = serve(tls_echo(server_ctx))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        sock.opened.result(TIMEOUT)
    assert (client_ctx.options, client_ctx.verify_mode, client_ctx.check_hostname) == before
    assert (client_ctx.minimum_version, client_ctx.maximum_version) == before_versions


def test_default_context_is_secure() -> None:
    from pysock._tls import OP_IGNORE_UNEXPECTED_EOF, default_context

    context = default_context()
    assert context is default_context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert not context.options & OP_IGNORE_UNEXPECTED_EOF
    assert default_context(["h2"]) is not context


def test_a_plaintext_answer_says_the_port_does_not_speak_tls(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext
) -> None:
    """An SMTP server on 587 answers a ClientHello with its plaintext greeting."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"220 mail.example.com ESMTP ready\r\n")
        recv_all(conn)

    server = serve(handler)
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        error = sock.opened.exception(TIMEOUT)
        assert isinstance(error, TLSError)
        assert "does not seem to speak TLS" in str(error)
        assert "secure_transport='starttls'" in str(error)
        assert isinstance(error.__cause__, ssl.SSLError)


# -- the handshake stepped by the caller who waits for it -------------------------------


def held_tls_echo(context: ssl.SSLContext, go: threading.Event) -> Callable[[socket.socket], None]:
    """A TLS echo that answers the ClientHello only once `go` is set."""

    def handler(conn: socket.socket) -> None:
        go.wait(TIMEOUT)
        tls = wrap(conn, context)
        while data := tls.recv(65536):
            tls.sendall(data)
        close_cleanly(tls)

    return handler


def turn_of(sock: pysock.Socket) -> Optional[Turn]:
    handshake = sock._connection._handshake  # type: ignore[attr-defined]
    return None if handshake is None else handshake.turn


def wait_for_the_loops_turn(sock: pysock.Socket) -> None:
    """The ClientHello is out and the selector thread has the handshake (nobody waits)."""
    wait_until(lambda: turn_of(sock) in (Turn.HANDED, Turn.WATCHED), "the loop's turn")


def test_a_caller_waiting_for_the_open_steps_the_handshake_itself(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    go = threading.Event()
    server = serve(held_tls_echo(server_ctx, go))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        wait_for_the_loops_turn(sock)
        results: list[pysock.SocketInfo] = []
        waiters = [
            threading.Thread(target=lambda: results.append(sock.opened.result(TIMEOUT)))
            for _ in range(2)  # One steps it; the other waits for the future.
        ]
        for waiter in waiters:
            waiter.start()
        wait_until(lambda: turn_of(sock) is Turn.CALLER, "a waiting caller's turn")
        go.set()
        for waiter in waiters:
            waiter.join(TIMEOUT)
        assert len(results) == 2 and results[0] is results[1]
        assert results[0].remote_address == server.address
        sock.writable.write(b"after a caller's handshake\n")
        assert sock.readable.readline() == b"after a caller's handshake\n"


def test_a_handshake_nobody_waits_for_is_run_by_the_loop(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    go = threading.Event()
    server = serve(held_tls_echo(server_ctx, go))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        threads: list[str] = []
        sock.opened.add_done_callback(lambda _: threads.append(threading.current_thread().name))
        go.set()
        done, _ = concurrent.futures.wait([sock.opened], TIMEOUT)  # Waits, never steps.
        assert done and sock.opened.exception(0) is None
        assert threads == ["pysock-selector"]


def test_a_caller_that_stops_waiting_hands_the_handshake_back_to_the_loop(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    go = threading.Event()
    server = serve(held_tls_echo(server_ctx, go))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        wait_for_the_loops_turn(sock)
        with pytest.raises(concurrent.futures.TimeoutError):
            sock.opened.result(0.2)
        assert turn_of(sock) in (Turn.HANDED, Turn.WATCHED)
        go.set()
        done, _ = concurrent.futures.wait([sock.opened], TIMEOUT)  # Waits, never steps.
        assert done and sock.opened.result(0).remote_address == server.address


def test_close_abandons_a_handshake_a_caller_steps(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext
) -> None:
    server = serve(lambda conn: recv_all(conn))  # never answers the ClientHello
    sock = connect(server.address, secure_transport="on", tls_context=client_ctx)
    wait_for_the_loops_turn(sock)
    errors: list[Optional[BaseException]] = []
    waiter = threading.Thread(target=lambda: errors.append(sock.opened.exception(TIMEOUT)))
    waiter.start()
    wait_until(lambda: turn_of(sock) is Turn.CALLER, "the waiting caller's turn")
    sock.close()  # Wakes its poll(); it closes the descriptor on its way out.
    waiter.join(TIMEOUT)
    assert not waiter.is_alive()
    assert isinstance(errors[0], SocketClosedError)


def test_the_connect_deadline_bounds_a_handshake_a_caller_steps(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext
) -> None:
    server = serve(lambda conn: recv_all(conn))
    options = {"secure_transport": "on", "tls_context": client_ctx, "connect_timeout": 0.3}
    with connect(server.address, **options) as sock:  # type: ignore[arg-type]
        with pytest.raises(SocketTimeout, match=r"timed out after 0\.3s"):
            sock.opened.result(TIMEOUT)
        assert sock.closed.done()


def test_ctrl_c_in_a_caller_stepping_the_handshake_hands_it_to_the_loop(
    serve: Callable[..., Server],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    alarm: Callable[[float], None],
) -> None:
    go = threading.Event()
    server = serve(held_tls_echo(server_ctx, go))
    with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
        wait_for_the_loops_turn(sock)
        alarm(0.2)
        with pytest.raises(KeyboardInterrupt):
            sock.opened.result(TIMEOUT)  # Interrupted in its poll(), between two steps.
        assert sock.opened.done() is False
        assert turn_of(sock) in (Turn.HANDED, Turn.WATCHED)
        go.set()
        done, _ = concurrent.futures.wait([sock.opened], TIMEOUT)
        assert done and sock.opened.exception(0) is None


# -- close_notify and the handshake's alert ---------------------------------------------


def running(thread: threading.Thread, function: str) -> bool:
    """Whether `thread` is inside `function` now (blocked there, say)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def farewell_judge(context: ssl.SSLContext, ends: list[str]) -> Callable[[socket.socket], None]:
    """Echo one message, then record how the client's stream ended."""

    def handler(conn: socket.socket) -> None:
        tls = context.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
        tls.sendall(tls.recv(100))
        try:
            while tls.recv(100):
                pass
            ends.append("close_notify")
        except (ssl.SSLError, OSError) as exc:
            ends.append(repr(exc))
        tls.close()

    return handler


def test_close_sends_close_notify_while_a_reader_flushes(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """close() waits for a reader's non-blocking flush (it holds the send lock briefly)."""
    ends: list[str] = []
    server = serve(farewell_judge(server_ctx, ends))
    sock = connect(server.address, secure_transport="on", tls_context=client_ctx)
    sock.writable.write(b"hi")
    assert sock.readable.read1(100) == b"hi"
    wire = sock._connection._wire  # type: ignore[attr-defined]
    holding, release = threading.Event(), threading.Event()

    def reader_flushing() -> None:  # What a reader's _flush_nowait holds.
        with wire.nowait_lock, wire.send_lock:
            holding.set()
            release.wait(TIMEOUT)

    reader = threading.Thread(target=reader_flushing)
    reader.start()
    assert holding.wait(TIMEOUT)
    closer = threading.Thread(target=sock.close)
    closer.start()
    wait_until(
        lambda: not closer.is_alive() or running(closer, "flush_nowait"), "close() at the lock"
    )
    release.set()
    reader.join(TIMEOUT)
    closer.join(TIMEOUT)
    wait_until(lambda: ends, "the server's judgement")
    assert ends == ["close_notify"]


def test_close_wakes_a_half_close_blocked_sending_close_notify(
    serve: Callable[..., Server], leaf: trustme.LeafCert, client_ctx: ssl.SSLContext
) -> None:
    """writable.close() holds the descriptor while it sends: close() wakes it, never frees it."""
    release = threading.Event()

    def never_reads(conn: socket.socket) -> None:
        with wrap(conn, server_context(leaf, ssl.TLSVersion.TLSv1_3)):
            release.wait(3 * TIMEOUT)  # Longer than the test waits for the half-closer.

    server = serve(never_reads)
    sock = connect(server.address, secure_transport="on", tls_context=client_ctx)
    sock.opened.result(TIMEOUT)
    connection = sock._connection
    raw = connection.sock
    assert raw is not None
    # Records produced before close_notify (by a writer, say) go out first: more
    # than our buffer and the peer's take.
    connection._records.encrypt(bytes(16 * MiB))  # type: ignore[attr-defined]
    half_closer = threading.Thread(target=sock.writable.close)
    half_closer.start()
    wait_until(
        lambda: running(half_closer, "send_queued") and not select.select([], [raw], [], 0)[1],
        "writable.close() blocked sending",
    )
    sock.close()
    try:
        half_closer.join(TIMEOUT)
        assert not half_closer.is_alive(), "still blocked on a descriptor close() took away"
    finally:
        release.set()  # The peer leaves: a blocked send would end now.
    assert sock.closed.done()


def test_our_refusal_of_the_certificate_reaches_the_server_as_an_alert(
    serve: Callable[..., Server], server_ctx: ssl.SSLContext
) -> None:
    recorder = RecordingTlsServerSide(server_ctx)
    server = serve(recorder)
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # trusts some other CA only
    with connect(server.address, secure_transport="on", tls_context=stranger) as sock:
        assert isinstance(sock.opened.exception(TIMEOUT), TLSError)
    server.stop()
    error = recorder.handshake_error
    assert isinstance(error, ssl.SSLError) and "ALERT" in str(error.reason), repr(error)
