"""`SocketReader`: the readable half of a socket, a binary buffered file-like object.

Theory of operation
===================

The reader's buffering is `io.BufferedReader`'s own C code over a tiny raw
object whose ``readinto`` is `Connection.recv_into`. Created on the first
read (an idle socket owns no read buffer), it then serves ``readline``,
``readinto``, ``readinto1``, ``readexactly`` and iteration as one C call
each, with or without a timeout (``_fast``, ``_fast_timed``), and so is
``readuntil`` of a separator that ends in its only ``b"\n"`` (CRLF, LF).

Every call holds ``_lock``, also around a single C call. `io.BufferedReader`
is not safe for concurrent readers: its C methods look at the buffer before
taking their own lock and, once they have it, some drop what is buffered
(``read1``, ``readinto`` and ``readline`` reset the buffer before reading
the raw stream), so two threads in it at once lose or reorder bytes. pysock
promises that concurrent reads are serialized, never interleaved within one
call: a message read by one thread arrives whole.

The C methods have one flaw for a socket: a call that needs several raw reads
(``readline`` of a long line, ``read(n)``) drops what it gathered if a raw
read raises. So the raw read never raises: `Connection.recv_into` parks its
failure and returns 0, which the C method takes for EOF and so returns all
it gathered (see `pysock._rawio`). After each C call the reader looks for a
parked failure (one attribute test). A timeout or Ctrl-C leaves the socket
usable: the gathered bytes go to ``_stash``, served first by the next call;
any other failure is raised with them in its ``partial``. While a stash is
non-empty the C path is off (the Python code below serves the stash first),
so the order of bytes never changes.

A call's deadline is armed by its first refill (`RawSocket.readinto`): a
line already in the buffer costs no clock read, and with no timeout the raw
layer's ``readinto`` is `Connection.recv_into` itself (pysock/_rawsocket.py).

Two groups of the reader's methods are functions of their own modules, bound
in the class (a function bound as a class attribute runs with no extra
frame, where a delegating method would add one to each call):
``readexactly``, ``readuntil`` and the Python path through a separator
(pysock/_framing.py), and the unread bytes that ``start_tls()`` checks and
the idle watch takes (pysock/_unread.py).
"""

from __future__ import annotations

import io
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from . import _framing
from . import _unread as unread_bytes
from ._rawio import afresh
from ._rawsocket import MAX_READ_CHUNK, READ_BUFFER_SIZE, UNSET, RawSocket, bind
from ._separator import check_size
from .errors import SocketClosedError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["READ_BUFFER_SIZE", "SocketReader"]

_T = TypeVar("_T")


class SocketReader(io.BufferedIOBase):
    """The readable side of a `Socket`: a binary, buffered file-like object.

    ``read(-1)`` reads to EOF; at EOF every read returns ``b""``. A read
    timeout raises `SocketTimeout` and loses no data. Reads from several
    threads are serialized.
    """

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection
        self._raw: Optional[RawSocket] = None
        self._buffer: Optional[io.BufferedReader] = None
        self._stash = b""
        self._lock = threading.Lock()
        self._is_closed = False
        # True while one C call serves readline/readinto/readinto1/readexactly (and
        # readuntil when the separator is buffered): a buffer, no stash, not
        # closed. read() and read1() stay pysock's code: C would allocate a
        # result as large as the size asked for (read(2**62) is a MemoryError
        # there), and their cost is per call, not per byte.
        self._fast = False
        # The same with a timeout: the call first unarms the raw layer's deadline
        # (`_timed`), so that `_fast` alone costs the untimed path nothing more.
        self._fast_timed = False
        # A raw read's failure, left here for this call to raise after the C call
        # returns what it gathered (`Connection.park`); only under ``_lock``.
        self._parked: Optional[BaseException] = None
        # Set by the writer's finalizer: no code can write any more (`close`).
        self._writer_gone = False
        connection.reader_ref = weakref.ref(self)

    # -- the buffer and the fast path ------------------------------------------------

    def _buffered(self) -> io.BufferedReader:
        if self._is_closed:
            raise SocketClosedError("the readable side is closed")
        buffer = self._buffer
        if buffer is None:
            self._raw = RawSocket(self._connection)
            buffer = self._buffer = io.BufferedReader(self._raw, READ_BUFFER_SIZE)
            self._maybe_bind()
        return buffer

    def _maybe_bind(self) -> None:
        """Turn the C fast path on where it applies. Caller holds ``_lock``.

        With no timeout the raw layer's ``readinto`` is bound straight to
        `Connection.recv_into` (no Python frame of ours per refill); with one,
        it is `RawSocket.readinto`, which arms the call's deadline.
        """
        connection = self._connection
        raw = self._raw
        fast = not self._stash and not self._is_closed and raw is not None
        untimed = connection.timeout is None
        if raw is not None:
            bind(raw, connection, untimed)
        self._fast = fast and untimed
        self._fast_timed = fast and not untimed
        # Read again after the write: `_timeout_changed()` in another thread
        # sets the timeout, then clears the flags; either order leaves them off.
        if fast and (connection.timeout is None) != untimed:
            self._unbind()

    def _unbind(self) -> None:
        self._fast = self._fast_timed = False

    def _timed(self) -> bool:
        """True for the C path with a timeout; unarms its deadline (the first refill arms it)."""
        if self._fast_timed:
            self._raw.deadline = UNSET  # type: ignore[union-attr]
            return True
        return False

    def _timeout_changed(self) -> None:
        """`Socket.timeout` changed (any thread): the next call takes the slow path.

        That path reads the new timeout, unbinds the raw layer if there is one
        now, and turns the fast path back on when it applies.
        """
        self._unbind()

    def _begin(self, fresh: bool = True) -> io.BufferedReader:
        """The buffer, for a call of the Python path; `fresh`: the call's deadline is unarmed."""
        buffer = self._buffered()
        raw = self._raw
        assert raw is not None
        if fresh:
            raw.deadline = UNSET
        if self._connection.timeout is not None:
            raw.__dict__.pop("readinto", None)  # The deadline needs our readinto.
        return buffer

    def _keep(self, chunks: list[bytes]) -> None:
        """Put gathered bytes back in front (an interrupted call); see the module docstring."""
        data = b"".join(chunks)
        if data:
            self._stash = data + self._stash
            self._unbind()

    def _failure(self, partial: bytes) -> BaseException:
        """The parked read failure (see pysock._rawio), for the bytes this call read.

        A timeout or an interrupt (Ctrl-C) leaves the socket usable: the bytes
        go back in front, for the next call. Any other failure ends the read
        side: the bytes are consumed, in the error's ``partial``.
        """
        parked, self._parked = self._parked, None
        assert parked is not None
        if isinstance(parked, (TimeoutError, KeyboardInterrupt)) or not isinstance(
            parked, Exception
        ):
            self._keep([partial])
            self._maybe_bind()
            return parked
        # A copy: the error stored for `closed` and later calls has no `partial`.
        failure = afresh(parked)
        if partial:
            failure.partial = partial  # type: ignore[attr-defined]
        self._maybe_bind()
        return failure

    def _take_stash(self) -> bytes:
        data, self._stash = self._stash, b""
        return data

    def _done(self, result: _T) -> _T:
        if not self._stash:
            self._maybe_bind()
        return result

    # -- io.BufferedIOBase --------------------------------------------------------

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._is_closed

    def read(self, n: Optional[int] = -1) -> bytes:
        """Read up to `n` bytes, or to EOF when `n` is -1 or None."""
        size = check_size(n)
        with self._lock:
            return self._read_locked(size)

    def _read_locked(self, size: int) -> bytes:
        """`read`'s body; the caller holds ``_lock``."""
        buffer = self._begin()
        chunks = [self._take_stash()]
        total = len(chunks[0])
        try:
            while size < 0 or total < size:
                want = READ_BUFFER_SIZE if size < 0 else min(size - total, MAX_READ_CHUNK)
                data = buffer.read1(want)
                if not data:
                    break
                chunks.append(data)
                total += len(data)
        except BaseException:
            self._keep(chunks)
            raise
        if self._parked is not None:
            raise self._failure(b"".join(chunks))
        if size >= 0 and total > size:
            self._keep([b"".join(chunks)[size:]])
            chunks = [b"".join(chunks)[:size]]
        return self._done(b"".join(chunks))

    def read1(self, n: int = -1) -> bytes:
        """Read up to `n` bytes with at most one call to the socket."""
        size = check_size(n)
        with self._lock:
            buffer = self._begin()
            if self._stash:
                data = self._take_stash()
                if size >= 0:
                    self._keep([data[size:]])
                    data = data[:size]
                return self._done(data)
            data = buffer.read1(min(size, MAX_READ_CHUNK))
            if not data and self._parked is not None:
                raise self._failure(b"")
            return self._done(data)

    def readinto(self, b: Any) -> int:
        """Fill `b` as far as the data goes before EOF; return the count."""
        with self._lock:
            buffer = self._buffer  # Once: close() in another thread may drop it.
            if buffer is not None and (self._fast or self._timed()):
                count = buffer.readinto(b)
                if self._parked is not None:
                    raise self._failure(_head(b, count))
                return count
        return _copy_into(b, self.read)

    def readinto1(self, b: Any, /) -> int:
        """Like `readinto`, with at most one call to the socket."""
        with self._lock:
            buffer = self._buffer  # Once: close() in another thread may drop it.
            if buffer is not None and (self._fast or self._timed()):
                count = buffer.readinto1(b)
                if self._parked is not None:
                    raise self._failure(_head(b, count))
                return count
        return _copy_into(b, self.read1)

    def peek(self, size: int = 0, /) -> bytes:
        """Return buffered bytes without consuming them (one socket call if none)."""
        if not isinstance(size, int):  # As io.BufferedReader.peek, also with bytes stashed.
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        with self._lock:
            buffer = self._begin()
            if self._stash:
                return self._stash
            data = buffer.peek(size)
            if not data and self._parked is not None:
                raise self._failure(b"")
            return self._done(data)

    def readline(self, limit: Optional[int] = -1) -> bytes:
        """Read one line, including its ``\\n``; at most `limit` bytes if `limit` >= 0."""
        with self._lock:
            buffer = self._buffer  # Once: close() in another thread may drop it.
            if buffer is not None and (self._fast or self._timed()):
                line = buffer.readline(limit)
                if self._parked is not None:
                    raise self._failure(line)
                return line
            size = check_size(limit)
            return self._read_through(b"\n", size, None)

    # asyncio's framed reads and the slow path through a separator
    # (pysock/_framing.py): functions bound here run with no extra frame.
    readexactly = _framing.readexactly
    readuntil = _framing.readuntil
    _read_through = _framing.read_through

    def __iter__(self) -> SocketReader:
        if self._is_closed:
            raise SocketClosedError("the readable side is closed")
        return self

    def readlines(self, hint: Optional[int] = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def close(self) -> None:
        """Stop reading: later reads raise `SocketClosedError`; writing goes on.

        If nothing can write any more (the `Socket` and its ``writable`` are
        both gone, as after ``return Response(sock.readable)`` in a web view),
        the whole connection is closed: the framework's ``close()`` at the end
        of the response then releases the socket.
        """
        if self._is_closed:
            return
        self._detach_buffer()
        if self._writer_gone:
            self._connection.close()  # Nobody holds the write side: no one could use or close it.
        else:
            self._connection.close_read()

    # The unread bytes start_tls() checks and the idle watch takes (pysock/_unread.py).
    _unread = unread_bytes.unread
    _take_unread_in_loop = unread_bytes.take_unread_in_loop

    def _reset_lock_after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock; it never returns."""
        self._lock = threading.Lock()

    def _detach_buffer(self) -> None:
        """Drop the buffer and make every later read raise (used by `Socket.close()`)."""
        self._is_closed = True
        self._unbind()
        self._buffer = None
        self._stash = b""

    def detach(self) -> io.RawIOBase:
        raise io.UnsupportedOperation("a SocketReader cannot be detached")

    def __del__(self) -> None:
        pass  # The connection's own finalizer closes it; dropping a stream must not.

    def __repr__(self) -> str:
        state = "closed" if self._is_closed else self._connection.shown_state()
        return f"<pysock.SocketReader {self._connection.endpoint} {state}>"


def _head(b: Any, count: int) -> bytes:
    """The first `count` bytes of the buffer `b`, as bytes."""
    with memoryview(b) as view, view.cast("B") as octets:
        return octets[:count].tobytes()


def _copy_into(b: Any, read: Callable[[int], bytes]) -> int:
    with memoryview(b) as view:
        # Checked before reading: bytes read into nowhere would be lost.
        if view.readonly:
            raise TypeError(f"readinto() needs a writable buffer, not {type(b).__name__}")
        if not view.c_contiguous:
            raise TypeError("readinto() needs a contiguous buffer")
    with memoryview(b) as view, view.cast("B") as target:
        data = read(len(target))
        target[: len(data)] = data
        return len(data)
