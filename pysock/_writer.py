"""`SocketWriter`: the writable half of a socket, a binary file-like object.

Theory of operation
===================

`write()` has no buffer: it returns once the kernel holds every byte, so a
blocking write is the backpressure, and `flush()` has nothing to do (it only
raises where a write would surely fail: this stream closed, or the socket
inherited from a parent process). The argument is checked before anything
else (any C-contiguous bytes-like object; a ``str`` is a `TypeError`): a
refused argument sends nothing and leaves the socket usable.

Each write holds ``_lock`` while `Connection.send_all` runs, so writes from
several threads never interleave: one call's bytes reach the kernel
together. ``writelines`` is one write per item, so another thread's write
may come between two items. On a plain socket without a timeout `send_all`
is the stdlib ``sendall()`` itself. A forked child's copy is refused before
the lock (the fast-path flag first, so an open socket pays one attribute):
in the child the lock may have been held by a parent thread, which will
never release it there.

A timeout bounds the whole call, not each send: the deadline is taken once,
at the start. The first write with a deadline switches the descriptor to
non-blocking mode for good (`Connection.leave_blocking_mode`); only a
writer may, under ``_lock``, because a blocking ``sendall()`` that met
``EAGAIN`` halfway would not say how much it sent. A write that times out or
is interrupted (Ctrl-C) has sent an unknown amount, so it breaks the socket
(``closed`` fails) instead of leaving a stream with a hole in it.
``write(b"")`` sends nothing but still waits for a connecting socket to open,
and raises if the socket cannot be written.

Over TLS, ``_lock`` orders the plaintext only. Readers produce records too
(the answer to a TLS 1.3 KeyUpdate), so the ciphertext is ordered by
`TlsConnection`'s send lock, which the writer takes per chunk it encrypts
and which `leave_blocking_mode` takes as well: the holder may be inside a
blocking ``sendall()`` (see `pysock._tls`).

`close()` is a half-close: the peer sees EOF and reading goes on. It first
asks the connection whether it can (`Connection.check_half_close`: TLS below
1.3 cannot, and a TLS socket still connecting waits for its handshake to
know the version), then shuts the write side with ``wait=True``, so over TLS
close_notify goes out as a write's records would, before the FIN. The
finalizer closes nothing (the connection's does); it records that no code
can write any more (the reader's ``_writer_gone``), which lets ``readable.close()`` close
the whole connection.
"""

from __future__ import annotations

import io
import threading
import time
from typing import TYPE_CHECKING, Iterable

from typing_extensions import Buffer

from ._rawio import afresh
from .errors import SocketClosedError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["SocketWriter"]


class SocketWriter(io.BufferedIOBase):
    """The writable side of a `Socket`: a binary file-like object.

    `write()` returns once all bytes are handed to the kernel (a blocking write
    is the backpressure). Writes from several threads are serialized.
    """

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection
        self._lock = threading.Lock()
        self._is_closed = False

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._is_closed

    def write(self, b: Buffer) -> int:
        """Send all of `b` (any bytes-like object); return its length in bytes.

        Raises:
            TypeError: `b` is a str or not bytes-like.
            SocketClosedError: your code closed the socket or this stream.
            SocketTimeout: the ``timeout`` passed; an unknown amount was sent and
                the socket is broken (``closed`` fails).
            BrokenSocketError: the peer reset the connection or went away.
        """
        if type(b) is bytes:
            nbytes = len(b)
        elif isinstance(b, str):
            raise TypeError("write() needs a bytes-like object, not str: encode it first")
        else:
            try:
                with memoryview(b) as view:
                    nbytes = view.nbytes
                    contiguous = view.c_contiguous
            except TypeError:
                raise TypeError(
                    f"write() needs a bytes-like object, not {type(b).__name__}"
                ) from None
            if not contiguous:  # Refused before a byte is sent: the socket stays usable.
                raise TypeError("write() needs a contiguous buffer; copy it with bytes() first")
        connection = self._connection
        if not connection._write_ok and connection.inherited:  # Before the lock: see above.
            raise afresh(connection._write_error or SocketClosedError("the socket is closed"))
        with self._lock:
            if self._is_closed:
                raise SocketClosedError("the writable side is closed")
            if nbytes:
                timeout = connection.timeout
                connection.send_all(b, None if timeout is None else time.monotonic() + timeout)
            elif not connection._write_ok:
                connection._check_writable(connection.call_deadline())
        return nbytes

    def writelines(self, lines: Iterable[Buffer]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Nothing is buffered: every `write()` already reached the kernel."""
        if self._is_closed:
            raise SocketClosedError("the writable side is closed")
        if self._connection.inherited:
            raise SocketClosedError("this socket was inherited from the parent process")

    def close(self) -> None:
        """Half-close: the peer sees EOF, reading goes on; later writes raise."""
        if self._is_closed:
            return
        self._connection.check_half_close()
        self._is_closed = True
        self._connection.shutdown_write(
            SocketClosedError("the writable side was closed"), wait=True
        )

    def _detach_stream(self) -> None:
        self._is_closed = True

    def detach(self) -> io.RawIOBase:
        raise io.UnsupportedOperation("a SocketWriter cannot be detached")

    def __del__(self) -> None:
        # Never closes anything (the connection's finalizer does); it only records
        # that no code can write any more, for `SocketReader.close()`.
        connection = self._connection
        reader = connection.reader_ref() if connection.reader_ref is not None else None
        if reader is not None:
            reader._writer_gone = True

    def __repr__(self) -> str:
        state = "closed" if self._is_closed else self._connection.shown_state()
        return f"<pysock.SocketWriter {self._connection.endpoint} {state}>"
