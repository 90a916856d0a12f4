"""64-byte request/response round trips: p50 and p99, alone and beside a busy thread.

One round trip is timed from before the write to after the full answer:

* raw: ``sock.sendall(msg)`` then ``recv_into`` until 64 bytes (blocking socket);
* pysock: ``sock.writable.write(msg)`` then ``sock.readable.readexactly(64)``;
* asyncio: ``writer.write(msg); await writer.drain(); await reader.readexactly(64)``;
* trio: ``await stream.send_all(msg)`` then ``receive_some`` until 64 bytes.

The "timeout=10" variant runs raw on a socket with ``sock.settimeout(10)``
and pysock opened with ``pysock.connect(addr, timeout=10)``, the same loops
otherwise.

The peer echoes every 64-byte message. In the "busy" variant one more
Python thread spins on pure-Python work (it holds the GIL whenever it can)
for the whole measurement: the switch interval (5 ms by default) then
dominates every implementation's latency, and the question is whether pysock
adds GIL hand-offs of its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from bench.model import PYSOCK, RAW, Config, Goal, Row, Series, interleave, percentile
from bench.peer import Peer, command, running_peer

SIZE = 64
WARMUP_ROUNDS = 200

Samples = list[float]  # Seconds, one per round trip.


def raw_rounds(peer: Peer, rounds: int, timeout: Optional[float] = None) -> Samples:
    sock = raw_connect(peer.addr, timeout=timeout)
    try:
        sock.sendall(command(b"E", SIZE))
        message = b"q" * SIZE
        answer = bytearray(SIZE)
        view = memoryview(answer)
        samples = []
        clock = time.perf_counter
        for _ in range(rounds):
            start = clock()
            sock.sendall(message)
            got = 0
            while got < SIZE:
                n = sock.recv_into(view[got:])
                if not n:
                    raise EOFError("the echo peer closed")
                got += n
            samples.append(clock() - start)
    finally:
        sock.close()
    return samples


def pysock_rounds(peer: Peer, rounds: int, timeout: Optional[float] = None) -> Samples:
    sock = pysock_connect(peer.address, timeout=timeout)
    try:
        readable, writable = sock.readable, sock.writable
        writable.write(command(b"E", SIZE))
        message = b"q" * SIZE
        samples = []
        clock = time.perf_counter
        for _ in range(rounds):
            start = clock()
            writable.write(message)
            readable.readexactly(SIZE)
            samples.append(clock() - start)
    finally:
        sock.close()
    return samples


async def _asyncio_rounds(peer: Peer, rounds: int) -> Samples:
    reader, writer = await asyncio_connect(peer.addr)
    try:
        writer.write(command(b"E", SIZE))
        message = b"q" * SIZE
        samples = []
        clock = time.perf_counter
        for _ in range(rounds):
            start = clock()
            writer.write(message)
            await writer.drain()
            await reader.readexactly(SIZE)
            samples.append(clock() - start)
    finally:
        await asyncio_close(writer)
    return samples


def asyncio_rounds(peer: Peer, rounds: int) -> Samples:
    return asyncio.run(_asyncio_rounds(peer, rounds))


async def _trio_rounds(peer: Peer, rounds: int) -> Samples:
    stream = await trio_connect(peer.addr)
    try:
        await stream.send_all(command(b"E", SIZE))
        message = b"q" * SIZE
        samples = []
        clock = time.perf_counter
        for _ in range(rounds):
            start = clock()
            await stream.send_all(message)
            got = 0
            while got < SIZE:
                data = await stream.receive_some(SIZE - got)
                if not data:
                    raise EOFError("the echo peer closed")
                got += len(data)
            samples.append(clock() - start)
    finally:
        await trio_close(stream)
    return samples


def trio_rounds(peer: Peer, rounds: int) -> Samples:
    result: Samples = trio_module().run(_trio_rounds, peer, rounds)
    return result


FUNCTIONS: dict[str, Callable[[Peer, int], Samples]] = {
    RAW: raw_rounds,
    PYSOCK: pysock_rounds,
    "asyncio": asyncio_rounds,
    "trio": trio_rounds,
}


def _spin(stop: threading.Event, running: threading.Event) -> None:
    """Pure-Python work that wants the GIL all the time (checks `stop` every 10,000 steps)."""
    total = 0
    while not stop.is_set():
        for i in range(10_000):
            total += i * i
        running.set()


@contextmanager
def _busy_thread(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    stop, running = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=_spin, args=(stop, running), name="bench-cpu-bound", daemon=True
    )
    thread.start()
    # Let it settle into holding the GIL: right after start() the main thread can keep
    # winning the GIL back for a while, and the case would measure an idle process.
    running.wait(5)
    time.sleep(0.05)
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


class _Collector:
    """Turns each repetition's samples into its p50 and p99 (microseconds)."""

    def __init__(self) -> None:
        self.p50: dict[str, list[float]] = {}
        self.p99: dict[str, list[float]] = {}

    def measure(
        self,
        function: Callable[[Peer, int], Samples],
        peer: Peer,
        rounds: int,
        impl: str,
        busy: bool,
    ) -> float:
        with _busy_thread(busy):
            samples = sorted(function(peer, rounds))
        self.p50.setdefault(impl, []).append(percentile(samples, 0.50) * 1e6)
        self.p99.setdefault(impl, []).append(percentile(samples, 0.99) * 1e6)
        return self.p50[impl][-1]


def _run(
    cfg: Config,
    rounds: int,
    busy: bool,
    reps: int,
    functions: dict[str, Callable[[Peer, int], Samples]] = FUNCTIONS,
    label: str = "round trip",
) -> tuple[list[Series], _Collector]:
    collector = _Collector()
    with running_peer("stream") as peer:
        measures = {
            impl: partial(collector.measure, function, peer, rounds, impl, busy)
            for impl, function in functions.items()
        }
        warmups: dict[str, Any] = {
            impl: partial(function, peer, WARMUP_ROUNDS if not busy else 5)
            for impl, function in functions.items()
        }
        series = interleave(measures, reps, warmups, label + (" busy" if busy else ""))
    return series, collector


def _rows(
    key: str, title: str, series: list[Series], collector: _Collector, p99_goal: bool
) -> list[Row]:
    rows = []
    for name, values, goal in (
        ("p50", collector.p50, Goal("<= 1.10", "<=", 1.10)),
        ("p99", collector.p99, Goal("<= 1.10", "<=", 1.10) if p99_goal else None),
    ):
        row_series = [Series(s.impl, values.get(s.impl, []), s.note) for s in series]
        rows.append(
            Row(
                f"{key}-{name}",
                f"{title}, {name}",
                "µs",
                "lower",
                row_series,
                goal,
                note="latency: lower is better; ratio = pysock/raw latency",
            )
        )
    return rows


def case_round_trip(cfg: Config) -> list[Row]:
    """64-byte round trips, nothing else running in the process."""
    rounds = cfg.size(10_000, 1_000)
    series, collector = _run(cfg, rounds, busy=False, reps=cfg.reps)
    title = f"64-byte round trip ({rounds:,} per rep)"
    return _rows("rtt", title, series, collector, p99_goal=True)


def case_round_trip_timeout(cfg: Config) -> list[Row]:
    """64-byte round trips with timeout=10 (raw: settimeout(10)); raw and pysock only."""
    rounds = cfg.size(10_000, 1_000)
    functions: dict[str, Callable[[Peer, int], Samples]] = {
        RAW: partial(raw_rounds, timeout=TIMEOUT),
        PYSOCK: partial(pysock_rounds, timeout=TIMEOUT),
    }
    series, collector = _run(cfg, rounds, False, cfg.reps, functions, "round trip timeout")
    title = f"64-byte round trip, timeout=10 (raw: settimeout) ({rounds:,} per rep)"
    return _rows("rtt-timeout", title, series, collector, p99_goal=True)


def case_round_trip_busy(cfg: Config) -> list[Row]:
    """64-byte round trips with one CPU-bound Python thread in the client process."""
    rounds = cfg.size(150, 20)
    series, collector = _run(cfg, rounds, busy=True, reps=cfg.reps)
    title = f"64-byte round trip + 1 CPU-bound thread ({rounds:,} per rep)"
    return _rows("rtt-busy", title, series, collector, p99_goal=False)
