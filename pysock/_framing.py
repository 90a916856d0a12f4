"""The reader's framed reads: `readexactly`, `readuntil`, and `read_through`.

asyncio's ``StreamReader`` gave protocol code two calls that frame a message
by its length or by a delimiter; `SocketReader` has them too, and binds the
functions here as its methods (``readexactly``, ``readuntil``, and
``_read_through``, which ``readline`` off the C path shares). They are
functions of this module and not methods written in the class for the
class's size only: bound as class attributes, they run with no extra Python
frame.

Both use the reader's C fast path where one C call answers exactly (see
pysock/_reader.py): ``read(n)`` for `readexactly` of up to `MAX_READ_CHUNK`
bytes, and ``readline()`` for a separator whose only ``b"\\n"`` ends it
(`LINE_ENDS`, CRLF), which can only end at the stream's next ``b"\\n"``.
Otherwise `read_through` moves bytes through the separator with `gather`
(pysock/_separator.py) and applies `readuntil`'s rules: EOF before the
separator raises `IncompleteReadError` with the bytes; `limit` bytes without
it raise `LimitOverrunError` and leave them unread, in the stash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Optional

from ._rawsocket import MAX_READ_CHUNK
from ._separator import LINE_ENDS, check_separator, check_size, gather
from .errors import IncompleteReadError, LimitOverrunError

if TYPE_CHECKING:
    from ._reader import SocketReader

__all__ = ["DEFAULT_READUNTIL_LIMIT", "read_through", "readexactly", "readuntil"]

DEFAULT_READUNTIL_LIMIT: Final = 64 * 1024  # asyncio's StreamReader default.


def readexactly(self: SocketReader, n: int) -> bytes:
    """Read exactly `n` bytes.

    Raises:
        IncompleteReadError: EOF came first; ``.partial`` holds what was read.
            The socket stays as it was (at EOF).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    with self._lock:
        buffer = self._buffer  # Once: close() in another thread may drop it.
        if buffer is not None and n <= MAX_READ_CHUNK and (self._fast or self._timed()):
            data = buffer.read(n)  # C: allocates n bytes, hence the bound on n.
            if self._parked is not None:
                raise self._failure(data)
        else:
            data = self._read_locked(check_size(n))
    if len(data) < n:
        raise IncompleteReadError(data, n)
    return data


def readuntil(
    self: SocketReader, sep: bytes = b"\n", limit: int = DEFAULT_READUNTIL_LIMIT
) -> bytes:
    """Read up to and including `sep` (asyncio's ``StreamReader.readuntil``).

    Raises:
        IncompleteReadError: EOF came before `sep`; ``.partial`` holds the bytes.
        ValueError: `limit` bytes arrived without `sep`; they stay unread.
    """
    if type(sep) is bytes and type(limit) is int and 0 < len(sep) <= limit:
        separator = sep  # The usual call: checked in two type tests.
    else:
        separator = check_separator(sep, limit)
    with self._lock:
        buffer = self._buffer  # Once: close() in another thread may drop it.
        if (
            buffer is not None
            and (separator in LINE_ENDS or separator.find(b"\n") == len(separator) - 1)
            and (self._fast or self._timed())
        ):
            # A separator whose only b"\n" ends it can only end at the stream's
            # next b"\n": C readline() finds it, within the limit or not.
            line = buffer.readline(limit + len(separator))
            if self._parked is not None:
                raise self._failure(line)
            if line.endswith(separator):
                return line
            # Not there (EOF, the limit, or another byte before the b"\n"): the
            # Python path decides, serving the line first. The call's wait so
            # far counts against its deadline: keep it armed.
            self._keep([line])
            return self._read_through(separator, -1, limit, fresh=False)
        return self._read_through(separator, -1, limit)


def read_through(
    self: SocketReader, separator: bytes, size: int, limit: Optional[int], fresh: bool = True
) -> bytes:
    """Consume through `separator`; see `readline` and `readuntil`. Holds ``_lock``."""
    buffer = self._begin(fresh)
    gathered = bytearray(self._take_stash())
    try:
        found = gather(buffer, gathered, separator, size, limit)
    except BaseException:
        self._keep([bytes(gathered)])
        raise
    if found < 0 and self._parked is not None:
        raise self._failure(bytes(gathered))
    if limit is not None:
        if (found < 0 and len(gathered) >= limit + len(separator)) or (
            found - len(separator) > limit
        ):
            self._keep([bytes(gathered)])
            raise LimitOverrunError(
                f"separator not found within the limit of {limit} bytes", len(gathered)
            )
        if found < 0:
            raise IncompleteReadError(bytes(gathered), len(gathered) + len(separator))
    cut = found if found >= 0 else len(gathered)
    if size >= 0:
        cut = min(cut, size)
    self._keep([bytes(gathered[cut:])])
    return self._done(bytes(gathered[:cut]))
