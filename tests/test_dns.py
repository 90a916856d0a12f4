"""Name lookups: a slow one never stalls another, one name's burst shares a lookup.

Slow lookups go through the resolver seam `pysock._opening.getaddrinfo`: names
under ``.slow`` wait for the test to release them, then resolve to 127.0.0.1;
every other name resolves as usual. `pysock._workers.Workers` is tested
directly for its threads' reuse and idle exit.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator

import pytest

from pysock import Socket, SocketClosedError, _opening, connect
from pysock._workers import Workers

from .peers.tcp import Blackhole, Server

TIMEOUT = 10


class SlowResolver:
    """Names under ``.slow`` block until `release()`; `calls` counts lookups by name."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._real = socket.getaddrinfo

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        with self._lock:
            self.calls[host] += 1
        if host.endswith(".slow"):
            assert self.released.wait(TIMEOUT), "the test never released the lookups"
            host = "127.0.0.1"
        return self._real(host, port, *args, **kwargs)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowResolver]:
    slow = SlowResolver()
    monkeypatch.setattr(_opening, "getaddrinfo", slow)
    yield slow
    slow.release()  # A failed test must not leave DNS threads blocked.


@pytest.fixture
def sockets() -> Iterator[list[Socket]]:
    opened: list[Socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_many_slow_lookups_do_not_stall_another(
    resolver: SlowResolver, echo_server: Server, sockets: list[Socket]
) -> None:
    # More lookups hang at once than any fixed pool of threads would hold.
    sockets.extend(connect(f"n{i}.slow:{echo_server.port}") for i in range(64))
    fast = connect(f"localhost:{echo_server.port}", timeout=TIMEOUT)
    sockets.append(fast)
    assert fast.opened.result(TIMEOUT).remote_address == f"127.0.0.1:{echo_server.port}"
    assert not any(sock.opened.done() for sock in sockets[:64])
    resolver.release()
    for sock in sockets[:64]:
        sock.opened.result(TIMEOUT)


def test_one_name_burst_shares_one_lookup(
    resolver: SlowResolver, echo_server: Server, sockets: list[Socket]
) -> None:
    name = "burst.slow"
    sockets.extend(connect(f"{name}:{echo_server.port}", timeout=TIMEOUT) for _ in range(50))
    other_port = connect(f"{name}:1", timeout=TIMEOUT)
    other_port.close()  # Another port is another lookup; closing it while it waits is fine.
    resolver.release()
    for sock in sockets:
        sock.writable.write(b"ping\n")
        assert sock.readable.readline() == b"ping\n"
    assert resolver.calls[name] == 2  # One for the 50 sockets, one for the other port.


def test_close_in_the_middle_of_a_dns_threads_connect(
    monkeypatch: pytest.MonkeyPatch, blackhole: Blackhole
) -> None:
    # The DNS thread starts the first attempt after the lookup. close() from the
    # user's thread lands right after that attempt's connect() (in progress: the
    # blackhole never answers) and before its getpeername(): the socket is the DNS
    # thread's alone until then, so close() must not have closed it under it (an
    # EBADF there, reported by pytest as an error in the DNS thread).
    sockets: list[Socket] = []
    returned = threading.Event()
    real_start = _opening._start_connect

    def start_then_close(sock: socket.socket, sockaddr: Any) -> int:
        code = real_start(sock, sockaddr)
        assert returned.wait(TIMEOUT)  # connect() gave the Socket back.
        sockets[0].close()
        return code

    monkeypatch.setattr(_opening, "_start_connect", start_then_close)
    sockets.append(connect(f"localhost:{blackhole.port}"))  # A name: the DNS thread connects.
    returned.set()
    error = sockets[0].opened.exception(TIMEOUT)
    assert isinstance(error, SocketClosedError)
    assert sockets[0].closed.result(TIMEOUT) is None


def test_failed_lookup_is_shared_by_the_waiting_sockets(sockets: list[Socket]) -> None:
    socks = [connect("does-not-exist.invalid:80", timeout=TIMEOUT) for _ in range(5)]
    sockets.extend(socks)
    errors = [sock.opened.exception(TIMEOUT) for sock in socks]
    assert all(isinstance(error, ConnectionError) for error in errors)
    assert all(isinstance(error.__cause__, socket.gaierror) for error in errors if error)


def test_a_resolver_that_raises_something_else_fails_the_opening(
    monkeypatch: pytest.MonkeyPatch, sockets: list[Socket]
) -> None:
    def refuse(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        raise UnicodeError("label too long")  # What the idna codec raises.

    monkeypatch.setattr(_opening, "getaddrinfo", refuse)
    sock = connect("example.test:80", timeout=TIMEOUT)
    sockets.append(sock)
    error = sock.opened.exception(TIMEOUT)  # Not pending forever.
    assert isinstance(error, ConnectionError) and "label too long" in str(error)
    assert isinstance(error.__cause__, OSError)
    assert isinstance(error.__cause__.__cause__, UnicodeError)


# -- Workers -------------------------------------------------------------------------


def run_and_wait(workers: Workers, fn: Callable[[], None]) -> str:
    """Submit `fn`; return the name of the thread that ran it."""
    done = threading.Event()
    names: list[str] = []

    def job() -> None:
        names.append(threading.current_thread().name)
        fn()
        done.set()

    workers.submit(job)
    assert done.wait(TIMEOUT)
    return names[0]


def wait_idle(workers: Workers, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while workers._idle != count:
        assert time.monotonic() < deadline, f"{workers!r}: never {count} idle"
        time.sleep(0.001)


def wait_for_no_thread(prefix: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while any(t.name.startswith(prefix) for t in threading.enumerate()):
        assert time.monotonic() < deadline, "an idle worker did not exit"
        time.sleep(0.01)


def test_workers_reuse_an_idle_thread_and_exit_when_idle() -> None:
    workers = Workers("test-workers", idle_seconds=0.2)
    first = run_and_wait(workers, lambda: None)
    wait_idle(workers, 1)
    assert run_and_wait(workers, lambda: None) == first
    wait_for_no_thread("test-workers")
    assert run_and_wait(workers, lambda: None) != first  # A new one, after the exit.
    wait_for_no_thread("test-workers")


def test_workers_start_a_thread_per_busy_job() -> None:
    workers = Workers("test-busy", idle_seconds=0.2)
    gate = threading.Event()
    started = threading.Semaphore(0)

    def blocked() -> None:
        started.release()
        assert gate.wait(TIMEOUT)

    for _ in range(40):
        workers.submit(blocked)
    for _ in range(40):
        assert started.acquire(timeout=TIMEOUT)  # All 40 run at once.
    gate.set()
    wait_for_no_thread("test-busy")


def test_workers_report_a_failing_job_and_serve_on(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    workers = Workers("test-failing", idle_seconds=0.2)

    def fail() -> None:
        raise RuntimeError("a bug")

    thread = run_and_wait(workers, lambda: None)
    wait_idle(workers, 1)
    workers.submit(fail)
    deadline = time.monotonic() + TIMEOUT
    while not reported:
        assert time.monotonic() < deadline, "the failure was never reported"
        time.sleep(0.001)
    wait_idle(workers, 1)  # Back to waiting after the failure.
    assert run_and_wait(workers, lambda: None) == thread  # The thread survived.
    assert len(reported) == 1
    assert isinstance(reported[0].exc_value, RuntimeError)
    assert "test-failing" in reported[0].err_msg
    wait_for_no_thread("test-failing")
