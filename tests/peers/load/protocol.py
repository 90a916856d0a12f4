"""What both sides of the load peer share: the address, the soak's request line,
and the byte pattern both sides of the soak produce."""

from __future__ import annotations

import random
from typing import Final, Iterator

HOST: Final = "127.0.0.1"
# A send still blocked this long after the client began closing is reported as stalled.
STALL_TIMEOUT: Final = 20.0


# -- the byte pattern both sides of the soak produce -------------------------------------

PATTERN_CHUNK: Final = 64 * 1024
# A random block whose length is not a power of two, so that chunk boundaries
# drift across it and a shifted stream never lines up with the original.
_PERIOD: Final = 1024 * 1024 + 4099
_BASE: Final = random.Random(20261127).randbytes(_PERIOD + PATTERN_CHUNK)
_BASE_VIEW: Final = memoryview(_BASE)


def pattern_chunks(offset: int, size: int, chunk: int = PATTERN_CHUNK) -> Iterator[memoryview]:
    """The stream of `size` bytes starting at `offset` of the pattern, in chunks <= `chunk`."""
    chunk = max(1, min(chunk, PATTERN_CHUNK))
    position = offset % _PERIOD
    remaining = size
    while remaining > 0:
        n = min(chunk, remaining)
        yield _BASE_VIEW[position : position + n]
        position = (position + n) % _PERIOD
        remaining -= n


class Header:
    """The soak's request line: ``OP SIZE OFFSET``.

    ``ECHO``: echo until EOF, then close cleanly. ``SEND``: send SIZE pattern
    bytes from OFFSET, then close cleanly. ``SENDX``: the same, but the client
    closes before the end (errors expected). ``SINK``: read until EOF or an
    error (the client closes while writing). ``RSTS``: send SIZE bytes, then
    reset. ``RSTR``: receive SIZE bytes, then reset.
    """

    OPS: Final = ("ECHO", "SEND", "SENDX", "SINK", "RSTS", "RSTR")

    @staticmethod
    def encode(op: str, size: int = 0, offset: int = 0) -> bytes:
        return f"{op} {size} {offset}\n".encode()
