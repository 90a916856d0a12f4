"""Connection helpers shared by the cases: one per implementation."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Optional

import pysock
from bench.model import Unavailable
from bench.tlsconf import TLS_HOST

CONNECT_TIMEOUT = 30.0
# The timeout of the "timeout=10" rows: what a client sets so that a dead peer
# cannot hang it, long enough never to expire in a run.
TIMEOUT = 10.0


def raw_connect(
    addr: tuple[str, int],
    context: Optional[ssl.SSLContext] = None,
    timeout: Optional[float] = None,
) -> socket.socket:
    """A stdlib socket (an `ssl.SSLSocket` with `context`), TCP_NODELAY like pysock.

    With ``timeout=None`` it is in blocking mode: no poll() before each call;
    with a `timeout` it is ``sock.settimeout(timeout)``, the stdlib's way.
    """
    sock = socket.create_connection(addr, timeout=CONNECT_TIMEOUT)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is not None:
        return context.wrap_socket(sock, server_hostname=TLS_HOST)
    return sock


def pysock_connect(
    address: str, context: Optional[ssl.SSLContext] = None, timeout: Optional[float] = None
) -> pysock.Socket:
    """A pysock socket, opened (handshake done); `Unavailable` if TLS is not there yet.

    `timeout` is pysock's ``timeout=`` option (None: reads and writes wait forever).
    """
    try:
        if context is None:
            sock = pysock.connect(address, timeout=timeout)
        else:
            sock = pysock.connect(
                address, secure_transport="on", tls_context=context, timeout=timeout
            )
    except NotImplementedError as exc:
        raise Unavailable("n/a (not implemented)") from exc
    try:
        sock.opened.result(CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


async def asyncio_connect(
    addr: tuple[str, int], context: Optional[ssl.SSLContext] = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams (`asyncio.open_connection`), with TLS when `context` is given."""
    host, port = addr
    if context is None:
        return await asyncio.open_connection(host, port)
    return await asyncio.open_connection(host, port, ssl=context, server_hostname=TLS_HOST)


async def asyncio_close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass  # The peer answered the close with a reset: nothing to report here.


def trio_module() -> Any:
    """The trio module, or `Unavailable` (trio is a bench-only extra)."""
    try:
        import trio
    except ImportError as exc:
        raise Unavailable("n/a (trio not installed)") from exc
    return trio


async def trio_connect(addr: tuple[str, int], context: Optional[ssl.SSLContext] = None) -> Any:
    """A trio stream: `trio.open_tcp_stream`, or `open_ssl_over_tcp_stream` with TLS."""
    trio = trio_module()
    host, port = addr
    if context is None:
        return await trio.open_tcp_stream(host, port)
    stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
    await stream.do_handshake()
    return stream


async def trio_close(stream: Any) -> None:
    trio = trio_module()
    try:
        await stream.aclose()
    except (trio.BrokenResourceError, OSError):
        pass
