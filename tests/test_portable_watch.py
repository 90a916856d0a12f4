"""The idle hang-up watch steals no byte and does not spin while unread bytes wait.

A thousand idle sockets each hold a few bytes in the kernel that nobody reads.
Epoll's ``EPOLLRDHUP`` never wakes for data; a portable watch (readiness plus
``recv(MSG_PEEK)``, tests/portable) is woken by the same data again and again
unless it stops looking at a socket whose data it has seen. Either way the
selector thread must stay nearly idle for 2 s, and every byte must still be
there to read. No watch at all would pass that too, so the second test ends
half of the connections with their bytes still unread: those, and only those,
complete ``closed`` with nobody reading. Both run unchanged under ``make test``
(epoll) and under both simulated profiles (``make test-portable``).
"""

from __future__ import annotations

import concurrent.futures
import os
import resource
import select
import socket
import threading
import time
from typing import Final, Iterator

import pytest

from pysock import Socket, connect

from .helpers import sync_loop

SOCKETS: Final = 1000  # The number.
# select() only (windows-like): CPython's Windows build takes 512 sockets per
# select() call, and on Linux select() takes only descriptors below FD_SETSIZE
# (1024), where each socket here takes three (`PER_SOCKET_FDS`): 300 sockets
# leave room for pytest's own.
SELECT_SOCKETS: Final = 300
FD_SETSIZE: Final = 1024
PER_SOCKET_FDS: Final = 3  # Under select(): ours, the server's side, the watch's.
SPARE_FDS: Final = 100  # pytest, the loop's wake-up pair, the listener, the server threads.
WINDOW: Final = 2.0  # Seconds the bytes sit unread while the loop thread is timed.
# CPU seconds the loop thread may use in WINDOW: epoll uses none; a watch that
# peeks every readable socket on every wake-up uses all of WINDOW.
CPU_BOUND: Final = 0.2
TIMEOUT: Final = 30.0  # Any blocking call here: generous on a loaded 2-core machine.
# Seconds after the opening before anything is measured: the watch takes the
# sockets in (pysock._loop.HANGUP_GRACE) and has looked at their bytes.
SETTLE: Final = 0.5
# Seconds for every FIN to complete `closed`: milliseconds with epoll, and a
# watch that looks again with a back-off sees one within its longest back-off.
HANGUP_BOUND: Final = 10.0


def _payload(index: int) -> bytes:
    return b"unread bytes of socket %04d\n" % index


def _loop_cpu_seconds() -> float:
    """CPU time (user + system) the selector thread has used, read from another thread."""
    (loop,) = [thread for thread in threading.enumerate() if thread.name == "pysock-selector"]
    assert loop.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(loop.ident))


@pytest.fixture
def socket_count() -> Iterator[int]:
    """How many connections fit: RLIMIT_NOFILE's soft limit raised as far as needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))  # New descriptors take the lowest free numbers.
    count = SOCKETS
    if not hasattr(select, "poll"):
        count = min(SELECT_SOCKETS, (FD_SETSIZE - in_use - SPARE_FDS) // PER_SOCKET_FDS)
    needed = in_use + PER_SOCKET_FDS * count + SPARE_FDS
    if needed > soft:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        count = min(count, (raised - in_use - SPARE_FDS) // PER_SOCKET_FDS)
    try:
        yield count
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open(listener: socket.socket, count: int) -> tuple[list[Socket], list[socket.socket]]:
    """`count` pysock sockets, each sent its payload by the server's side, which is kept."""
    host, port = listener.getsockname()
    address = f"{host}:{port}"
    sockets: list[Socket] = []
    peers: list[socket.socket] = []
    try:
        for index in range(count):
            sockets.append(connect(address, timeout=TIMEOUT))
            peer, _ = listener.accept()  # One at a time: the index is the same on both sides.
            peers.append(peer)
            peer.settimeout(TIMEOUT)
            peer.sendall(_payload(index))
        for sock in sockets:
            sock.opened.result(TIMEOUT)
    except BaseException:
        _close(sockets, peers)
        raise
    return sockets, peers


def _close(sockets: list[Socket], peers: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
    for peer in peers:
        peer.close()


@pytest.fixture
def idle_sockets(socket_count: int) -> Iterator[tuple[list[Socket], list[socket.socket]]]:
    """Idle pysock sockets, each with its payload unread, and the server's sides."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        listener.settimeout(TIMEOUT)
        sockets, peers = _open(listener, socket_count)
    try:
        threading.Event().wait(SETTLE)
        sync_loop()
        yield sockets, peers
    finally:
        _close(sockets, peers)


def test_unread_bytes_on_1000_idle_sockets_cost_the_loop_no_cpu(
    idle_sockets: tuple[list[Socket], list[socket.socket]],
) -> None:
    sockets, _ = idle_sockets
    before = _loop_cpu_seconds()
    threading.Event().wait(WINDOW)  # Nobody reads, nobody writes.
    used = _loop_cpu_seconds() - before
    print(f"\n{len(sockets)} idle sockets with unread bytes: loop thread {used:.4f} CPU s")
    assert used < CPU_BOUND, f"the loop thread spun: {used:.3f} CPU s in {WINDOW} s"
    assert not any(sock.closed.done() for sock in sockets)  # Data is no hang-up.
    for index, sock in enumerate(sockets):  # No byte stolen.
        assert sock.readable.readexactly(len(_payload(index))) == _payload(index)


def test_a_fin_behind_unread_bytes_completes_closed_on_1000_idle_sockets(
    idle_sockets: tuple[list[Socket], list[socket.socket]],
) -> None:
    # The watch has seen the bytes (SETTLE) when the FIN comes behind them: `closed`
    # completes with nobody reading, and the bytes stay readable.
    sockets, peers = idle_sockets
    for peer in peers[::2]:
        peer.shutdown(socket.SHUT_WR)
    ended, kept = sockets[::2], sockets[1::2]
    start = time.monotonic()
    _, pending = concurrent.futures.wait([s.closed for s in ended], timeout=HANGUP_BOUND)
    print(f"\n{len(ended)} FINs behind unread bytes: closed in {time.monotonic() - start:.2f} s")
    assert not pending, f"{len(pending)} of {len(ended)} FINs behind unread bytes not seen"
    assert [sock.closed.result(0) for sock in ended] == [None] * len(ended)
    sync_loop()
    assert not any(sock.closed.done() for sock in kept)
    for index, sock in enumerate(sockets):
        assert sock.readable.readexactly(len(_payload(index))) == _payload(index)
    assert all(sock.readable.read(1) == b"" for sock in ended)
