"""Property-based tests of bad input: connect() arguments, read sizes, write arguments.

Every input gives either a working socket or the documented TypeError/ValueError
at the call, before any I/O (a bad argument must never become a half-open
connection or an error raised later in another thread); every read agrees
with a model of the bytes the peer sent (no byte dropped, repeated or
reordered); every write either delivers its bytes intact or is a TypeError.
The peers are module-scoped stdlib servers (a function-scoped fixture would
not reset between hypothesis examples), each example closes its socket, and
`no_leaks` checks the whole test. The examples drawn depend on the hypothesis
profile (tests/conftest.py): random locally, the same every run under CI.

The tests at the end pin down the pysock bugs these properties found, each
with its minimal example, as regression tests (each was an xfail until
pysock was fixed).
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Final, Optional

import pytest
import trustme
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from pysock import (
    BrokenSocketError,
    ConnectError,
    IncompleteReadError,
    PysockError,
    Socket,
    SocketTimeout,
    TLSError,
    connect,
)

from ..helpers import drain as _drain
from ..helpers import finalizer_problems
from ..helpers import raised_by as _raised_by
from ..helpers import recv_all as _recv_all
from ..helpers import recv_exactly as _recv_exactly
from ..peers.tcp import Server
from ..peers.tls import RecordingTlsServerSide, client_context, server_context, tls_record_types
from . import _strategies as model

WAIT: Final = 10.0  # the bound of every wait for a peer or a future
# derandomize, database and print_blob come from the profile (tests/conftest.py).
SETTINGS: Final = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # no_leaks checks the test as a whole
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
REPO: Final = Path(__file__).resolve().parents[2]

# -- peers --------------------------------------------------------------------------------


def _quiet(handler: Callable[[socket.socket], None]) -> Callable[[socket.socket], None]:
    """A client may fail, time out or reset at any point: the peer just ends."""

    def run(conn: socket.socket) -> None:
        try:
            handler(conn)
        except (OSError, ssl.SSLError):
            pass

    return run


def _echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def _tls_echo(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            while data := tls.recv(65536):
                tls.sendall(data)
            tls.unwrap().close()

    return handler


def _send_back(conn: socket.socket) -> None:
    """Receive a length-prefixed payload, send it back, then EOF; wait for the client's end."""
    (size,) = struct.unpack("!I", _recv_exactly(conn, 4))
    conn.sendall(_recv_exactly(conn, size))
    conn.shutdown(socket.SHUT_WR)
    _drain(conn)


def _tls_send_back(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            (size,) = struct.unpack("!I", _recv_exactly(tls, 4))
            tls.sendall(_recv_exactly(tls, size))
            with tls.unwrap() as raw:  # close_notify, then the client's
                _drain(raw)

    return handler


class Peers:
    """The module's servers: echo and send-back, plain and TLS 1.3, on 127.0.0.1 and ::1."""

    def __init__(self, ca: trustme.CA, leaf: trustme.LeafCert) -> None:
        self.trusted = client_context(ca)
        self.untrusted = client_context(trustme.CA())
        tls = server_context(leaf, ssl.TLSVersion.TLSv1_3)
        self.servers: dict[tuple[str, bool], Server] = {}
        for host in ("127.0.0.1", "::1"):
            self.servers[host, False] = Server(_quiet(_echo), host)
            self.servers[host, True] = Server(_quiet(_tls_echo(tls)), host)
        self.send_back = Server(_quiet(_send_back))
        self.tls_send_back = Server(_quiet(_tls_send_back(tls)))

    @property
    def contexts(self) -> list[ssl.SSLContext]:
        return [self.trusted, self.untrusted]

    def port_for(self, transport: str) -> Callable[[str], int]:
        def port_of(host: str) -> int:
            family = "::1" if host == "::1" else "127.0.0.1"
            return self.servers[family, transport == "on"].port

        return port_of

    def stop(self) -> None:
        for server in [*self.servers.values(), self.send_back, self.tls_send_back]:
            server.stop()


@pytest.fixture(scope="module")
def peers(ca: trustme.CA, leaf: trustme.LeafCert) -> Iterator[Peers]:
    if not socket.has_ipv6:
        pytest.skip("IPv6 loopback ::1 is not available on this machine")
    peers = Peers(ca, leaf)
    yield peers
    peers.stop()


# -- connect() arguments ---------------------------------------------------------------------


def _call(address: Any, options: Any, kwargs: dict[str, Any]) -> Socket:
    if options is model.OMITTED:
        return connect(address, **kwargs)
    return connect(address, options, **kwargs)


def _short(merged: dict[str, Any], key: str) -> bool:
    value = merged.get(key)
    if key == "connect_timeout" and "connect_timeout" not in merged:
        value = merged.get("timeout")
    return value is not None and value < model.SHORT_TIMEOUT


def _check_working(sock: Socket, verdict: model.Verdict, tls: str) -> None:
    """The socket opens (or fails as the model allows) and echoes; then it is closed."""
    merged, host = verdict.merged, verdict.host
    assert verdict.port is not None and isinstance(host, str)
    may_time_out = _short(merged, "connect_timeout")
    error = sock.opened.exception(WAIT)
    if error is not None and isinstance(error, SocketTimeout):
        assert may_time_out, error
    elif tls == "fail":
        assert isinstance(error, TLSError), f"a TLS handshake that must fail gave {error!r}"
    elif tls == "ok":
        assert error is None, error
    else:
        assert error is None or isinstance(error, TLSError), error
    if error is None:
        try:
            assert sock.writable.write(b"ping") == 4
            assert sock.readable.readexactly(4) == b"ping"
        except (SocketTimeout, BrokenSocketError):
            assert _short(merged, "timeout")  # a write timeout breaks the socket
    name = f"[{host}]" if ":" in host else host
    assert f"{name}:{verdict.port} " in repr(sock)
    sock.close()
    assert sock.closed.done()


@settings(SETTINGS, max_examples=300)
@given(data=st.data())
def test_any_connect_arguments_give_a_socket_or_an_argument_error(
    peers: Peers, data: st.DataObject
) -> None:
    # Each half is often valid, so that one bad part at a time is common too.
    options, kwargs = data.draw(
        st.one_of(
            model.option_arguments(peers.contexts), model.valid_option_arguments(peers.contexts)
        ),
        label="options, kwargs",
    )
    options_verdict = model.options_verdict(options, kwargs)
    transport = options_verdict.merged.get("secure_transport", "off")
    port_of = peers.port_for(transport if isinstance(transport, str) else "off")
    address = data.draw(
        st.one_of(model.addresses(port_of), model.valid_addresses(port_of)), label="address"
    )
    verdict = model.address_verdict(address)
    if not verdict.errors:  # never DNS, never a port that is not one of our peers
        assume(verdict.host in model.SAFE_HOSTS and verdict.port == port_of(verdict.host))
    verdict = model.connect_verdict(verdict, options_verdict)
    try:
        sock = _call(address, options, kwargs)
    except (TypeError, ValueError) as exc:
        event(f"argument error: {type(exc).__name__}")
        assert not isinstance(exc, PysockError), exc
        assert verdict.allows(exc), f"{exc!r}: the model allows {verdict.errors}"
        message = str(exc)
        assert message, "an argument error without a message"
        # The caller's input is echoed escaped (repr), never raw: no control characters.
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in message), message
        return
    try:
        assert verdict.valid, f"accepted, but the model expects {verdict.errors}"
        tls = "ok"
        if transport == "on":
            tls = model.tls_verdict(verdict.merged, str(verdict.host), peers.trusted)
        event(f"a socket: {transport}, TLS {tls}")
        _check_working(sock, verdict, tls)
    finally:
        sock.close()


@settings(SETTINGS, max_examples=150)
@given(data=st.data())
def test_valid_connect_arguments_give_a_working_socket(peers: Peers, data: st.DataObject) -> None:
    options, kwargs = data.draw(model.valid_option_arguments(peers.contexts), label="options")
    verdict = model.options_verdict(options, kwargs)
    assert verdict.valid, verdict.errors
    transport = verdict.merged.get("secure_transport", "off")
    address = data.draw(model.valid_addresses(peers.port_for(transport)), label="address")
    parsed = model.address_verdict(address)
    assert parsed.valid and parsed.host is not None
    parsed.merged = verdict.merged
    tls = "ok"
    if transport == "on":
        tls = model.tls_verdict(verdict.merged, parsed.host, peers.trusted)
    event(f"{transport}, TLS {tls}")
    with _call(address, options, kwargs) as sock:
        _check_working(sock, parsed, tls)


# -- reads ------------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=200)
@given(
    payload=model.payloads(),
    ops=st.lists(model.read_ops(), max_size=10),
    timeout=st.sampled_from([None, WAIT]),
    tls=st.booleans(),
)
def test_reads_agree_with_the_model(
    peers: Peers, payload: bytes, ops: list[tuple[Any, ...]], timeout: Optional[float], tls: bool
) -> None:
    server = peers.tls_send_back if tls else peers.send_back
    state = model.ReadModel(payload)
    with connect(
        server.address,
        secure_transport="on" if tls else "off",
        tls_context=peers.trusted,
        timeout=timeout,
        connect_timeout=WAIT,
    ) as sock:
        sock.writable.write(struct.pack("!I", len(payload)) + payload)
        for op in ops:
            state.check(sock.readable, op)
        rest = sock.readable.read()
        assert sock.readable.read() == b""  # at EOF, every time
    assert b"".join(state.taken) + rest == payload


# -- writes ------------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=150)
@given(
    args=st.lists(model.write_args(), max_size=8),
    timeout=st.sampled_from([None, WAIT]),
    tls=st.booleans(),
)
def test_writes_deliver_bytes_like_data_intact(
    peers: Peers, args: list[model.WriteArg], timeout: Optional[float], tls: bool
) -> None:
    server = peers.servers["127.0.0.1", tls]
    expected = bytearray()
    with connect(
        server.address,
        secure_transport="on" if tls else "off",
        tls_context=peers.trusted,
        timeout=timeout,
        connect_timeout=WAIT,
    ) as sock:
        for arg in args:
            value, data = arg.build(), arg.data
            if data is None:
                with pytest.raises(TypeError):
                    sock.writable.write(value)
            else:
                assert sock.writable.write(value) == len(data)
                expected += data
        sock.writable.write(b"")
        sock.writable.close()  # half-close (TLS 1.3: close_notify): the peer's echo ends
        assert sock.readable.read() == expected


@pytest.mark.parametrize("tls", [False, True])
def test_an_empty_write_sends_nothing(
    serve: Callable[..., Server], leaf: trustme.LeafCert, client_ctx: ssl.SSLContext, tls: bool
) -> None:
    """write(b"") puts no byte on the wire: over TLS 1.2, no empty application record."""
    if tls:
        recorder = RecordingTlsServerSide(server_context(leaf, ssl.TLSVersion.TLSv1_2))
        server = serve(recorder)
    else:
        raw = bytearray()
        server = serve(lambda conn: raw.extend(_recv_all(conn)))
    sock = connect(server.address, secure_transport="on" if tls else "off", tls_context=client_ctx)
    with sock:
        sock.opened.result(WAIT)
        for empty in (b"", bytearray(), memoryview(b"x")[1:], memoryview(b"")):
            assert sock.writable.write(empty) == 0
        sock.writable.write(b"x")
    server.stop()
    if tls:
        types = tls_record_types(recorder.raw)
        assert recorder.handshake_error is None
        assert types.count(23) == 1, types  # TLS 1.2: one application record, for b"x"
    else:
        assert raw == b"x"


# -- the bugs the properties found, now regression tests ------------------------------------


def _run_child(code: str) -> str:
    """Run `code` in a fresh interpreter (a dead selector thread must not take this one)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() + result.stderr.strip()


_DEADLINE_CHILD = """
    import concurrent.futures
    from pysock import SocketTimeout, connect
    from tests.peers.tcp import Blackhole

    hole = Blackhole()  # connects never complete: the deadline reaches the selector thread
    first = connect(hole.address, {options})
    second = connect(hole.address, connect_timeout=0.2)
    try:
        error = second.opened.exception(2)
    except concurrent.futures.TimeoutError:
        error = "the selector thread is dead: no connect deadline fires"
    print("ok" if isinstance(error, SocketTimeout) else f"FAIL {{error}}")
    first.close(); second.close(); hole.close()
"""


@pytest.mark.parametrize(
    "options", ["connect_timeout=float('inf')", "connect_timeout=1e8", "timeout=1e300"]
)
def test_huge_timeout_keeps_the_selector_thread_alive(options: str) -> None:
    """Found by the connect property (fixed in ff7ae7c): a deadline past ~24.8 days
    overflowed epoll.poll() and killed the selector thread. A child runs it, so a
    regression cannot take this process's selector thread with it."""
    output = _run_child(_DEADLINE_CHILD.format(options=options))
    assert output == "ok", output


@pytest.mark.parametrize("timeout", [float("inf"), 1e8])
def test_huge_read_timeout_waits_like_no_timeout(
    serve: Callable[..., Server], timeout: float
) -> None:
    """Found by the connect property (fixed in ff7ae7c): OverflowError in poll()."""
    go = threading.Event()

    def late(conn: socket.socket) -> None:
        if go.wait(WAIT):  # long after the client began to wait in read()
            conn.sendall(b"late")

    server = serve(late)
    timer = threading.Timer(0.3, go.set)
    with connect(server.address, timeout=timeout, connect_timeout=WAIT) as sock:
        sock.opened.result(WAIT)
        timer.start()
        try:
            assert sock.readable.readexactly(4) == b"late"
        finally:
            go.set()
            timer.join(WAIT)


@pytest.mark.parametrize("host", ["ä..example", "ä" * 64])
def test_a_hostname_idna_rejects_fails_the_open(host: str) -> None:
    try:
        sock = connect((host, 80), connect_timeout=0.5)
    except ValueError:
        return  # refusing it at the call is fine too
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, ConnectError), repr(error)


@pytest.mark.parametrize("key", ["timeout", "connect_timeout"])
def test_a_timeout_too_big_for_a_float_is_an_argument_error(key: str) -> None:
    try:
        options: dict[str, Any] = {key: 10**400}
        sock = connect("127.0.0.1:1", **options)
    except (TypeError, ValueError):
        return
    sock.close()  # accepted as "no timeout": fine too


# As in io, a bool is an int (True reads one byte); None or a negative size means all.
_READ_ARGUMENTS = [
    ("read", -5, "all"),
    ("read", True, "some"),
    ("read1", True, "some"),
    ("readline", True, "some"),
    ("read1", None, "some"),
]


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize(("method", "size", "outcome"), _READ_ARGUMENTS)
def test_reader_size_arguments_are_checked_the_same_way_on_every_call(
    peers: Peers,
    request: pytest.FixtureRequest,
    timeout: Optional[float],
    method: str,
    size: Any,
    outcome: Any,
) -> None:
    payload = b"0123456789\n" * 3
    with connect(peers.send_back.address, timeout=timeout, connect_timeout=WAIT) as sock:
        sock.writable.write(struct.pack("!I", len(payload)) + payload)
        assert sock.readable.read(1) == b"0"  # the first read binds the fast path
        call = getattr(sock.readable, method)
        if outcome is TypeError:
            with pytest.raises(TypeError):
                call(size)
        elif outcome == "all":
            assert call(size) == payload[1:]
        else:
            assert payload[1:].startswith(call(size))


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize(
    ("method", "size"),
    [("read", 2**62), ("read", 2**64), ("read1", 2**62), ("readexactly", 2**62)],
)
def test_huge_sizes_read_to_eof(
    peers: Peers, timeout: Optional[float], method: str, size: int
) -> None:
    payload = b"0123456789\n" * 3
    with connect(peers.send_back.address, timeout=timeout, connect_timeout=WAIT) as sock:
        sock.writable.write(struct.pack("!I", len(payload)) + payload)
        if method == "readexactly":
            with pytest.raises(IncompleteReadError) as info:
                sock.readable.readexactly(size)
            assert info.value.partial == payload
        else:
            data = getattr(sock.readable, method)(size)
            assert data and payload.startswith(data)


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_strided_memoryview_is_a_type_error_and_the_socket_stays_usable(
    peers: Peers, timeout: Optional[float], tls: bool
) -> None:
    server = peers.servers["127.0.0.1", tls]
    with connect(
        server.address,
        secure_transport="on" if tls else "off",
        tls_context=peers.trusted,
        timeout=timeout,
    ) as sock:
        sock.opened.result(WAIT)
        try:
            sock.writable.write(memoryview(b"abcdef")[::2])
        except TypeError:
            pass  # "not a bytes-like object": C-contiguous is part of the definition
        else:
            assert sock.readable.readexactly(3) == b"ace"  # or it is sent, intact
        sock.writable.write(b"ok")
        assert sock.readable.readexactly(2) == b"ok"


@pytest.mark.parametrize(
    "options",
    [
        {"expected_server_hostname": "localhost\x00.evil.example"},
        {"expected_server_hostname": ".localhost"},
        {"expected_server_hostname": "ä..example"},
        {"expected_server_hostname": "x" * 64},
        {"alpn_protocols": ["é"]},
        {"address": ("ä..example", 443)},
    ],
    ids=["nul", "leading-dot", "idna", "long-label", "alpn", "address"],
)
def test_names_ssl_rejects_fail_at_the_call_without_a_leak(
    peers: Peers, options: dict[str, Any]
) -> None:
    options = dict(options)
    address = options.pop("address", peers.servers["127.0.0.1", True].address)
    with finalizer_problems() as problems:
        raised = _raised_by(connect, address, secure_transport="on", **options)
    assert raised is not None and issubclass(raised, ValueError), raised
    assert problems == []


@pytest.mark.parametrize("method", ["readinto", "readinto1"])
@pytest.mark.parametrize("timeout", [None, WAIT], ids=["no-timeout", "timeout"])
def test_readinto_a_read_only_buffer_loses_nothing(
    peers: Peers, method: str, timeout: Optional[float]
) -> None:
    payload = b"0123456789"
    with connect(peers.send_back.address, timeout=timeout, connect_timeout=WAIT) as sock:
        sock.writable.write(struct.pack("!I", len(payload)) + payload)
        with pytest.raises(TypeError):
            getattr(sock.readable, method)(bytes(4))
        assert sock.readable.read() == payload


@pytest.mark.parametrize("timeout", [None, WAIT], ids=["no-timeout", "timeout"])
def test_peek_checks_its_argument_with_bytes_stashed(
    peers: Peers, timeout: Optional[float]
) -> None:
    payload = b"0123456789\n"
    with connect(peers.send_back.address, timeout=timeout, connect_timeout=WAIT) as sock:
        sock.writable.write(struct.pack("!I", len(payload)) + payload)
        with pytest.raises(ValueError):
            sock.readable.readuntil(b"\n", 2)  # over the limit: the bytes stay, stashed
        with pytest.raises(TypeError):
            sock.readable.peek(1.5)  # type: ignore[arg-type]
