"""Bulk transfer: receive and send 512 MiB in 64 KiB calls, plaintext and TLS 1.3.

Timed from the command that starts the transfer to its end (the last byte
read; for sends, the peer's one-byte answer after the last byte arrived).
The connection (and handshake) is opened before the clock starts.

What each implementation runs, per 64 KiB:

* raw: ``sock.recv_into(buf)`` / ``sock.sendall(chunk)`` on a blocking
  `socket.socket` (an `ssl.SSLSocket` for TLS);
* pysock: ``sock.readable.readinto1(buf)`` (one socket call, like
  ``recv_into``); "pysock readinto" uses ``readinto(buf)`` instead;
  ``sock.writable.write(chunk)``;
* asyncio: ``await reader.read(65536)`` / ``writer.write(chunk); await writer.drain()``;
* trio: ``await stream.receive_some(65536)`` / ``await stream.send_all(chunk)``.

The "timeout=10" receive row runs raw on a socket with ``sock.settimeout(10)``
(a poll() before each ``recv_into``) and pysock opened with
``pysock.connect(addr, timeout=10)``, the same loops otherwise.
"""

from __future__ import annotations

import asyncio
import ssl
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
from bench.model import PYSOCK, RAW, Config, Goal, Measure, Row, interleave
from bench.peer import Peer, command, running_peer
from bench.tlsconf import TLSMaterial, client_context, make_material

MIB = 1024 * 1024
CALL_SIZE = 64 * 1024
FULL_SIZE = 512 * MIB
QUICK_SIZE = 32 * MIB
WARMUP_SIZE = 16 * MIB


def _rate(nbytes: int, seconds: float) -> float:
    return nbytes / MIB / seconds


def _check(total: int, size: int) -> None:
    if total != size:
        raise RuntimeError(f"transferred {total} bytes, expected {size}")


# -- receive ----------------------------------------------------------------------------


def raw_receive(
    peer: Peer, size: int, context: Optional[ssl.SSLContext], timeout: Optional[float] = None
) -> float:
    sock = raw_connect(peer.addr, context, timeout)
    try:
        buf = bytearray(CALL_SIZE)
        start = time.perf_counter()
        sock.sendall(command(b"R", size))
        total = 0
        while total < size:
            n = sock.recv_into(buf)
            if not n:
                break
            total += n
        seconds = time.perf_counter() - start
    finally:
        sock.close()
    _check(total, size)
    return _rate(size, seconds)


def pysock_receive(
    peer: Peer,
    size: int,
    context: Optional[ssl.SSLContext],
    method: str = "readinto1",
    timeout: Optional[float] = None,
) -> float:
    sock = pysock_connect(peer.address, context, timeout)
    try:
        buf = bytearray(CALL_SIZE)
        readable = sock.readable
        start = time.perf_counter()
        sock.writable.write(command(b"R", size))
        total = 0
        if method == "readinto":
            while total < size:
                n = readable.readinto(buf)
                if not n:
                    break
                total += n
        while total < size:
            n = readable.readinto1(buf)
            if not n:
                break
            total += n
        seconds = time.perf_counter() - start
    finally:
        sock.close()
    _check(total, size)
    return _rate(size, seconds)


async def _asyncio_receive(peer: Peer, size: int, context: Optional[ssl.SSLContext]) -> float:
    reader, writer = await asyncio_connect(peer.addr, context)
    try:
        start = time.perf_counter()
        writer.write(command(b"R", size))
        total = 0
        while total < size:
            data = await reader.read(CALL_SIZE)
            if not data:
                break
            total += len(data)
        seconds = time.perf_counter() - start
    finally:
        await asyncio_close(writer)
    _check(total, size)
    return _rate(size, seconds)


def asyncio_receive(peer: Peer, size: int, context: Optional[ssl.SSLContext]) -> float:
    return asyncio.run(_asyncio_receive(peer, size, context))


async def _trio_receive(peer: Peer, size: int, context: Optional[ssl.SSLContext]) -> float:
    stream = await trio_connect(peer.addr, context)
    try:
        start = time.perf_counter()
        await stream.send_all(command(b"R", size))
        total = 0
        while total < size:
            data = await stream.receive_some(CALL_SIZE)
            if not data:
                break
            total += len(data)
        seconds = time.perf_counter() - start
    finally:
        await trio_close(stream)
    _check(total, size)
    return _rate(size, seconds)


def trio_receive(peer: Peer, size: int, context: Optional[ssl.SSLContext]) -> float:
    trio = trio_module()
    result: float = trio.run(_trio_receive, peer, size, context)
    return result


# -- send -------------------------------------------------------------------------------


def raw_send(peer: Peer, size: int) -> float:
    sock = raw_connect(peer.addr)
    try:
        chunk = b"\xa5" * CALL_SIZE
        start = time.perf_counter()
        sock.sendall(command(b"S", size))
        for _ in range(size // CALL_SIZE):
            sock.sendall(chunk)
        answer = sock.recv(1)
        seconds = time.perf_counter() - start
    finally:
        sock.close()
    _check(len(answer) * size, size)
    return _rate(size, seconds)


def pysock_send(peer: Peer, size: int) -> float:
    sock = pysock_connect(peer.address)
    try:
        chunk = b"\xa5" * CALL_SIZE
        writable = sock.writable
        start = time.perf_counter()
        writable.write(command(b"S", size))
        for _ in range(size // CALL_SIZE):
            writable.write(chunk)
        answer = sock.readable.readexactly(1)
        seconds = time.perf_counter() - start
    finally:
        sock.close()
    _check(len(answer) * size, size)
    return _rate(size, seconds)


async def _asyncio_send(peer: Peer, size: int) -> float:
    reader, writer = await asyncio_connect(peer.addr)
    try:
        chunk = b"\xa5" * CALL_SIZE
        start = time.perf_counter()
        writer.write(command(b"S", size))
        for _ in range(size // CALL_SIZE):
            writer.write(chunk)
            await writer.drain()
        answer = await reader.readexactly(1)
        seconds = time.perf_counter() - start
    finally:
        await asyncio_close(writer)
    _check(len(answer) * size, size)
    return _rate(size, seconds)


def asyncio_send(peer: Peer, size: int) -> float:
    return asyncio.run(_asyncio_send(peer, size))


async def _trio_send(peer: Peer, size: int) -> float:
    stream = await trio_connect(peer.addr)
    try:
        chunk = b"\xa5" * CALL_SIZE
        start = time.perf_counter()
        await stream.send_all(command(b"S", size))
        for _ in range(size // CALL_SIZE):
            await stream.send_all(chunk)
        answer = await stream.receive_some(1)
        seconds = time.perf_counter() - start
    finally:
        await trio_close(stream)
    _check(len(answer) * size, size)
    return _rate(size, seconds)


def trio_send(peer: Peer, size: int) -> float:
    trio = trio_module()
    result: float = trio.run(_trio_send, peer, size)
    return result


# -- the cases ---------------------------------------------------------------------------


def _bind_all(
    functions: dict[str, Callable[..., float]], peer: Peer, size: int, *extra: Any
) -> dict[str, Measure]:
    return {impl: partial(function, peer, size, *extra) for impl, function in functions.items()}


def _receive_functions() -> dict[str, Callable[..., float]]:
    return {
        RAW: raw_receive,
        PYSOCK: pysock_receive,
        "pysock readinto": partial(pysock_receive, method="readinto"),
        "asyncio": asyncio_receive,
        "trio": trio_receive,
    }


def _throughput_row(key: str, title: str, series: Any, goal: Goal, note: str = "") -> Row:
    return Row(key, title, "MiB/s", "higher", series, goal, note=note)


def _plain_reps(cfg: Config) -> int:
    """Plaintext transfers take ~0.1 s each and swing most: two more repetitions."""
    return cfg.reps if cfg.quick else max(cfg.reps, 7)


def _size_label(size: int) -> str:
    return f"{size // MIB} MiB"


def case_receive(cfg: Config) -> list[Row]:
    """Receive 512 MiB of plaintext in 64 KiB reads."""
    size = cfg.size(FULL_SIZE, QUICK_SIZE)
    with running_peer("stream") as peer:
        series = interleave(
            _bind_all(_receive_functions(), peer, size, None),
            _plain_reps(cfg),
            _bind_all(_receive_functions(), peer, min(size, WARMUP_SIZE), None),
            "receive",
        )
    title = f"receive {_size_label(size)} plaintext, 64 KiB reads"
    return [_throughput_row("receive", title, series, Goal(">= 0.95", ">=", 0.95))]


def case_receive_timeout(cfg: Config) -> list[Row]:
    """Receive 512 MiB of plaintext in 64 KiB reads with timeout=10 (raw: settimeout(10))."""
    size = cfg.size(FULL_SIZE, QUICK_SIZE)
    functions: dict[str, Callable[..., float]] = {
        RAW: partial(raw_receive, timeout=TIMEOUT),
        PYSOCK: partial(pysock_receive, timeout=TIMEOUT),
    }
    with running_peer("stream") as peer:
        series = interleave(
            _bind_all(functions, peer, size, None),
            _plain_reps(cfg),
            _bind_all(functions, peer, min(size, WARMUP_SIZE), None),
            "receive timeout",
        )
    title = f"receive {_size_label(size)} plaintext, 64 KiB reads, timeout=10 (raw: settimeout)"
    return [_throughput_row("receive-timeout", title, series, Goal(">= 0.95", ">=", 0.95))]


def case_send(cfg: Config) -> list[Row]:
    """Send 512 MiB of plaintext in 64 KiB writes."""
    size = cfg.size(FULL_SIZE, QUICK_SIZE)
    functions: dict[str, Callable[..., float]] = {
        RAW: raw_send,
        PYSOCK: pysock_send,
        "asyncio": asyncio_send,
        "trio": trio_send,
    }
    with running_peer("stream") as peer:
        series = interleave(
            _bind_all(functions, peer, size),
            _plain_reps(cfg),
            _bind_all(functions, peer, min(size, WARMUP_SIZE)),
            "send",
        )
    title = f"send {_size_label(size)} plaintext, 64 KiB writes"
    return [_throughput_row("send", title, series, Goal(">= 0.95", ">=", 0.95))]


def case_tls_receive(cfg: Config, material: Optional[TLSMaterial] = None) -> list[Row]:
    """Receive 512 MiB over TLS 1.3 in 64 KiB reads; raw is `ssl.SSLSocket`."""
    size = cfg.size(FULL_SIZE, QUICK_SIZE)
    material = material or make_material()
    context = client_context(material)
    with running_peer("stream", tls=material) as peer:
        series = interleave(
            _bind_all(_receive_functions(), peer, size, context),
            cfg.reps,
            _bind_all(_receive_functions(), peer, min(size, WARMUP_SIZE), context),
            "tls receive",
        )
    title = f"receive {_size_label(size)} over TLS 1.3, 64 KiB reads (raw = ssl.SSLSocket)"
    return [_throughput_row("tls-receive", title, series, Goal(">= 0.95", ">=", 0.95))]
