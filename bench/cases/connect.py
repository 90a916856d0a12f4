"""Connect + close to an IP literal, in plaintext (2,000 times) and with TLS 1.3 (300 times).

Reported as connections per second over the whole loop (higher is better):

* raw: ``socket.create_connection(addr).close()``; for TLS
  ``ctx.wrap_socket(socket.create_connection(addr), server_hostname=...)``
  (the handshake runs in ``wrap_socket``) then ``close()``;
* pysock: ``s = pysock.connect("127.0.0.1:PORT"); s.opened.result(); s.close()``
  (with ``secure_transport="on", tls_context=ctx`` for TLS);
* asyncio: ``open_connection()`` then ``writer.close(); await writer.wait_closed()``;
* trio: ``open_tcp_stream()`` (``open_ssl_over_tcp_stream()`` + handshake) then ``aclose()``.

The plaintext peer accepts on a selector thread and closes at EOF; the TLS
peer runs a thread per connection for the handshake.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from functools import partial
from typing import Any, Callable, Optional

import pysock
from bench.cases._common import (
    asyncio_close,
    asyncio_connect,
    pysock_connect,
    raw_connect,
    trio_close,
    trio_connect,
    trio_module,
)
from bench.model import PYSOCK, RAW, Config, Goal, Row, interleave
from bench.peer import Peer, running_peer
from bench.tlsconf import TLSMaterial, client_context, make_material

Context = Optional[ssl.SSLContext]


def raw_loop(peer: Peer, count: int, context: Context) -> float:
    addr = peer.addr
    start = time.perf_counter()
    if context is None:
        for _ in range(count):
            socket.create_connection(addr).close()
    else:
        for _ in range(count):
            raw_connect(addr, context).close()
    return count / (time.perf_counter() - start)


def pysock_loop(peer: Peer, count: int, context: Context) -> float:
    address = peer.address
    if context is not None:
        pysock_connect(address, context).close()  # Unavailable before TLS lands.
    connect = pysock.connect
    options: dict[str, Any] = {}
    if context is not None:
        options = {"secure_transport": "on", "tls_context": context}
    start = time.perf_counter()
    for _ in range(count):
        s = connect(address, **options)
        s.opened.result()
        s.close()
    return count / (time.perf_counter() - start)


async def _asyncio_loop(peer: Peer, count: int, context: Context) -> float:
    start = time.perf_counter()
    for _ in range(count):
        _, writer = await asyncio_connect(peer.addr, context)
        await asyncio_close(writer)
    return count / (time.perf_counter() - start)


def asyncio_loop(peer: Peer, count: int, context: Context) -> float:
    return asyncio.run(_asyncio_loop(peer, count, context))


async def _trio_loop(peer: Peer, count: int, context: Context) -> float:
    start = time.perf_counter()
    for _ in range(count):
        stream = await trio_connect(peer.addr, context)
        await trio_close(stream)
    return count / (time.perf_counter() - start)


def trio_loop(peer: Peer, count: int, context: Context) -> float:
    result: float = trio_module().run(_trio_loop, peer, count, context)
    return result


FUNCTIONS: dict[str, Callable[[Peer, int, Context], float]] = {
    RAW: raw_loop,
    PYSOCK: pysock_loop,
    "asyncio": asyncio_loop,
    "trio": trio_loop,
}


def _measure(peer: Peer, count: int, context: Context, reps: int, label: str) -> Any:
    measures = {impl: partial(f, peer, count, context) for impl, f in FUNCTIONS.items()}
    warmups = {
        impl: partial(f, peer, max(10, count // 10), context) for impl, f in FUNCTIONS.items()
    }
    return interleave(measures, reps, warmups, label)


def case_connect(cfg: Config) -> list[Row]:
    """Connect + close to 127.0.0.1, 2,000 times per repetition."""
    count = cfg.size(2_000, 200)
    with running_peer("hold") as peer:
        series = _measure(peer, count, None, cfg.reps, "connect")
    title = f"connect + close, IP literal, {count:,} times (raw = socket.create_connection)"
    return [Row("connect", title, "conn/s", "higher", series, Goal(">= 0.90", ">=", 0.90))]


def case_tls_connect(cfg: Config, material: Optional[TLSMaterial] = None) -> list[Row]:
    """Connect + TLS 1.3 handshake + close, 300 times per repetition."""
    count = cfg.size(300, 30)
    material = material or make_material()
    context = client_context(material)
    with running_peer("stream", tls=material) as peer:
        series = _measure(peer, count, context, cfg.reps, "tls connect")
    title = f"connect + TLS 1.3 handshake + close, {count:,} times"
    return [Row("tls-connect", title, "conn/s", "higher", series, Goal(">= 0.90", ">=", 0.90))]
