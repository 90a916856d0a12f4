"""Fixtures shared by every test: servers, leak checks and the hypothesis profiles."""

from __future__ import annotations

import gc
import os
import signal
import ssl
import threading
from typing import Callable, Iterator

import pytest
import trustme
from hypothesis import settings

from .helpers import sync_loop
from .peers.real_servers import in_ci
from .peers.tcp import Blackhole, Server, echo

# Hypothesis profiles. Under CI (.ci/run exports CI=1) every run draws the same
# examples, so a red build is reproducible and a green one is not luck, and a
# failure prints the blob that replays it (@reproduce_failure). Locally the
# examples are random, so each run explores new input, and the example database
# (.hypothesis/, which ignores itself in git) replays a failure until it is fixed.
# A test may set max_examples or deadline, but never derandomize or database.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("local")
settings.load_profile("ci" if in_ci() else "local")

# Threads pysock keeps for the whole process once started.
_LONG_LIVED_THREADS = ("pysock-selector", "pysock-dns")


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith(_LONG_LIVED_THREADS)}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaks a descriptor or a thread."""
    sync_loop()  # Starts the loop first, so its own descriptors are not counted.
    gc.collect()
    fds_before, threads_before = _open_fds(), _threads()
    yield
    gc.collect()
    sync_loop()
    leaked_fds: set[int] = set()
    for _ in range(100):  # Peer threads may still be finishing: bounded wait.
        leaked_fds = _open_fds() - fds_before
        leaked_threads = _threads() - threads_before
        if not leaked_fds and not leaked_threads:
            return
        threading.Event().wait(0.02)
        sync_loop()
    details = {fd: _describe_fd(fd) for fd in leaked_fds}
    pytest.fail(f"leaked descriptors {details} / threads {leaked_threads}")


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture
def echo_server() -> Iterator[Server]:
    with Server(echo) as server:
        yield server
    _raise_peer_errors(server)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start servers with a custom handler: ``server = serve(handler, host=...)``."""
    servers: list[Server] = []

    def start(handler: Callable[..., None], host: str = "127.0.0.1") -> Server:
        server = Server(handler, host)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        _raise_peer_errors(server)


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


def _raise_peer_errors(server: Server) -> None:
    if server.errors:
        raise server.errors[0]


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound and released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def alarm() -> Iterator[Callable[[float], None]]:
    """Ctrl-C in the main thread after some seconds (SIGALRM raising KeyboardInterrupt)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)

    def start(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    yield start
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1", "::1")


@pytest.fixture(params=["TLSv1_2", "TLSv1_3"])
def tls_version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    return getattr(ssl.TLSVersion, request.param)  # type: ignore[no-any-return]


@pytest.fixture
def server_ctx(leaf: trustme.LeafCert, tls_version: ssl.TLSVersion) -> ssl.SSLContext:
    from .peers.tls import server_context

    return server_context(leaf, tls_version)


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    from .peers.tls import client_context

    return client_context(ca)
