"""Happy Eyeballs v2 (RFC 8305): one lookup, interleaved families, staggered attempts.

No hosts file here gives one name both loopback addresses, so the tests
resolve ``dual.pysock.test`` through pysock's resolver seam
(`pysock._opening.getaddrinfo`) to the real ``::1`` and ``127.0.0.1``; every
socket is real. A family "refuses" when nothing listens on its address and
"blackholes" when its listener's accept queue is full (SYNs are dropped).
Elapsed times are checked against generous bounds around the configured
delays, never against machine speed.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import pysock
from pysock import _opening
from pysock._opening import interleave

from .peers.tcp import Blackhole, Server, echo

NAME = "dual.pysock.test"
WAIT = 10.0


def _pair_port() -> int:
    """A port free on both 127.0.0.1 and ::1 (bound and released together)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET) as v4:
            v4.bind(("127.0.0.1", 0))
            port: int = v4.getsockname()[1]
            with socket.socket(socket.AF_INET6) as v6:
                try:
                    v6.bind(("::1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free on both loopback addresses")


@pytest.fixture
def resolve_dual(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make `NAME` resolve to both loopback addresses, in the order asked for."""

    def install(order: str) -> None:
        real = socket.getaddrinfo

        def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            if host != NAME:
                return real(host, port, *args, **kwargs)
            literals = ["::1", "127.0.0.1"] if order == "v6" else ["127.0.0.1", "::1"]
            return [info for ip in literals for info in real(ip, port, *args, **kwargs)]

        monkeypatch.setattr(_opening, "getaddrinfo", fake)

    return install


@pytest.fixture
def port() -> int:
    return _pair_port()


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, Server):
            thing.stop()
        else:
            thing.close()


def _open(order_port: int, **options: Any) -> tuple[pysock.Socket, float, pysock.SocketInfo]:
    started = time.monotonic()
    sock = pysock.connect((NAME, order_port), timeout=WAIT, **options)
    info = sock.opened.result(WAIT)
    return sock, time.monotonic() - started, info


def test_both_families_answer_the_first_family_wins(
    resolve_dual: Callable[[str], None], port: int, cleanup: list[Any]
) -> None:
    cleanup += [Server(echo, "127.0.0.1", port=port), Server(echo, "::1", port=port)]
    for order, winner in (("v6", f"[::1]:{port}"), ("v4", f"127.0.0.1:{port}")):
        resolve_dual(order)
        sock, _, info = _open(port, happy_eyeballs_delay=5.0)
        with sock:
            assert info.remote_address == winner
            sock.writable.write(b"ping")
            assert sock.readable.readexactly(4) == b"ping"


def test_a_refusing_family_starts_the_next_attempt_at_once(
    resolve_dual: Callable[[str], None], port: int, cleanup: list[Any]
) -> None:
    resolve_dual("v6")  # ::1 first, where nothing listens.
    cleanup.append(Server(echo, "127.0.0.1", port=port))
    sock, elapsed, info = _open(port, happy_eyeballs_delay=3.0)
    with sock:
        assert info.remote_address == f"127.0.0.1:{port}"
    assert elapsed < 1.5, "a refused attempt must not wait out the 3 s delay"


def test_a_blackholed_family_loses_after_the_delay(
    resolve_dual: Callable[[str], None], port: int, cleanup: list[Any]
) -> None:
    resolve_dual("v6")
    cleanup += [Blackhole("::1", port), Server(echo, "127.0.0.1", port=port)]
    sock, elapsed, info = _open(port, happy_eyeballs_delay=0.3, connect_timeout=WAIT)
    with sock:
        assert info.remote_address == f"127.0.0.1:{port}"
        sock.writable.write(b"x")
        assert sock.readable.readexactly(1) == b"x"
    assert 0.25 <= elapsed < WAIT / 2, elapsed


def test_the_blackholed_second_family_never_delays_the_first(
    resolve_dual: Callable[[str], None], port: int, cleanup: list[Any]
) -> None:
    resolve_dual("v4")
    cleanup += [Server(echo, "127.0.0.1", port=port), Blackhole("::1", port)]
    sock, elapsed, info = _open(port, happy_eyeballs_delay=0.3)
    with sock:
        assert info.remote_address == f"127.0.0.1:{port}"
    assert elapsed < 0.3 + WAIT / 4


def test_without_the_delay_attempts_run_one_at_a_time(
    resolve_dual: Callable[[str], None], port: int, cleanup: list[Any]
) -> None:
    resolve_dual("v6")
    server = Server(echo, "127.0.0.1", port=port)
    cleanup += [Blackhole("::1", port), server]
    started = time.monotonic()
    sock = pysock.connect((NAME, port), happy_eyeballs_delay=None, connect_timeout=0.6)
    with sock, pytest.raises(pysock.SocketTimeout):
        sock.opened.result(WAIT)
    assert time.monotonic() - started >= 0.5
    assert server.accepted == [], "IPv4 was tried although IPv6 had not failed"


def test_every_failure_is_kept(resolve_dual: Callable[[str], None], port: int) -> None:
    resolve_dual("v6")  # Nothing listens on either address.
    sock = pysock.connect((NAME, port), timeout=WAIT)
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    assert error.errno == errno.ECONNREFUSED
    failures = [e for e in error.errors if isinstance(e, OSError)]
    assert [e.filename for e in failures] == [f"[::1]:{port}", f"127.0.0.1:{port}"]
    assert all(e.errno == errno.ECONNREFUSED for e in failures)
    assert f"[::1]:{port}" in str(error) and f"127.0.0.1:{port}" in str(error)
    assert NAME in str(error)


def test_one_deadline_covers_every_attempt(
    resolve_dual: Callable[[str], None], port: int, cleanup: list[Any]
) -> None:
    resolve_dual("v6")
    cleanup += [Blackhole("::1", port), Blackhole("127.0.0.1", port)]
    started = time.monotonic()
    sock = pysock.connect((NAME, port), happy_eyeballs_delay=0.1, connect_timeout=0.5)
    with sock, pytest.raises(pysock.SocketTimeout):
        sock.opened.result(WAIT)
    assert 0.45 <= time.monotonic() - started < WAIT


def test_close_abandons_every_attempt(
    resolve_dual: Callable[[str], None], port: int, cleanup: list[Any]
) -> None:
    resolve_dual("v6")
    cleanup += [Blackhole("::1", port), Blackhole("127.0.0.1", port)]
    sock = pysock.connect((NAME, port), happy_eyeballs_delay=0.05)
    time.sleep(0.2)  # Both attempts are in flight now.
    sock.close()
    assert sock.closed.done()
    with pytest.raises(pysock.SocketClosedError):
        sock.opened.result(WAIT)


def test_the_delay_option_is_checked() -> None:
    with pytest.raises(ValueError):
        pysock.connect("127.0.0.1:1", happy_eyeballs_delay=-1)
    with pytest.raises(TypeError):
        pysock.connect("127.0.0.1:1", happy_eyeballs_delay="0.25")  # type: ignore[arg-type]


V6 = [(socket.AF_INET6, (f"2001:db8::{n}", 80, 0, 0)) for n in range(1, 4)]
V4 = [(socket.AF_INET, (f"192.0.2.{n}", 80)) for n in range(1, 3)]


def test_interleave_alternates_families_from_the_first_address() -> None:
    assert interleave([*V6, *V4]) == [V6[0], V4[0], V6[1], V4[1], V6[2]]
    assert interleave([*V4, *V6]) == [V4[0], V6[0], V4[1], V6[1], V6[2]]
    assert interleave([V4[0], V4[0], V6[0]]) == [V4[0], V6[0]]
    assert interleave([]) == []


def test_racing_attempts_leak_nothing(
    resolve_dual: Callable[[str], None], port: int, cleanup: list[Any]
) -> None:
    """Delay 0: both families race every time; one wins, the other is closed (no fd leaks)."""
    resolve_dual("v6")
    cleanup += [Server(echo, "127.0.0.1", port=port), Server(echo, "::1", port=port)]
    winners = set()
    for index in range(100):
        with pysock.connect((NAME, port), happy_eyeballs_delay=0, timeout=WAIT) as sock:
            winners.add(sock.opened.result(WAIT).remote_address)
            if index % 10 == 0:
                _roundtrip_one(sock)
        if index % 7 == 3:  # And some closed while both attempts are still racing.
            pysock.connect((NAME, port), happy_eyeballs_delay=0).close()
    assert winners <= {f"[::1]:{port}", f"127.0.0.1:{port}"}


def _roundtrip_one(sock: pysock.Socket) -> None:
    sock.writable.write(b"?")
    assert sock.readable.readexactly(1) == b"?"
