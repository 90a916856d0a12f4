"""The reader's unread bytes, seen from outside a read call.

Two callers look at what a `SocketReader` holds without reading it:
`start_tls()` must refuse an upgrade while plaintext waits unread (an
injection, CVE-2011-0411), and the selector thread's peek watch
(`pysock._peekwatch`) takes the bytes an idle socket holds into the reader,
to reach a FIN or a reset behind them, where no epoll or kqueue reports one.

Neither may block or disturb a reader: each takes the reader's lock without
waiting and gives up (None) if a thread is reading, and neither touches the
socket through the buffer. `held` asks the buffer with ``peek()`` while the
raw layer answers "no data without blocking" (`RawSocket.nowait`), with the
raw layer's direct binding to ``recv_into`` taken off for that one call. The
bytes taken go to the reader's stash, behind what the buffer held, so the
next read returns the stream's bytes in order.

`SocketReader` binds `unread` and `take_unread_in_loop` as its methods
``_unread`` and ``_take_unread_in_loop``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Optional

from ._platform import MSG_DONTWAIT

if TYPE_CHECKING:
    from ._reader import SocketReader

__all__ = ["held", "take_unread_in_loop", "unread"]


def unread(reader: SocketReader) -> Optional[bytes]:
    """The bytes received from the socket that wait in `reader` (no I/O).

    None if another thread is reading: the answer would not stay true.
    """
    if not reader._lock.acquire(blocking=False):
        return None
    try:
        return reader._stash + held(reader, take=False)
    finally:
        reader._lock.release()


def take_unread_in_loop(
    reader: SocketReader, sock: socket.socket, limit: int
) -> Optional[OSError]:
    """The selector thread takes an idle socket's unread bytes (see pysock._peekwatch).

    Only when no thread is reading (the lock is free) and the reader is
    open. The bytes go to the stash, behind what the buffer holds (moved
    there first, so the order stays the stream's), until the stash holds
    `limit` bytes or the kernel has no more. Returns the error a ``recv()``
    met (a reset), which it consumed. Never blocks.
    """
    if not reader._lock.acquire(blocking=False):
        return None
    try:
        if reader._is_closed:
            return None
        chunks = [reader._stash, held(reader, take=True)]
        total = len(chunks[0]) + len(chunks[1])
        error: Optional[OSError] = None
        while total < limit:
            try:
                data = sock.recv(limit - total, MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                error = exc
                break
            if not data:
                break  # The FIN: the kernel reports it again to the next read.
            chunks.append(data)
            total += len(data)
        if len(chunks) > 2 or chunks[1]:
            reader._stash = b"".join(chunks)
            reader._unbind()
        return error
    finally:
        reader._lock.release()


def held(reader: SocketReader, take: bool) -> bytes:
    """What the buffer holds, not touching the socket; `take` consumes it. Holds ``_lock``."""
    buffer, raw = reader._buffer, reader._raw
    if buffer is None or raw is None:
        return b""
    raw.nowait = True
    bound = raw.__dict__.pop("readinto", None)  # the unbuffered fast path, if any
    try:
        data = bytes(buffer.peek(1))
        if take and data:
            buffer.read(len(data))
        return data
    finally:
        raw.nowait = False
        if bound is not None:
            raw.readinto = bound  # type: ignore[method-assign]
