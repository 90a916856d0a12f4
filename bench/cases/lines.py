"""readline() over short (20-byte) lines, without and with a timeout, in lines per second.

* raw: ``f = sock.makefile("rb", buffering=65536)``, then ``f.readline()``
  (the same 64 KiB buffer as pysock's reader; ``makefile('rb')``'s default
  is 8 KiB); with a timeout the socket has ``sock.settimeout(10)``;
* raw + lock: the same, each ``readline()`` inside ``with lock:``, as a
  caller needs it to read one file from several threads (pysock's reader
  takes its lock in every call: ``io.BufferedReader`` alone can lose bytes
  when two threads read at once);
* pysock: ``sock.readable.readline()`` on ``pysock.connect(addr)`` or
  ``pysock.connect(addr, timeout=10)``;
* asyncio: ``await reader.readline()``; with a timeout each call is inside
  ``async with asyncio.timeout(10)`` (``asyncio.wait_for`` before 3.11);
* trio: trio has no line reader in its API, so `TrioLineReader` below is what
  a trio user writes: ``receive_some(65536)`` into a bytearray and
  ``find(b"\\n")`` in it; with a timeout each call is inside
  ``with trio.fail_after(10)``.

The asyncio and trio lines are there for scale: the goals compare pysock
with raw.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from functools import partial
from typing import Any, Callable, Optional

from bench.cases._common import (
    TIMEOUT,
    asyncio_close,
    asyncio_connect,
    pysock_connect,
    raw_connect,
    trio_close,
    trio_connect,
    trio_module,
)
from bench.model import PYSOCK, RAW, Config, Goal, Row, Series, interleave
from bench.peer import LINE_TEMPLATE, Peer, command, running_peer

BUFFER_SIZE = 64 * 1024
TRIO_NOTE = "trio: a receive_some + find(b'\\n') loop, as a trio user writes it (no readline)"

Timeout = Optional[float]


def _check(last: bytes, count: int) -> None:
    if last != LINE_TEMPLATE % (count - 1):
        raise RuntimeError(f"unexpected last line {last!r}")


def raw_lines(peer: Peer, count: int, timeout: Timeout, locked: bool = False) -> float:
    """``makefile('rb').readline()`` per line; `locked` holds a lock around each."""
    sock = raw_connect(peer.addr, timeout=timeout)
    lock = threading.Lock()
    try:
        file = sock.makefile("rb", buffering=BUFFER_SIZE)
        start = time.perf_counter()
        sock.sendall(command(b"L", count))
        line = b""
        if locked:
            for _ in range(count):
                with lock:
                    line = file.readline()
        else:
            for _ in range(count):
                line = file.readline()
        seconds = time.perf_counter() - start
        file.close()
    finally:
        sock.close()
    _check(line, count)
    return count / seconds


def pysock_lines(peer: Peer, count: int, timeout: Timeout) -> float:
    """``sock.readable.readline()`` per line."""
    sock = pysock_connect(peer.address, timeout=timeout)
    try:
        readable = sock.readable
        start = time.perf_counter()
        sock.writable.write(command(b"L", count))
        line = b""
        for _ in range(count):
            line = readable.readline()
        seconds = time.perf_counter() - start
    finally:
        sock.close()
    _check(line, count)
    return count / seconds


async def _asyncio_lines(peer: Peer, count: int, timeout: Timeout) -> float:
    reader, writer = await asyncio_connect(peer.addr)
    try:
        readline = reader.readline
        start = time.perf_counter()
        writer.write(command(b"L", count))
        line = b""
        if timeout is None:
            for _ in range(count):
                line = await readline()
        elif sys.version_info >= (3, 11):
            for _ in range(count):
                async with asyncio.timeout(timeout):
                    line = await readline()
        else:
            for _ in range(count):
                line = await asyncio.wait_for(readline(), timeout)
        seconds = time.perf_counter() - start
    finally:
        await asyncio_close(writer)
    _check(line, count)
    return count / seconds


def asyncio_lines(peer: Peer, count: int, timeout: Timeout) -> float:
    return asyncio.run(_asyncio_lines(peer, count, timeout))


class TrioLineReader:
    """Lines from a trio stream, buffered in Python: trio's API has no readline."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._searched = 0  # The buffer's first bytes, known to hold no b"\n".

    async def readline(self) -> bytes:
        """The next line with its b"\\n"; the last bytes without one at EOF."""
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n", self._searched) + 1
            if end:
                line = bytes(buffer[:end])
                del buffer[:end]  # O(1) at the front of a bytearray.
                self._searched = 0
                return line
            self._searched = len(buffer)
            data = await self._stream.receive_some(BUFFER_SIZE)
            if not data:
                line = bytes(buffer)
                buffer.clear()
                return line
            buffer += data


async def _trio_lines(peer: Peer, count: int, timeout: Timeout) -> float:
    trio = trio_module()
    stream = await trio_connect(peer.addr)
    try:
        readline = TrioLineReader(stream).readline
        start = time.perf_counter()
        await stream.send_all(command(b"L", count))
        line = b""
        if timeout is None:
            for _ in range(count):
                line = await readline()
        else:
            for _ in range(count):
                with trio.fail_after(timeout):
                    line = await readline()
        seconds = time.perf_counter() - start
    finally:
        await trio_close(stream)
    _check(line, count)
    return count / seconds


def trio_lines(peer: Peer, count: int, timeout: Timeout) -> float:
    result: float = trio_module().run(_trio_lines, peer, count, timeout)
    return result


FUNCTIONS: dict[str, Callable[[Peer, int, Timeout], float]] = {
    RAW: raw_lines,
    "raw + a lock per readline": partial(raw_lines, locked=True),
    PYSOCK: pysock_lines,
    "asyncio": asyncio_lines,
    "trio": trio_lines,
}


def _series(cfg: Config, count: int, timeout: Timeout, label: str) -> list[Series]:
    warm = 50_000
    with running_peer("stream", line_counts=(count, warm)) as peer:
        return interleave(
            {impl: partial(f, peer, count, timeout) for impl, f in FUNCTIONS.items()},
            cfg.reps,
            {impl: partial(f, peer, warm, timeout) for impl, f in FUNCTIONS.items()},
            label,
        )


def case_readline(cfg: Config) -> list[Row]:
    """readline() over 1,000,000 short lines, timeout=None."""
    count = cfg.size(1_000_000, 100_000)
    series = _series(cfg, count, None, "readline")
    title = f"readline() over {count:,} short lines (raw = makefile('rb'), 64 KiB buffer)"
    goal = Goal(">= 0.90", ">=", 0.90)
    return [Row("readline", title, "lines/s", "higher", series, goal, note=TRIO_NOTE)]


def case_readline_timeout(cfg: Config) -> list[Row]:
    """readline() over 200,000 short lines with timeout=10 (raw: settimeout(10))."""
    count = cfg.size(200_000, 20_000)
    series = _series(cfg, count, TIMEOUT, "readline timeout")
    title = (
        f"readline(), timeout=10, over {count:,} short lines "
        "(raw = makefile('rb') with settimeout(10))"
    )
    note = f"asyncio: asyncio.timeout(10) per line; trio: fail_after(10) per line; {TRIO_NOTE}"
    goal = Goal(">= 0.50", ">=", 0.50)
    return [Row("readline-timeout", title, "lines/s", "higher", series, goal, note=note)]
