"""The pysock bugs the property tests (test_properties.py) found, each pinned down
with its minimal example as a regression test (each was an xfail until pysock
was fixed).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable, Final, Optional

import pytest

from pysock import ConnectError, IncompleteReadError, connect

from .helpers import finalizer_problems
from .helpers import raised_by as _raised_by
from .peers.properties import WAIT, Peers

# The module-scoped fixture, taken by name: the redundant alias tells linters it is used.
from .peers.properties import peers as peers
from .peers.tcp import Server

REPO: Final = Path(__file__).resolve().parents[1]


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
