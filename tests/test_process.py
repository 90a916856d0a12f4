"""The process model (docs/design.md): one selector thread, fork, garbage collection, Ctrl-C."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
import warnings
from typing import Any, Callable

import pytest

from pysock import SocketClosedError, connect

from .helpers import sync_loop
from .peers.tcp import Blackhole, Server

TIMEOUT = 10

pytestmark = pytest.mark.process


def selector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pysock-selector"]


def test_one_selector_thread_serves_every_socket(echo_server: Server) -> None:
    sockets = [connect(echo_server.address) for _ in range(20)]
    try:
        for sock in sockets:
            sock.opened.result(TIMEOUT)
        assert len(selector_threads()) == 1
        assert selector_threads()[0].daemon
    finally:
        for sock in sockets:
            sock.close()


def test_the_loop_is_not_started_at_import() -> None:
    import subprocess
    import sys

    code = "import threading, pysock; print(len(threading.enumerate()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT)
    assert out.stdout.strip() == b"1", out.stderr


def test_exit_with_a_lookup_in_flight_never_hangs(echo_server: Server) -> None:
    # A socket to a name, never closed, at the end of a script run with warnings
    # shown: the exit stops the DNS thread wherever it is. That thread used to
    # import the idna codec there, and an exit that cut it mid-import left the
    # import lock held: the finalizer's ResourceWarning then hung on it (1 run
    # in 4). Ten runs, each bounded.
    import subprocess
    import sys

    code = f"import pysock\nG = pysock.connect('localhost:{echo_server.port}')\n"
    for _ in range(10):
        done = subprocess.run(
            [sys.executable, "-X", "dev", "-c", code], capture_output=True, timeout=TIMEOUT
        )
        assert done.returncode == 0, done.stderr
        assert b"Traceback" not in done.stderr, done.stderr


def test_exit_during_a_connect_warns_once(blackhole: Blackhole) -> None:
    # A connect still in progress at exit: pysock's finalizer runs after the loop
    # stopped and must close the attempt's descriptor itself (the stdlib socket
    # warned about it as well).
    import subprocess
    import sys

    code = (
        "import time, pysock\n"
        f"s = pysock.connect('{blackhole.address}', connect_timeout=30)\n"
        "time.sleep(0.2)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    warnings_seen = [line for line in done.stderr.splitlines() if b"ResourceWarning" in line]
    assert len(warnings_seen) == 1 and b"unclosed pysock socket" in warnings_seen[0], done.stderr


_NO_HAND_OFF = """
import collections, select, socket, ssl, sys, threading, time
import trustme
calls = collections.Counter()

def profile(frame, event, arg):
    if event == "call" and threading.current_thread().name == "pysock-selector":
        calls[frame.f_code.co_name] += 1

threading.setprofile(profile)  # Threads started from now on: the selector among them.
import pysock
import pysock._peekwatch

ca = trustme.CA()
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ca.issue_cert("localhost").configure_cert(server_ctx)
client_ctx = ssl.create_default_context()
ca.configure_trust(client_ctx)
listener = socket.create_server(("127.0.0.1", 0))

def echo(tls):
    conn, _ = listener.accept()
    conn.settimeout(10)
    if tls:
        conn = server_ctx.wrap_socket(conn, server_side=True)
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)

for tls in (False, True):
    for timeout in (None, 5.0):
        peer = threading.Thread(target=echo, args=(tls,))
        peer.start()
        options = {"secure_transport": "on", "tls_context": client_ctx} if tls else {}
        sock = pysock.connect(("localhost", listener.getsockname()[1]), timeout=timeout, **options)
        sock.writable.write(b"warm-up\\n")
        sock.readable.readline()
        # The idle watch's registration (a grace period after the open). Without epoll,
        # also the time for that watch to take what waited unread meanwhile (TLS 1.3
        # session tickets) once it has waited IDLE_BEFORE_TAKING: that is its work.
        time.sleep(0.3 if hasattr(select, "epoll") else 1.0)
        # From now on the watch never judges the socket idle: it takes bytes only
        # after IDLE_BEFORE_TAKING (0.25 s) with no raw read, which a client
        # thread starved of CPU on a loaded machine can reach mid-loop; that
        # taking is the design (tests/test_peekwatch.py pins the rule).
        pysock._peekwatch.IDLE_BEFORE_TAKING = 3600.0
        calls.clear()
        for _ in range(500):
            sock.writable.write(b"x" * 99 + b"\\n")
            assert len(sock.readable.readline()) == 100
        sock.writable.write(b"y" * 5000)
        got = b""
        while len(got) < 5000:
            got += sock.readable.read1(100)
        print(tls, timeout, sum(calls.values()), dict(calls))
        if hasattr(select, "epoll"):
            assert not calls, (tls, timeout, dict(calls))
        else:
            # The idle watch without epoll wakes for readiness and peeks
            # (pysock._peekwatch), but takes no byte of a socket that is being read.
            moved = set(calls) & {"take_unread_in_loop", "recv_into", "_drain_idle_socket"}
            assert not moved, (tls, timeout, dict(calls))
        sock.close()
        peer.join(10)
        pysock._peekwatch.IDLE_BEFORE_TAKING = 0.25
# The profiler does see the selector thread: a new socket's idle watch is its work.
peer = threading.Thread(target=echo, args=(False,))
peer.start()
with pysock.connect(listener.getsockname()) as sock:
    sock.opened.result(10)
    time.sleep(0.3)
assert calls, "the profiler saw nothing on the selector thread"
peer.join(10)
listener.close()
print("ok")
"""


def test_reads_and_writes_never_hand_off_to_the_selector_thread() -> None:
    # With the data or the buffer space there, a read or a write runs in the caller's
    # thread: a hand-off to the selector thread would cost a wake-up and a GIL switch.
    # A profiler on the selector thread (set before it starts, so in a fresh
    # interpreter) sees no call of it during 500 round trips and buffered reads, plain
    # and TLS, with and without a timeout.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _NO_HAND_OFF], capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stdout.endswith(b"ok\n"), done.stdout + done.stderr


def test_forgotten_socket_warns_and_closes(serve: Callable[..., Server]) -> None:
    eof = threading.Event()

    def handler(conn: socket.socket) -> None:
        if conn.recv(10) == b"":
            eof.set()

    server = serve(handler)
    sock = connect(server.address)
    sock.opened.result(TIMEOUT)
    sync_loop()  # The loop thread may still be returning from completing `opened`.
    with pytest.warns(ResourceWarning, match="unclosed pysock socket"):
        del sock
        gc.collect()
    assert eof.wait(TIMEOUT)  # the peer saw the connection end


def test_a_readable_alone_keeps_its_socket_alive(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: conn.sendall(b"streamed body"))
    readable = connect(server.address).readable
    gc.collect()
    assert readable.read() == b"streamed body"
    # The peer's EOF ended the connection: dropping it releases the descriptor quietly.
    del readable
    gc.collect()


def test_an_ended_connection_is_released_without_warning(serve: Callable[..., Server]) -> None:
    server = serve(lambda conn: conn.sendall(b"done"))
    sock = connect(server.address)
    assert sock.readable.read() == b"done"
    assert sock.closed.result(TIMEOUT) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del sock
        gc.collect()


def test_the_loop_holds_no_strong_reference(echo_server: Server) -> None:
    import weakref

    sock = connect(echo_server.address)
    sock.opened.result(TIMEOUT)
    sync_loop()
    ref = weakref.ref(sock._connection)
    socket_ref = weakref.ref(sock)  # A Socket can be weakly referenced (caches, WeakSets).
    with warnings.catch_warnings():
        # Ignored, not recorded: a recorded warning keeps its `source` alive.
        warnings.simplefilter("ignore", ResourceWarning)
        del sock
        gc.collect()
    sync_loop()  # The finalizer queued the descriptor's release on the loop.
    assert ref() is None and socket_ref() is None


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_an_interrupt_stops_a_blocked_read_promptly(
    serve: Callable[..., Server], alarm: Callable[[float], None], timeout: float
) -> None:
    server = serve(lambda conn: conn.recv(10))
    with connect(server.address, timeout=timeout) as sock:
        sock.opened.result(TIMEOUT)
        started = time.monotonic()
        alarm(0.2)
        with pytest.raises(KeyboardInterrupt):
            sock.readable.read(1)
        assert time.monotonic() - started < 1.5
        sock.writable.write(b"the socket still works")


def test_an_interrupt_mid_write_breaks_the_socket(
    serve: Callable[..., Server], alarm: Callable[[float], None]
) -> None:
    release = threading.Event()
    server = serve(lambda conn: release.wait(TIMEOUT))
    payload = b"x" * 64 * 1024 * 1024  # Built first: on a loaded machine this alone took 0.2 s.
    with connect(server.address) as sock:
        sock.opened.result(TIMEOUT)
        alarm(0.2)
        with pytest.raises(KeyboardInterrupt):
            sock.writable.write(payload)
        assert isinstance(sock.closed.exception(TIMEOUT), ConnectionError)
    release.set()


def test_fork_child_gets_a_fresh_loop_and_leaves_the_parents_sockets(
    echo_server: Server,
) -> None:
    parent_sock = connect(echo_server.address)
    parent_sock.writable.write(b"before fork ")
    assert parent_sock.readable.readexactly(12) == b"before fork "
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a multi-threaded process (pysock's thread
        # runs): forking one is what this test checks.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        status = 1
        try:
            status = _child(parent_sock, echo_server.address)
        finally:
            os.write(write_end, bytes([status]))
            os._exit(status)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as report:
            reported = report.read(1)
        _, wait_status = os.waitpid(pid, 0)
        assert reported == b"\x00" and os.waitstatus_to_exitcode(wait_status) == 0
        # The child never shut the parent's connection down.
        parent_sock.writable.write(b"after fork")
        assert parent_sock.readable.readexactly(10) == b"after fork"
    finally:
        parent_sock.close()


def _child(inherited: Any, address: str) -> int:
    try:
        inherited.readable.read(1)
        return 2
    except SocketClosedError:
        pass
    try:
        inherited.writable.write(b"x")
        return 3
    except SocketClosedError:
        pass
    try:
        inherited.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        return 6
    except SocketClosedError:
        pass
    with connect(address) as fresh:
        fresh.writable.write(b"child")
        if fresh.readable.readexactly(5) != b"child":
            return 4
    if len(selector_threads()) != 1:
        return 5
    for call in (inherited.writable.flush, inherited.start_tls):
        try:
            call()
            return 7
        except SocketClosedError:
            pass
    inherited.close()
    if inherited.closed.result(0) is not None:  # Done when close() returns, as anywhere.
        return 8
    return 0


def test_close_from_a_done_callback(echo_server: Server) -> None:
    sock = connect(echo_server.address)
    done = threading.Event()

    def callback(future: object) -> None:
        sock.close()
        done.set()

    sock.opened.add_done_callback(callback)
    assert done.wait(TIMEOUT)
    assert sock.closed.done()
