"""Property-based tests of bad input: connect() arguments, read sizes, write arguments.

Every input gives either a working socket or the documented TypeError/ValueError
at the call, before any I/O (a bad argument must never become a half-open
connection or an error raised later in another thread); every read agrees
with a model of the bytes the peer sent (no byte dropped, repeated or
reordered; the models: tests/strategies/); every write either delivers its
bytes intact or is a TypeError. The peers are module-scoped stdlib servers
(tests/peers/properties.py), each example closes its socket, and `no_leaks`
checks the whole test. The examples drawn depend on the hypothesis profile
(tests/conftest.py): random locally, the same every run under CI.
The bugs these properties found are pinned down in test_property_regressions.py.
"""

from __future__ import annotations

import ssl
import struct
from typing import Any, Callable, Final, Optional

import pytest
import trustme
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from pysock import BrokenSocketError, PysockError, Socket, SocketTimeout, TLSError, connect

from . import strategies as model
from .helpers import recv_all as _recv_all
from .peers.properties import WAIT, Peers

# The module-scoped fixture, taken by name: the redundant alias tells linters it is used.
from .peers.properties import peers as peers
from .peers.tcp import Server
from .peers.tls import RecordingTlsServerSide, server_context, tls_record_types

# derandomize, database and print_blob come from the profile (tests/conftest.py).
SETTINGS: Final = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # no_leaks checks the test as a whole
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)

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
