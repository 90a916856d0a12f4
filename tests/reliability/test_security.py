"""Security promises under attack: no plaintext fallback, verification on by default,
no forged name that disables it, no secrets in reprs or logs, no peer bytes in messages.

Every peer is a stdlib server on loopback that records the raw bytes the client
sends, so "no plaintext" is checked on the wire with `tls_record_types`. The
STARTTLS injection left in pysock's read buffer and in the kernel is covered by
tests/test_starttls.py (test_injection_in_the_same_packet_is_refused,
test_injection_waiting_in_the_kernel_is_refused); the third place unread
bytes can hide, the reader's stash, is covered here.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import queue
import socket
import ssl
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Final, Optional, Union

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysock import (
    BrokenSocketError,
    ConnectError,
    IncompleteReadError,
    PysockError,
    Socket,
    SocketClosedError,
    SocketTimeout,
    StartTlsError,
    TLSError,
    connect,
)

from ..helpers import finalizer_problems, same_error
from ..helpers import raised_by as _raised_by
from ..helpers import recv_all_or_reset as _recv_all_or_reset
from ..helpers import recv_line as _recv_line
from ..helpers import reset as _reset
from ..peers.tcp import Server
from ..peers.tls import (
    RecordingTlsServerSide,
    client_context,
    close_cleanly,
    server_context,
    tls_record_types,
)

WAIT: Final = 10.0
SECRET: Final = b"SECRET-PLAINTEXT-7f3a9c"
# What a hostile peer puts wherever it can: ANSI escapes, newlines, NUL, BEL,
# invalid UTF-8, a right-to-left override.
NASTY: Final = b"\x1b[2J\x1b[31mEVIL\r\nInjected: line\x00\x07\xff\xfe\xc3\x28\xe2\x80\xae!\n"
REPO: Final = Path(__file__).resolve().parents[2]
GREETING: Final = b"220 ready\r\n"
GO_AHEAD: Final = b"220 go ahead\r\n"

# -- peers ------------------------------------------------------------------------------------


def _preamble(conn: socket.socket) -> None:
    """The server's plaintext part of a STARTTLS exchange."""
    conn.sendall(GREETING)
    assert _recv_line(conn) == b"STARTTLS\r\n"
    conn.sendall(GO_AHEAD)


def _negotiate(sock: Socket) -> None:
    assert sock.readable.readline() == GREETING
    sock.writable.write(b"STARTTLS\r\n")
    assert sock.readable.readline() == GO_AHEAD


def _first_record(conn: socket.socket, raw: bytearray) -> None:
    """Receive until one whole TLS record (the ClientHello) arrived."""
    while len(raw) < 5 or len(raw) < 5 + int.from_bytes(raw[3:5], "big"):
        data = conn.recv(65536)
        if not data:
            return
        raw += data


def _answering(reply: bytes) -> Callable[[socket.socket, bytearray], None]:
    """A peer that answers the ClientHello with `reply` (not TLS), then ends."""

    def peer(conn: socket.socket, raw: bytearray) -> None:
        _first_record(conn, raw)
        try:
            conn.sendall(reply)
            # The client may already have read enough of `reply` to fail, and
            # reset the connection: a shutdown then finds it gone (ENOTCONN).
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raw += _recv_all_or_reset(conn)

    return peer


def _discarding(
    peer: Callable[[socket.socket, bytearray], None],
) -> Callable[[socket.socket], None]:
    """A `Server` handler running `peer`, its recording dropped."""
    return lambda conn: peer(conn, bytearray())


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


# -- messages -------------------------------------------------------------------------------


def assert_clean_message(error: BaseException, address: Optional[str] = None) -> None:
    """`error`'s message holds no control character and none of the peer's bytes.

    A STARTTLS refusal is the exception: it shows the unread bytes, escaped and
    cut short, so that a user who merely forgot to read the server's reply
    recognises it. The excerpt is checked for that, and the rest as any message.
    """
    text = str(error)
    if isinstance(error, StartTlsError) and "waiting unread: " in text:
        before, _, rest = text.partition("waiting unread: ")
        excerpt, _, after = rest.partition(". Either it is")
        assert excerpt.isascii() and excerpt.isprintable(), excerpt
        assert len(excerpt) <= 4 * 60 + 5, excerpt  # 60 bytes at most, each escaped
        text = before + after
    bad = [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
    assert not bad, f"control characters {bad!r} in {text!r}"
    assert "\u202e" not in text and "\ufffd" not in text, text
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), text
    assert "EVIL" not in text and "Injected" not in text, text
    assert SECRET.decode() not in text, text
    if address is not None:
        assert address in text, f"{text!r} does not name {address}"


def _check_wire(raw: Union[bytes, bytearray]) -> None:
    """Only whole TLS records, starting with the ClientHello, and no plaintext."""
    assert raw, "the client sent nothing"
    types = tls_record_types(raw)
    assert types[0] == 22, types
    assert SECRET not in raw and b"STARTTLS" not in raw


# -- 1. no plaintext fallback ---------------------------------------------------------------


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


# -- 2. STARTTLS injection: the reader's stash ------------------------------------------------


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


# -- 3. certificates and hostnames, IP literals included ---------------------------------------


def _custom_leaf(
    ca: trustme.CA, directory: Path, *, dns: Optional[str] = None, common_name: str = "x"
) -> ssl.SSLContext:
    """A server context whose certificate trustme cannot make: a DNS SAN that holds an
    IP address string, or no SAN at all. Built with cryptography (trustme's own
    backend) and signed by the trustme CA."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if dns is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    cert_path, key_path = directory / "leaf.pem", directory / "leaf.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


# (host connected to, the certificate: identities or a custom kind, handshake must succeed)
IP_CASES: Final = [
    ("127.0.0.1", ("127.0.0.1",), True),
    ("127.0.0.1", ("localhost",), False),
    ("127.0.0.1", ("localhost", "::1"), False),
    ("127.0.0.1", "dns-san:127.0.0.1", False),
    ("127.0.0.1", "cn-only:127.0.0.1", False),
    ("::1", ("::1",), True),
    ("::1", ("localhost", "127.0.0.1"), False),
    ("::1", "dns-san:::1", False),
]


_issued: dict[tuple[int, tuple[str, ...]], trustme.LeafCert] = {}


def _issued_context(ca: trustme.CA, identities: tuple[str, ...]) -> ssl.SSLContext:
    """A TLS 1.3 server context for a certificate naming `identities` (issued once)."""
    leaf = _issued.get((id(ca), identities))
    if leaf is None:
        leaf = _issued[id(ca), identities] = ca.issue_cert(*identities)
    return server_context(leaf, ssl.TLSVersion.TLSv1_3)


def _leaf_context(ca: trustme.CA, certificate: Any, directory: Path) -> ssl.SSLContext:
    if isinstance(certificate, tuple):
        return _issued_context(ca, certificate)
    kind, _, name = certificate.partition(":")
    if kind == "dns-san":
        return _custom_leaf(ca, directory, dns=name)
    return _custom_leaf(ca, directory, common_name=name)


def _quiet_tls_echo(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                while data := tls.recv(65536):
                    tls.sendall(data)
                tls.unwrap().close()
        except (OSError, ssl.SSLError):
            pass  # the client refused us, as it should

    return handler


@pytest.mark.parametrize(("host", "certificate", "succeeds"), IP_CASES)
def test_an_ip_literal_is_checked_against_ip_sans_only(
    serve: Callable[..., Server],
    ca: trustme.CA,
    client_ctx: ssl.SSLContext,
    tmp_path: Path,
    host: str,
    certificate: Any,
    succeeds: bool,
) -> None:
    server = serve(_quiet_tls_echo(_leaf_context(ca, certificate, tmp_path)), host=host)
    with connect(
        server.address, secure_transport="on", tls_context=client_ctx, connect_timeout=WAIT
    ) as sock:
        error = sock.opened.exception(WAIT)
        if succeeds:
            assert error is None, error
            sock.writable.write(b"ping")
            assert sock.readable.readexactly(4) == b"ping"
        else:
            assert isinstance(error, TLSError), repr(error)
            assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
            assert_clean_message(error, server.address)


_DEFAULTS_CHILD = """
    import json, sys
    from pysock import TLSError, connect
    outcomes = []
    for address in json.loads(sys.argv[1]):
        with connect(address, secure_transport="on", connect_timeout=10) as sock:
            error = sock.opened.exception(10)
            outcomes.append(type(error).__name__ if error else "ok")
            if error is None:
                sock.writable.write(b"ping")
                assert sock.readable.readexactly(4) == b"ping"
    print(json.dumps(outcomes))
"""


def test_the_default_context_checks_ip_literals_too(
    serve: Callable[..., Server], ca: trustme.CA, tmp_path: Path
) -> None:
    """With tls_context left out, a trusted CA (SSL_CERT_FILE) is not enough: the IP
    must be in an IP SAN. Runs in a child: pysock's default context is per process."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    servers = []
    for index, (host, certificate, _) in enumerate(IP_CASES):
        directory = tmp_path / str(index)
        directory.mkdir()
        servers.append(
            serve(_quiet_tls_echo(_leaf_context(ca, certificate, directory)), host=host)
        )
    env = {**os.environ, "SSL_CERT_FILE": str(ca_file), "SSL_CERT_DIR": str(tmp_path)}
    addresses = json.dumps([server.address for server in servers])
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_DEFAULTS_CHILD), addresses],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = ["ok" if succeeds else "TLSError" for _, _, succeeds in IP_CASES]
    assert json.loads(result.stdout) == expected


# -- 4. a forged expected_server_hostname never disables checking ------------------------------

# (certificate identities, the forged name, must the handshake succeed)
FORGED: Final = [
    (("localhost",), "other.example", False),
    (("localhost",), "127.0.0.1", False),
    (("localhost",), "::1", False),
    (("localhost",), "*", False),
    (("localhost",), "*.localhost", False),
    (("localhost",), "local*", False),
    (("localhost",), "localhost.evil.example", False),
    (("localhost",), "evil-localhost", False),
    (("localhost",), "LOCALHOST", True),  # names are case-insensitive: the control case
    (("a.example.org",), "*.example.org", False),
    (("a.example.org",), "*.*.org", False),
    (("*.example.org",), "example.org", False),
    (("*.example.org",), "a.b.example.org", False),
    (("*.example.org",), "a.example.org", True),
    (("127.0.0.1",), "127.0.0.2", False),
    (("127.0.0.1",), "::ffff:127.0.0.1", False),
    (("127.0.0.1",), "127.1", False),
    (("127.0.0.1",), "2130706433", False),
    (("127.0.0.1",), "0x7f.0.0.1", False),
    (("127.0.0.1",), "localhost", False),
]


@pytest.mark.parametrize("mode", ["on", "starttls"])
@pytest.mark.parametrize(("identities", "forged", "succeeds"), FORGED)
def test_a_forged_expected_server_hostname_never_passes(
    serve: Callable[..., Server],
    ca: trustme.CA,
    client_ctx: ssl.SSLContext,
    identities: tuple[str, ...],
    forged: str,
    succeeds: bool,
    mode: str,
) -> None:
    tls_echo = _quiet_tls_echo(_issued_context(ca, identities))

    def handler(conn: socket.socket) -> None:
        if mode == "starttls":
            _preamble(conn)
        tls_echo(conn)

    server = serve(handler)
    if mode == "on":
        sock = connect(
            server.address,
            secure_transport="on",
            tls_context=client_ctx,
            expected_server_hostname=forged,
        )
    else:
        plain = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
        _negotiate(plain)
        sock = plain.start_tls(expected_server_hostname=forged)
        plain.close()
    with sock:
        error = sock.opened.exception(WAIT)
        if succeeds:
            assert error is None, error
        else:
            assert isinstance(error, TLSError), f"{forged!r} against {identities}: {error!r}"
            assert_clean_message(error, server.address)


@pytest.mark.parametrize("mode", ["on", "starttls"])
def test_an_empty_expected_server_hostname_is_a_value_error(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext, mode: str
) -> None:
    if mode == "on":
        with pytest.raises(ValueError, match="expected_server_hostname"):
            connect("127.0.0.1:1", secure_transport="on", expected_server_hostname="")
        return

    def handler(conn: socket.socket) -> None:
        _preamble(conn)
        _recv_all_or_reset(conn)

    server = serve(handler)
    with connect(server.address, secure_transport="starttls", tls_context=client_ctx) as plain:
        _negotiate(plain)
        with pytest.raises(ValueError, match="expected_server_hostname"):
            plain.start_tls(expected_server_hostname="")
        assert not plain.upgraded
        plain.writable.write(b"still plaintext, still ours\r\n")  # nothing was taken over


@pytest.mark.parametrize("forged", ["localhost\x00.evil.example", ".localhost", "ä..example"])
def test_start_tls_with_a_name_ssl_refuses_leaves_the_socket_untouched(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext, forged: str
) -> None:
    def handler(conn: socket.socket) -> None:
        _preamble(conn)
        _recv_all_or_reset(conn)

    server = serve(handler)
    starttls = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    with finalizer_problems() as problems, starttls as plain:
        _negotiate(plain)
        raised = _raised_by(plain.start_tls, expected_server_hostname=forged)
        usable = _raised_by(plain.writable.write, b"still ours\r\n")
    assert raised is not None and issubclass(raised, ValueError), raised
    assert usable is None and not plain.upgraded, usable
    assert problems == []


@pytest.mark.parametrize("forged", ["evil\x1b[31m.example", "evil\r\nInjected: line", "a b"])
def test_expected_server_hostname_with_control_characters_is_a_value_error(
    serve: Callable[..., Server], ca: trustme.CA, client_ctx: ssl.SSLContext, forged: str
) -> None:
    server = serve(_quiet_tls_echo(_issued_context(ca, ("localhost",))))
    try:
        sock = connect(
            server.address,
            secure_transport="on",
            tls_context=client_ctx,
            expected_server_hostname=forged,
        )
    except ValueError:
        return
    with sock:
        error = sock.opened.exception(WAIT)
    assert error is not None
    assert_clean_message(error, server.address)
    raise AssertionError(f"{forged!r} was accepted (and sent as SNI)")


# -- 5. no secrets in reprs or logs ---------------------------------------------------------


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


# -- 6. peer bytes never reach a message unescaped ---------------------------------------------


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
