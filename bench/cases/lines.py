"""readline() over 1,000,000 short (20-byte) lines, reported in lines per second.

* raw: ``f = sock.makefile("rb", buffering=65536)``, then ``f.readline()``
  (the same 64 KiB buffer as pysock's reader; ``makefile('rb')``'s default
  is 8 KiB);
* raw + lock: the same, each ``readline()`` inside ``with lock:``, as a
  caller needs it to read one file from several threads (pysock's reader
  takes its lock in every call: ``io.BufferedReader`` alone can lose bytes
  when two threads read at once);
* pysock: ``sock.readable.readline()``;
* asyncio: ``await reader.readline()``.

trio has no line reader in its API, so it has no row here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial
from typing import Callable

from bench.cases._common import asyncio_close, asyncio_connect, pysock_connect, raw_connect
from bench.model import PYSOCK, RAW, Config, Goal, Row, interleave
from bench.peer import LINE_TEMPLATE, Peer, command, running_peer

BUFFER_SIZE = 64 * 1024


def _check(last: bytes, count: int) -> None:
    if last != LINE_TEMPLATE % (count - 1):
        raise RuntimeError(f"unexpected last line {last!r}")


def raw_lines(peer: Peer, count: int, locked: bool = False) -> float:
    """``makefile('rb').readline()`` per line; `locked` holds a lock around each."""
    sock = raw_connect(peer.addr)
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


def pysock_lines(peer: Peer, count: int) -> float:
    """``sock.readable.readline()`` per line."""
    sock = pysock_connect(peer.address)
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


async def _asyncio_lines(peer: Peer, count: int) -> float:
    reader, writer = await asyncio_connect(peer.addr)
    try:
        readline = reader.readline
        start = time.perf_counter()
        writer.write(command(b"L", count))
        line = b""
        for _ in range(count):
            line = await readline()
        seconds = time.perf_counter() - start
    finally:
        await asyncio_close(writer)
    _check(line, count)
    return count / seconds


def asyncio_lines(peer: Peer, count: int) -> float:
    return asyncio.run(_asyncio_lines(peer, count))


FUNCTIONS: dict[str, Callable[[Peer, int], float]] = {
    RAW: raw_lines,
    "raw + a lock per readline": partial(raw_lines, locked=True),
    PYSOCK: pysock_lines,
    "asyncio": asyncio_lines,
}


def case_readline(cfg: Config) -> list[Row]:
    """readline() over 1,000,000 short lines."""
    count = cfg.size(1_000_000, 100_000)
    warm = 50_000
    with running_peer("stream", line_counts=(count, warm)) as peer:
        series = interleave(
            {impl: partial(f, peer, count) for impl, f in FUNCTIONS.items()},
            cfg.reps,
            {impl: partial(f, peer, warm) for impl, f in FUNCTIONS.items()},
            "readline",
        )
    title = f"readline() over {count:,} short lines (raw = makefile('rb'), 64 KiB buffer)"
    return [Row("readline", title, "lines/s", "higher", series, Goal(">= 0.90", ">=", 0.90))]
