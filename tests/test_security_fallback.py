"""Security promises under attack: no plaintext fallback after any TLS failure.

Every peer is a stdlib server on loopback that records the raw bytes the client
sends, so "no plaintext" is checked on the wire with `tls_record_types`. The
STARTTLS injection left in pysock's read buffer and in the kernel is covered by
tests/test_starttls.py (test_injection_in_the_same_packet_is_refused,
test_injection_waiting_in_the_kernel_is_refused); the third place unread
bytes can hide, the reader's stash, is covered here. The hostile peers:
tests/peers/hostile.py.
"""

from __future__ import annotations

import queue
import socket
import ssl
import warnings
from collections.abc import Iterator
from typing import Any, Callable, Final, Optional, Union

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysock import Socket, SocketClosedError, StartTlsError, TLSError, connect

from .helpers import recv_all_or_reset as _recv_all_or_reset
from .helpers import reset as _reset
from .helpers import same_error
from .peers.hostile import NASTY, SECRET, WAIT, assert_clean_message
from .peers.hostile import answering as _answering
from .peers.hostile import first_record as _first_record
from .peers.hostile import negotiate as _negotiate
from .peers.hostile import preamble as _preamble
from .peers.tcp import Server
from .peers.tls import RecordingTlsServerSide, client_context, server_context, tls_record_types

# -- peers ------------------------------------------------------------------------------------


def _resetting(conn: socket.socket, raw: bytearray) -> None:
    _first_record(conn, raw)
    _reset(conn)


def _tls10_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 is, deliberately
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


class Failure:
    """One way a TLS handshake fails: the peer and the client's options."""

    def __init__(
        self,
        name: str,
        peer: Callable[[socket.socket, bytearray], None],
        options: dict[str, Any],
    ) -> None:
        self.name = name
        self.peer = peer
        self.options = options


def _recording(context: ssl.SSLContext) -> Callable[[socket.socket, bytearray], None]:
    def peer(conn: socket.socket, raw: bytearray) -> None:
        recorder = RecordingTlsServerSide(context)
        try:
            recorder(conn)
        except OSError:
            pass
        raw += recorder.raw

    return peer


def _failures(ca: trustme.CA, leaf: trustme.LeafCert, version: ssl.TLSVersion) -> list[Failure]:
    trusted = client_context(ca)
    stranger = client_context(trustme.CA())
    up_to_12 = client_context(ca)
    up_to_12.maximum_version = ssl.TLSVersion.TLSv1_2
    only_13 = server_context(leaf, ssl.TLSVersion.TLSv1_3)
    alert = b"\x15\x03\x03\x00\x02\x02\xee"  # fatal, description 238: no such alert
    bogus_handshake = b"\x16\x03\x03" + len(NASTY).to_bytes(2, "big") + NASTY
    return [
        Failure("untrusted", _recording(server_context(leaf, version)), {"tls_context": stranger}),
        Failure(
            "wrong-hostname",
            _recording(server_context(leaf, version)),
            {"tls_context": trusted, "expected_server_hostname": "wrong.example"},
        ),
        Failure("tls1.0-only", _recording(_tls10_context(leaf)), {"tls_context": trusted}),
        Failure("no-common-version", _recording(only_13), {"tls_context": up_to_12}),
        Failure("garbage", _answering(NASTY * 3), {"tls_context": trusted}),
        Failure("bogus-alert", _answering(alert + NASTY), {"tls_context": trusted}),
        Failure("bogus-handshake", _answering(bogus_handshake), {"tls_context": trusted}),
        Failure("handshake-reset", _resetting, {"tls_context": trusted}),
    ]


TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
# The server's version matters for the verification failures only.
FAILURE_CASES: Final = [
    pytest.param(name, version, id=f"{name}-{version.name}")
    for name, versions in [
        ("untrusted", (TLS12, TLS13)),
        ("wrong-hostname", (TLS12, TLS13)),
        ("tls1.0-only", (TLS13,)),
        ("no-common-version", (TLS13,)),
        ("garbage", (TLS13,)),
        ("bogus-alert", (TLS13,)),
        ("bogus-handshake", (TLS13,)),
        ("handshake-reset", (TLS13,)),
    ]
    for version in versions
]


def _failure(
    ca: trustme.CA, leaf: trustme.LeafCert, name: str, version: ssl.TLSVersion
) -> Failure:
    return next(f for f in _failures(ca, leaf, version) if f.name == name)


def _server(
    serve: Callable[..., Server], peer: Callable[[socket.socket, bytearray], None], starttls: bool
) -> tuple[Server, bytearray]:
    """A server running `peer` (after a STARTTLS preamble if asked); returns what it recorded."""
    raw = bytearray()

    def handler(conn: socket.socket) -> None:
        if starttls:
            _preamble(conn)
        peer(conn, raw)

    return serve(handler), raw


# -- the wire -------------------------------------------------------------------------------


def _check_wire(raw: Union[bytes, bytearray]) -> None:
    """Only whole TLS records, starting with the ClientHello, and no plaintext."""
    assert raw, "the client sent nothing"
    types = tls_record_types(raw)
    assert types[0] == 22, types
    assert SECRET not in raw and b"STARTTLS" not in raw


# -- no plaintext fallback ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["on", "starttls"])
@pytest.mark.parametrize(("name", "version"), FAILURE_CASES)
def test_no_plaintext_reaches_the_wire_after_a_tls_failure(
    serve: Callable[..., Server],
    ca: trustme.CA,
    leaf: trustme.LeafCert,
    name: str,
    version: ssl.TLSVersion,
    mode: str,
) -> None:
    failure = _failure(ca, leaf, name, version)
    server, raw = _server(serve, failure.peer, starttls=mode == "starttls")
    sock = connect(server.address, secure_transport=mode, connect_timeout=WAIT, **failure.options)  # type: ignore[arg-type]
    old: Optional[Socket] = None
    if mode == "starttls":
        _negotiate(sock)
        old, sock = sock, sock.start_tls()
    with pytest.raises(TLSError) as info:
        sock.writable.write(SECRET)  # waits for the handshake, which fails
    error = info.value
    assert same_error(sock.opened.exception(0), error) and same_error(
        sock.closed.exception(0), error
    )
    assert isinstance(error.__cause__, (ssl.SSLError, OSError))
    assert_clean_message(error, server.address)
    with pytest.raises(TLSError):
        sock.writable.write(SECRET)  # still no fallback, the second time
    with pytest.raises(TLSError):
        sock.readable.read(1)
    if old is not None:
        with pytest.raises(SocketClosedError):
            old.writable.write(SECRET)  # the plaintext socket is gone too
        old.close()
    sock.close()
    server.stop()
    _check_wire(raw)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    reply=st.one_of(
        st.binary(max_size=300), st.binary(max_size=8).map(lambda b: b"\x16\x03\x03" + b)
    )
)
def test_any_answer_to_the_client_hello_is_a_clean_tls_error(
    garbage_server: tuple[Server, queue.Queue[bytes], queue.Queue[bytes]],
    client_ctx: ssl.SSLContext,
    reply: bytes,
) -> None:
    server, replies, recorded = garbage_server
    replies.put(reply)
    sock = connect(
        server.address, secure_transport="on", tls_context=client_ctx, connect_timeout=WAIT
    )
    with sock:
        with pytest.raises(TLSError) as info:
            sock.writable.write(SECRET)
        assert_clean_message(info.value, server.address)
    _check_wire(recorded.get(timeout=WAIT))


@pytest.fixture(scope="module")
def garbage_server() -> Iterator[tuple[Server, queue.Queue[bytes], queue.Queue[bytes]]]:
    """Answers each ClientHello with the next reply from a queue; reports what it received."""
    replies: queue.Queue[bytes] = queue.Queue()
    recorded: queue.Queue[bytes] = queue.Queue()

    def handler(conn: socket.socket) -> None:
        raw = bytearray()
        try:
            _answering(replies.get(timeout=WAIT))(conn, raw)
        finally:
            recorded.put(bytes(raw))

    with Server(handler) as server:
        yield server, replies, recorded


# -- STARTTLS injection: the reader's stash ------------------------------------------------


def test_injection_kept_in_the_readers_stash_is_refused(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext
) -> None:
    """Bytes a readuntil() limit error put back are unread plaintext too."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"GO " + SECRET + b" and more than the client's limit\r\n")
        assert _recv_all_or_reset(conn) == b""  # never a ClientHello

    server = serve(handler)
    sock = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    with pytest.raises(ValueError):
        sock.readable.readuntil(b"\r\n", 8)  # over the limit: the line stays unread
    with pytest.raises(StartTlsError, match="CVE-2011-0411") as info:
        sock.start_tls()
    assert_clean_message(info.value, server.address)
    assert sock.closed.done() and not sock.upgraded
    sock.close()
    server.stop()
