"""``address_filter`` and `pysock.deny_private` on real connects (the checks alone: test_guard.py).

The filter runs for each resolved address immediately before its connect,
with the very address then connected, so a refusal means nothing reached the
destination: each refusal test checks that its listener accepted nothing.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable

import pytest

import pysock
from pysock import _opening

from .peers.tcp import Server
from .test_happy_eyeballs import NAME, _pair_port

WAIT = 10.0


def _refused(address: Any, **options: Any) -> pysock.ConnectError:
    sock = pysock.connect(address, timeout=WAIT, **options)
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError), error
    assert error.errno == errno.EACCES
    return error


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),  # A name: refused after the lookup.
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: Linux connects it to 127.0.0.1.
    ],
)
def test_deny_private_refuses_loopback_before_connecting(
    echo_server: Server, host: str, reason: str
) -> None:
    if host == "::1":
        server = Server(lambda conn: None, "::1")
        port = server.port
    else:
        server, port = echo_server, echo_server.port
    try:
        error = _refused((host, port), address_filter=pysock.deny_private)
    finally:
        if server is not echo_server:
            server.stop()
    assert reason in str(error)
    assert "destination refused" in str(error)
    assert server.accepted == []


def test_a_refusal_names_the_unwrapped_address(echo_server: Server) -> None:
    error = _refused(("::ffff:127.0.0.1", echo_server.port), address_filter=pysock.deny_private)
    assert "127.0.0.1" in str(error)
    assert [getattr(e, "errno", None) for e in error.errors] == [errno.EACCES]


def test_the_filter_sees_exactly_the_connected_address(echo_server: Server) -> None:
    seen: list[tuple[str, int]] = []

    def allow_all(ip: str, port: int) -> bool:
        seen.append((ip, port))
        return True

    with pysock.connect(("localhost", echo_server.port), address_filter=allow_all) as sock:
        info = sock.opened.result(WAIT)
    assert seen == [("127.0.0.1", echo_server.port)]
    assert info.remote_address == f"127.0.0.1:{echo_server.port}"


def test_the_filter_runs_before_the_connect() -> None:
    """While the filter runs, the listener's queue is empty: no handshake has happened yet."""
    queued_during_filter: list[bool] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)

        def probe(ip: str, port: int) -> bool:
            try:
                listener.accept()[0].close()
                queued_during_filter.append(True)
            except BlockingIOError:
                queued_during_filter.append(False)
            return True

        with pysock.connect(listener.getsockname(), address_filter=probe) as sock:
            sock.opened.result(WAIT)
            listener.settimeout(WAIT)
            listener.accept()[0].close()  # The connect did happen, after the filter.
    assert queued_during_filter == [False]


def test_a_refused_family_falls_back_to_an_allowed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _pair_port()
    real = socket.getaddrinfo

    def fake(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        if host == NAME:
            return real("::1", *args, **kwargs) + real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(_opening, "getaddrinfo", fake)
    v6, v4 = Server(lambda conn: None, "::1", port=port), Server(lambda conn: None, port=port)
    try:
        only_v4: Callable[[str, int], bool] = lambda ip, port: ":" not in ip  # noqa: E731
        with pysock.connect((NAME, port), address_filter=only_v4) as sock:
            assert sock.opened.result(WAIT).remote_address == f"127.0.0.1:{port}"
    finally:
        v6.stop()
        v4.stop()
    assert v6.accepted == []


def test_a_failing_filter_fails_the_opening(echo_server: Server) -> None:
    def broken(ip: str, port: int) -> bool:
        raise RuntimeError("policy service down")

    sock = pysock.connect(echo_server.address, address_filter=broken)
    with sock:
        error = sock.opened.exception(WAIT)
    assert isinstance(error, pysock.ConnectError)
    # As for every ConnectError, the cause is an OSError; the filter's own exception
    # is behind it.
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.EACCES
    assert isinstance(error.__cause__.__cause__, RuntimeError)
    assert "policy service down" in str(error)
    assert echo_server.accepted == []


def test_a_custom_refusal_says_so(echo_server: Server) -> None:
    error = _refused(echo_server.address, address_filter=lambda ip, port: port != echo_server.port)
    assert "refused by address_filter" in str(error)


def test_the_filter_must_be_callable() -> None:
    with pytest.raises(TypeError, match="address_filter"):
        pysock.connect("127.0.0.1:1", address_filter="deny")  # type: ignore[arg-type]


def test_a_filter_refuses_what_it_cannot_check(tmp_path: Any, echo_server: Server) -> None:
    """A Unix path or an adopted socket has no IP address: refused, never let through."""
    with pytest.raises(ValueError, match="Unix socket"):
        pysock.connect({"path": str(tmp_path / "s")}, address_filter=pysock.deny_private)
    with pytest.raises(ValueError, match="Unix socket"):
        pysock.connect("unix:/run/docker.sock", address_filter=lambda ip, port: True)
    raw = socket.create_connection(("127.0.0.1", echo_server.port), timeout=WAIT)
    try:
        with pytest.raises(ValueError, match="adopted socket"):
            pysock.connect(sock=raw, address_filter=pysock.deny_private)
    finally:
        raw.close()
