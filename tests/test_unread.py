"""The reader's unread bytes seen from outside a read (pysock/_unread.py).

`SocketReader._unread` (what `start_tls()` checks) and
`SocketReader._take_unread_in_loop` (what the peek watch takes from an idle
socket, on platforms without epoll or kqueue), called from this thread on a
real loopback connection whose peer the test drives. On Linux the selector
thread never calls the second one (its epoll set reports a FIN behind unread
bytes), so it is tested here directly; tests/test_portable_watch.py runs it
through the loop under the windows-like profile.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator

import pytest

import pysock

# Without epoll or kqueue the loop's peek watch takes an idle socket's bytes
# itself, racing the test: tests/test_portable_watch.py covers that platform.
pytestmark = pytest.mark.skipif(
    not (hasattr(select, "epoll") or hasattr(select, "kqueue")),
    reason="the peek watch takes the bytes itself",
)

# Seconds for a blocking call: far above loopback's delay.
WAIT = 10.0
LIMIT = 64 * 1024


@contextlib.contextmanager
def adopted() -> Iterator[tuple[pysock.Socket, socket.socket]]:
    """A pysock socket over a loopback connection, and the peer's plain socket."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=WAIT)
        peer, _ = listener.accept()
    with peer, pysock.connect(sock=raw, timeout=WAIT) as sock:
        yield sock, peer


def kernel_holds(raw: socket.socket, size: int) -> bool:
    """True once `size` bytes wait in `raw`'s receive queue (a peek once readable)."""
    for _ in range(1000):
        readable, _, _ = select.select([raw], [], [], 0.01)
        if readable and len(raw.recv(size, socket.MSG_PEEK)) >= size:
            return True
    return False


def raw_of(sock: pysock.Socket) -> socket.socket:
    raw = sock._connection.sock
    assert raw is not None
    return raw


def test_unread_is_the_stash_and_the_buffer_never_the_kernel() -> None:
    with adopted() as (sock, peer):
        reader = sock.readable
        assert reader._unread() == b""  # No buffer yet.
        peer.sendall(b"one\ntwo\n")
        assert reader.readline() == b"one\n"  # The buffer now holds "two\n".
        peer.sendall(b"three\n")
        assert kernel_holds(raw_of(sock), 6)
        assert reader._unread() == b"two\n"  # The kernel's bytes are not read.
        assert reader.read(10) == b"two\nthree\n"


def test_unread_is_none_while_another_thread_reads() -> None:
    with adopted() as (sock, peer):
        reader = sock.readable
        with reader._lock:  # As a reader blocked in a call holds it.
            assert reader._unread() is None
            assert reader._take_unread_in_loop(raw_of(sock), LIMIT) is None
        peer.sendall(b"x\n")
        assert reader.readline() == b"x\n"


def test_taking_moves_the_buffer_and_the_kernels_bytes_into_the_stash_in_order() -> None:
    with adopted() as (sock, peer):
        reader = sock.readable
        peer.sendall(b"first\nsecond\n")
        assert reader.readline() == b"first\n"  # "second\n" waits in the buffer.
        peer.sendall(b"third\n")
        assert kernel_holds(raw_of(sock), 6)
        assert reader._take_unread_in_loop(raw_of(sock), LIMIT) is None
        assert reader._stash == b"second\nthird\n"
        assert reader._unread() == b"second\nthird\n"
        assert not reader._fast and not reader._fast_timed  # The stash is served first.
        peer.sendall(b"fourth\n")
        assert [reader.readline() for _ in range(3)] == [b"second\n", b"third\n", b"fourth\n"]


def test_taking_stops_at_the_limit_and_leaves_the_rest_in_the_kernel() -> None:
    with adopted() as (sock, peer):
        data = bytes(range(256)) * 40
        peer.sendall(data)
        assert kernel_holds(raw_of(sock), len(data))
        assert sock.readable._take_unread_in_loop(raw_of(sock), 1000) is None
        assert sock.readable._stash == data[:1000]
        assert sock.readable.readexactly(len(data)) == data


def test_taking_stops_at_the_fin() -> None:
    with adopted() as (sock, peer):
        peer.sendall(b"last words")
        peer.shutdown(socket.SHUT_WR)
        assert kernel_holds(raw_of(sock), 10)
        assert sock.readable._take_unread_in_loop(raw_of(sock), LIMIT) is None
        assert sock.readable._stash == b"last words"
        assert sock.readable.read() == b"last words"  # Then the FIN: EOF.


def test_a_closed_reader_gives_nothing() -> None:
    with adopted() as (sock, peer):
        peer.sendall(b"late")
        assert kernel_holds(raw_of(sock), 4)
        sock.readable.close()
        assert sock.readable._take_unread_in_loop(raw_of(sock), LIMIT) is None
        with pytest.raises(pysock.SocketClosedError):
            sock.readable.read(1)
