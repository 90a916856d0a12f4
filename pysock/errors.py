"""The public exception hierarchy of pysock.

Errors are named by who caused them (trio's rule): `SocketClosedError` means
*your code* closed the socket or stream; `BrokenSocketError` means the peer or
the network broke it. Each subclasses the builtin a Python user already
catches for that situation, so ``except ConnectionError`` and ``except
TimeoutError`` keep working. Argument errors are plain `TypeError` and
`ValueError` and do not appear here.
"""

from __future__ import annotations

from typing import Optional, Sequence

__all__ = [
    "BrokenSocketError",
    "ConnectError",
    "IncompleteReadError",
    "LimitOverrunError",
    "PysockError",
    "SocketClosedError",
    "SocketTimeout",
    "StartTlsError",
    "TLSError",
]


class PysockError(Exception):
    """Base class of every error pysock raises, except argument errors.

    `partial` holds the bytes a read had received before it met this error
    (a reset, a TLS end without close_notify): they are the error's, not left
    in the socket's buffer. It is empty for every other call.
    """

    partial: bytes = b""


class SocketClosedError(PysockError, ValueError):
    """Your code closed the socket or the stream, or `start_tls()` took it over.

    A `ValueError`, like I/O on a closed file.
    """


class ConnectError(PysockError, ConnectionError):
    """Opening the connection failed: DNS, refused, unreachable, or refused by policy.

    `errno` is set when the OS gave one, the message names ``host:port`` and
    ``__cause__`` is the underlying `OSError`. `errors` lists every failed
    attempt when several addresses were tried.
    """

    def __init__(
        self,
        message: str,
        errno: Optional[int] = None,
        errors: Sequence[BaseException] = (),
    ) -> None:
        if errno is None:
            super().__init__(message)
        else:
            super().__init__(errno, message)
        self.message = message
        self.errors: tuple[BaseException, ...] = tuple(errors)

    def __str__(self) -> str:
        return self.message

    def __reduce__(
        self,
    ) -> tuple[type[ConnectError], tuple[str, Optional[int], tuple[BaseException, ...]]]:
        # OSError's own would call ConnectError(errno, message): keep the fields
        # through pickle (multiprocessing, a process pool's error).
        return type(self), (self.message, self.errno, self.errors)


class BrokenSocketError(PysockError, ConnectionError):
    """The peer or the network broke an open connection.

    Raised for a connection reset, a write to a peer that has gone away, and a
    TLS connection that ended without close_notify (a possible truncation
    attack).
    """


class TLSError(PysockError, ConnectionError):
    """The TLS handshake or certificate verification failed; ``__cause__`` is the `ssl` error."""


class StartTlsError(PysockError):
    """`Socket.start_tls()` was misused or refused."""


class SocketTimeout(PysockError, TimeoutError):
    """A connect deadline or a read/write timeout passed."""


class LimitOverrunError(PysockError, ValueError):
    """`readuntil()` found no separator within its ``limit``; the bytes stay unread.

    A `ValueError` too, as the limit rule of asyncio's ``readline()``.
    `consumed` is the count of bytes that arrived without the separator.
    """

    def __init__(self, message: str, consumed: int) -> None:
        super().__init__(message)
        self.consumed = consumed

    def __reduce__(self) -> tuple[type[LimitOverrunError], tuple[str, int]]:
        return type(self), (str(self), self.consumed)


class IncompleteReadError(PysockError, EOFError):
    """`readexactly()` or `readuntil()` met EOF first; `partial` holds the bytes read."""

    def __init__(self, partial: bytes, expected: int) -> None:
        super().__init__(f"{len(partial)} bytes read on a total of {expected} expected bytes")
        self.partial = partial
        self.expected = expected

    def __reduce__(self) -> tuple[type[IncompleteReadError], tuple[bytes, int]]:
        return type(self), (self.partial, self.expected)
