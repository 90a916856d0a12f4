"""Finding `readuntil`'s separator in the reader's buffer without losing a byte.

`SocketReader` serves ``readuntil`` of a separator whose only ``b"\\n"`` ends
it (`LINE_ENDS` are the usual ones) with one C ``readline()``: such a
separator can only end at the stream's next ``b"\\n"``. Every other
separator, a line that did not end with the separator, and ``readline`` or
``readuntil`` off the C path (bytes stashed, the first read) go through
`gather`, which moves bytes from the `io.BufferedReader` into a ``bytearray``
that starts as the reader's stash.

`gather` gets more bytes only with ``peek``, the one call that may touch the
socket (its failure is parked, not raised: see `pysock._rawio`), and then
takes them with ``read(k)`` of bytes already buffered, which cannot fail; so
``gathered`` holds exactly what left the buffer, for the caller to return,
put back or hand to an error's ``partial``. Each new chunk is searched
together with the last ``len(sep) - 1`` bytes before it: a separator split
across two receives is found without searching all of ``gathered`` again.

Nothing here keeps state or knows the socket: the caller holds the reader's
lock and applies the `limit` rules (`read_through`, pysock/_framing.py). The
reader's argument checks live here too (`check_separator`, `check_size`).
"""

from __future__ import annotations

import io
from typing import Any, Final, Optional

__all__ = ["LINE_ENDS", "check_separator", "check_size", "gather"]

# Separators whose only b"\n" ends them, known without a search.
LINE_ENDS: Final = frozenset({b"\n", b"\r\n"})


def check_separator(sep: Any, limit: Any) -> bytes:
    """Check `readuntil`'s arguments; return the separator as bytes."""
    if not isinstance(sep, (bytes, bytearray)):
        raise TypeError(f"sep must be bytes, not {type(sep).__name__}")
    if not sep:
        raise ValueError("sep must not be empty")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < len(sep):
        raise ValueError("limit must be at least the length of sep")
    return bytes(sep)


def check_size(size: Any) -> int:
    """None or a negative size is -1 ("all"); as in io, a bool is an int."""
    if size is None:
        return -1
    if not isinstance(size, int):
        raise TypeError(f"size must be an int or None, not {type(size).__name__}")
    return int(size) if size >= 0 else -1


def gather(
    buffer: io.BufferedReader,
    gathered: bytearray,
    separator: bytes,
    size: int,
    limit: Optional[int],
) -> int:
    """Move bytes from `buffer` into `gathered` through `separator`; return its end or -1.

    Stops at EOF, after `size` bytes (`size` >= 0), or past `limit` bytes. Only
    ``peek`` touches the socket; ``read(k)`` of already-buffered bytes cannot fail.
    """
    end = gathered.find(separator)  # `gathered` starts as the stash: search all of it.
    while end < 0:
        if 0 <= size <= len(gathered):
            return -1
        if limit is not None and len(gathered) >= limit + len(separator):
            return -1
        data = buffer.peek(1)
        if not data:
            return -1
        if size >= 0:
            data = data[: size - len(gathered)]
        search_from = max(0, len(gathered) - len(separator) + 1)
        probe = gathered[search_from:] + data
        index = probe.find(separator)
        if index >= 0:
            take = search_from + index + len(separator) - len(gathered)
            gathered += buffer.read(take)
            return len(gathered)
        gathered += buffer.read(len(data))
    # The separator was already in the stash; the caller puts back what follows it.
    return end + len(separator)
