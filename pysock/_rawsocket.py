"""`RawSocket`: the raw layer under the reader's `io.BufferedReader`, and its binding.

`SocketReader` (pysock/_reader.py) buffers with `io.BufferedReader`'s own C
code, over this tiny raw object whose ``readinto`` does one
`Connection.recv_into` per call. That call never raises: it parks its failure
and returns 0 (see `pysock._rawio`), so the C code never loses what it
gathered. Two things make the raw layer more than a forwarder:

* A reader call's deadline is armed by the call's first refill, not when the
  call starts: a line already in the buffer costs no clock read. The reader
  resets `RawSocket.deadline` to `UNSET` before each call of its own.
* With no timeout, `bind` stores `Connection.recv_into` itself as the
  instance's ``readinto``, so a refill runs no Python frame of pysock's at
  all; with a timeout it removes that binding, and the class's ``readinto``
  arms the deadline.

`RawSocket.nowait` makes a refill answer "no data without blocking", which
lets ``peek()`` report only the buffered bytes (pysock/_unread.py).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Final, Optional

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["MAX_READ_CHUNK", "READ_BUFFER_SIZE", "UNSET", "RawSocket", "bind"]

# One raw read moves up to this much: large enough that bulk transfers run at
# memcpy speed, small enough to be cheap for each of thousands of busy sockets.
READ_BUFFER_SIZE: Final = 64 * 1024
# The most one read1() call asks the socket for: a size as large as a disk (2**62)
# means "what is there", not an allocation.
MAX_READ_CHUNK: Final = 1024 * 1024

# `RawSocket.deadline` before the call's first refill: the clock starts then.
UNSET: Final = -1.0


class RawSocket(io.RawIOBase):
    """The raw layer under `io.BufferedReader`: one ``recv_into`` per call.

    Its deadline is per reader call, armed at the call's first refill: a line
    already buffered costs no clock read. The reader resets it (`UNSET`)
    before each call.
    """

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection
        self.deadline: Optional[float] = UNSET
        self.nowait = False

    def readinto(self, buffer: Any) -> Optional[int]:
        if self.nowait:
            return None  # "No data without blocking": lets peek() report only buffered bytes.
        deadline = self.deadline
        if deadline == UNSET:
            deadline = self.deadline = self._connection.call_deadline()
        return self._connection.recv_into(buffer, deadline)

    def readable(self) -> bool:
        return True

    def __del__(self) -> None:
        pass  # Closing the raw object must never touch the connection.


def bind(raw: RawSocket, connection: Connection, untimed: bool) -> None:
    """Bind the raw layer's ``readinto`` straight to the socket when no deadline applies."""
    if untimed:
        if "readinto" not in raw.__dict__:
            raw.readinto = connection.recv_into  # type: ignore[method-assign]
    else:
        raw.__dict__.pop("readinto", None)
