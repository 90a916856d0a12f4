"""readuntil(b"\\r\\n") and readexactly(n), without and with a timeout, in records per second.

Each row runs its implementations with the same timeout: none (raw in
blocking mode, ``pysock.connect(addr)``) or 10 s (raw with
``sock.settimeout(10)``, ``pysock.connect(addr, timeout=10)``). raw reads
through ``f = sock.makefile("rb", buffering=65536)``, the same 64 KiB buffer
as pysock's reader.

* readuntil: the peer sends short CRLF lines (21 bytes, as SMTP or Redis
  replies);
  - raw: ``f.readline()``: the separator ends in ``b"\\n"``, so the line ends
    where readuntil's does. It checks neither the ``b"\\r"`` nor a limit, so
    it does less than ``readuntil``;
  - pysock: ``sock.readable.readuntil(b"\\r\\n")``;
  - asyncio (for scale): ``await reader.readuntil(b"\\r\\n")``, inside
    ``async with asyncio.timeout(10)`` per call for the timeout row.
* readexactly(n), n = 20 (a short fixed-size record, a frame header) and
  4096 (a page-sized record): the peer sends ``count * n`` bytes;
  - raw: ``record = f.read(n)``, then ``if len(record) < n: raise EOFError``
    (readexactly's contract);
  - pysock: ``sock.readable.readexactly(n)``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from functools import partial
from typing import Any, Callable, Optional

from bench.cases._common import (
    TIMEOUT,
    asyncio_close,
    asyncio_connect,
    pysock_connect,
    raw_connect,
)
from bench.model import PYSOCK, RAW, Config, Goal, Row, Series, interleave
from bench.peer import CRLF_LINE_TEMPLATE, Peer, command, running_peer

BUFFER_SIZE = 64 * 1024
CRLF = b"\r\n"
RECORD = b"\x5a"  # What the peer's ``R`` command sends, byte after byte.
WARM_COUNT = 20_000
GOAL = Goal(">= 0.50", ">=", 0.50)

Timeout = Optional[float]


def _check(last: bytes, expected: bytes) -> None:
    if last != expected:
        raise RuntimeError(f"unexpected last record {last[:40]!r}, expected {expected[:40]!r}")


# -- readuntil(b"\r\n") ------------------------------------------------------------------


def raw_readuntil(peer: Peer, count: int, timeout: Timeout) -> float:
    """``makefile('rb').readline()`` per CRLF line."""
    sock = raw_connect(peer.addr, timeout=timeout)
    try:
        file = sock.makefile("rb", buffering=BUFFER_SIZE)
        start = time.perf_counter()
        sock.sendall(command(b"C", count))
        line = b""
        for _ in range(count):
            line = file.readline()
        seconds = time.perf_counter() - start
        file.close()
    finally:
        sock.close()
    _check(line, CRLF_LINE_TEMPLATE % (count - 1))
    return count / seconds


def pysock_readuntil(peer: Peer, count: int, timeout: Timeout) -> float:
    """``sock.readable.readuntil(b"\\r\\n")`` per CRLF line."""
    sock = pysock_connect(peer.address, timeout=timeout)
    try:
        readable = sock.readable
        start = time.perf_counter()
        sock.writable.write(command(b"C", count))
        line = b""
        for _ in range(count):
            line = readable.readuntil(CRLF)
        seconds = time.perf_counter() - start
    finally:
        sock.close()
    _check(line, CRLF_LINE_TEMPLATE % (count - 1))
    return count / seconds


async def _asyncio_readuntil(peer: Peer, count: int, timeout: Timeout) -> float:
    reader, writer = await asyncio_connect(peer.addr)
    try:
        readuntil = reader.readuntil
        start = time.perf_counter()
        writer.write(command(b"C", count))
        line = b""
        if timeout is None:
            for _ in range(count):
                line = await readuntil(CRLF)
        elif sys.version_info >= (3, 11):
            for _ in range(count):
                async with asyncio.timeout(timeout):
                    line = await readuntil(CRLF)
        else:
            for _ in range(count):
                line = await asyncio.wait_for(readuntil(CRLF), timeout)
        seconds = time.perf_counter() - start
    finally:
        await asyncio_close(writer)
    _check(line, CRLF_LINE_TEMPLATE % (count - 1))
    return count / seconds


def asyncio_readuntil(peer: Peer, count: int, timeout: Timeout) -> float:
    return asyncio.run(_asyncio_readuntil(peer, count, timeout))


# -- readexactly(n) ------------------------------------------------------------------------


def raw_readexactly(peer: Peer, count: int, size: int, timeout: Timeout) -> float:
    """``makefile('rb').read(size)`` and a length check per record."""
    sock = raw_connect(peer.addr, timeout=timeout)
    try:
        file = sock.makefile("rb", buffering=BUFFER_SIZE)
        start = time.perf_counter()
        sock.sendall(command(b"R", count * size))
        record = b""
        for _ in range(count):
            record = file.read(size)
            if len(record) < size:
                raise EOFError(f"EOF after {len(record)} of {size} bytes")
        seconds = time.perf_counter() - start
        file.close()
    finally:
        sock.close()
    _check(record, RECORD * size)
    return count / seconds


def pysock_readexactly(peer: Peer, count: int, size: int, timeout: Timeout) -> float:
    """``sock.readable.readexactly(size)`` per record."""
    sock = pysock_connect(peer.address, timeout=timeout)
    try:
        readable = sock.readable
        start = time.perf_counter()
        sock.writable.write(command(b"R", count * size))
        record = b""
        for _ in range(count):
            record = readable.readexactly(size)
        seconds = time.perf_counter() - start
    finally:
        sock.close()
    _check(record, RECORD * size)
    return count / seconds


# -- the cases -----------------------------------------------------------------------------

Function = Callable[..., float]


def _interleave(
    cfg: Config, functions: dict[str, Function], args: tuple[Any, ...], label: str
) -> list[Series]:
    """Interleave `functions` on (peer, count, *rest of args); warm up on WARM_COUNT records."""
    peer, count, *rest = args
    return interleave(
        {impl: partial(f, peer, count, *rest) for impl, f in functions.items()},
        cfg.reps,
        {impl: partial(f, peer, min(count, WARM_COUNT), *rest) for impl, f in functions.items()},
        label,
    )


def _with(timeout: Timeout) -> str:
    return "timeout=None" if timeout is None else f"timeout={TIMEOUT:g} (raw: settimeout)"


def case_readuntil(cfg: Config) -> list[Row]:
    """readuntil(b"\\r\\n") over 300,000 CRLF lines, without and with timeout=10."""
    count = cfg.size(300_000, 30_000)
    functions: dict[str, Function] = {
        RAW: raw_readuntil,
        PYSOCK: pysock_readuntil,
        "asyncio": asyncio_readuntil,
    }
    rows = []
    with running_peer("stream", crlf_line_counts=(count, min(count, WARM_COUNT))) as peer:
        for timeout, key in ((None, "readuntil"), (TIMEOUT, "readuntil-timeout")):
            series = _interleave(cfg, functions, (peer, count, timeout), key)
            title = (
                f'readuntil(b"\\r\\n"), {_with(timeout)}, over {count:,} CRLF lines '
                "(raw = makefile('rb').readline())"
            )
            rows.append(Row(key, title, "lines/s", "higher", series, GOAL))
    return rows


def case_readexactly(cfg: Config) -> list[Row]:
    """readexactly(20) and readexactly(4096), without and with timeout=10."""
    functions: dict[str, Function] = {RAW: raw_readexactly, PYSOCK: pysock_readexactly}
    rows = []
    with running_peer("stream") as peer:
        for size, full, quick in ((20, 500_000, 50_000), (4096, 100_000, 10_000)):
            count = cfg.size(full, quick)
            for timeout in (None, TIMEOUT):
                key = f"readexactly-{size}" + ("" if timeout is None else "-timeout")
                series = _interleave(cfg, functions, (peer, count, size, timeout), key)
                title = (
                    f"readexactly({size}), {_with(timeout)}, {count:,} records "
                    "(raw = makefile('rb').read(n) + a length check)"
                )
                rows.append(Row(key, title, "records/s", "higher", series, GOAL))
    return rows
