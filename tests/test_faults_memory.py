"""Fault injection: a fast sender and a slow reader, and the memory pysock holds
meanwhile (see tests/peers/faults.py and docs/reliability.md)."""

from __future__ import annotations

import hashlib
import io
import socket
import sys
import threading
import time
from typing import Callable

import pytest

from pysock._reader import READ_BUFFER_SIZE
from pysock._tls import _CIPHER_BUFFER_SIZE, TlsConnection

from .helpers import WAKE, drain
from .peers.faults import MiB, Transport

# Fixtures, taken by name: the redundant alias tells linters they are used.
from .peers.faults import transport as transport
from .peers.tcp import Server

pytestmark = pytest.mark.fault


# Largest TLS ciphertext record: header + 2**14 bytes + 256 of expansion (RFC 8446 5.2).
MAX_RECORD = 5 + 2**14 + 256


# -- a fast sender and a slow reader: memory stays bounded ---------------------------------


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class _Peaks:
    """The largest buffer sizes sampled, in the steady state and overall."""

    def __init__(self) -> None:
        self.rss = 0
        self.steady_plain = self.steady_incoming = 0
        self.plain = self.incoming = 0
        self.rcvbuf = 0

    def sample(self, connection: object, ending: threading.Event) -> None:
        self.rss = max(self.rss, _rss())
        if not isinstance(connection, TlsConnection):
            return
        records = connection._records
        plain, incoming = records.unread, records._incoming.pending
        sock = connection.sock
        if sock is not None and sock.fileno() >= 0:
            rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.rcvbuf = max(self.rcvbuf, rcvbuf)
        self.plain, self.incoming = max(self.plain, plain), max(self.incoming, incoming)
        if not ending.is_set():  # checked after sampling: the peer had not hung up yet
            self.steady_plain = max(self.steady_plain, plain)
            self.steady_incoming = max(self.steady_incoming, incoming)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("transport", ["tcp", "tls1.3"], indirect=True)
def test_fast_sender_slow_reader_memory_stays_bounded(
    serve: Callable[..., Server], transport: Transport
) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    blocks = 64
    ending = threading.Event()

    def peer(conn: socket.socket) -> None:
        channel = transport.channel(conn)
        for _ in range(blocks):
            channel.send(block)
        ending.set()
        channel.end()
        drain(conn)

    expected = hashlib.sha256()
    for _ in range(blocks):
        expected.update(block)
    reader_cap = sys.getsizeof(io.BufferedReader(io.BytesIO(), READ_BUFFER_SIZE))
    server = serve(peer)
    peaks = _Peaks()
    with transport.connect(server.address) as sock:
        sock.opened.result(WAKE)
        baseline = _rss()
        digest = hashlib.sha256()
        total = 0
        started = time.monotonic()
        for count in range(2 * blocks * MiB // READ_BUFFER_SIZE):  # bounded
            data = sock.readable.read(READ_BUFFER_SIZE)
            if not data:
                break
            digest.update(data)
            total += len(data)
            if count % 16 == 0:
                time.sleep(0.002)  # the slow part: the sender is blocked most of the time
            buffer = sock.readable._buffer  # io.BufferedReader never grows its buffer
            assert buffer is not None and sys.getsizeof(buffer) <= reader_cap
            peaks.sample(sock._connection, ending)
            assert time.monotonic() - started < 30
        assert total == blocks * MiB and digest.digest() == expected.digest()
        assert sock.readable.read() == b""
        assert sock.closed.result(WAKE) is None
    assert peaks.rss - baseline < 32 * MiB
    # While the data flows, a TLS reader receives ciphertext only when the BIO
    # lacks a whole record, and only the selector thread fills `_plain`.
    assert peaks.steady_incoming <= _CIPHER_BUFFER_SIZE + MAX_RECORD
    assert peaks.steady_plain <= _CIPHER_BUFFER_SIZE
    # At the peer's hang-up the selector thread drains what the kernel holds (to
    # find close_notify behind it) into the BIO, then decrypts it into `_plain`: both
    # are bounded by the kernel's receive buffer, never by the 64 MiB sent.
    assert peaks.incoming <= peaks.rcvbuf + _CIPHER_BUFFER_SIZE + MAX_RECORD
    assert peaks.plain <= max(peaks.rcvbuf, _CIPHER_BUFFER_SIZE)
