"""TLS records onto the wire, in order, and our close_notify (the farewell) last.

Theory of operation
===================

Whoever produces records (a writer, a reader answering a TLS 1.3 KeyUpdate,
the closer) has them appended to the record layer's ``outq`` in the order
OpenSSL produced them (`pysock._records`); a `RecordWire` sends that queue,
one thread at a time, under ``send_lock``. A thread that finds the lock taken
leaves its records to the holder, which looks at the queue again after
releasing it (no lost records). Writers may block in a send (a write blocks
on a full socket, that is its backpressure); nobody else may: a reader must
not block on a peer that is itself blocked writing to us, and ``close()``
must never wait for the peer.

So the non-blocking senders (a reader's flush, the farewell of ``close()`` or
of the selector thread) also hold ``nowait_lock``, around their attempt at
``send_lock``, and a blocking sender never takes it. ``close()`` waits on
``nowait_lock``: for a reader's flush, a few non-blocking sends, to end, and
then finds ``send_lock`` free; it never waits for a writer. A writer holding
``send_lock`` sends the farewell after its own records (`drain`).

The farewell's state is ``farewell`` (`Farewell`), along `FAREWELLS`: close()
or the selector thread produce it to go out after every record queued before
it, best effort (WAITING, until a sender takes it: SENT); ``writable.close()``
produces it into ``outq`` instead (QUEUED), sent as a write's records are.
Either way it is produced once, and its sending never fails anyone.
"""

from __future__ import annotations

import enum
import socket
import threading
from typing import Any, Callable, Final

from ._platform import MSG_DONTWAIT
from ._records import TlsRecords
from ._state import step

__all__ = ["FAREWELLS", "Farewell", "FarewellEvent", "RecordWire"]


class Farewell(enum.Enum):
    """Where our close_notify stands."""

    UNSAID = "not produced yet"
    WAITING = "produced by close() or the loop; goes out after the queued records"
    QUEUED = "produced into outq by writable.close(); goes out as a write's records"
    SENT = "sent, or given up on: best effort"


class FarewellEvent(enum.Enum):
    """What moves the farewell."""

    CLOSE = "close(), or the selector thread ending the write side"
    HALF_CLOSE = "writable.close()"
    TAKEN = "a sender takes it"


FAREWELLS: Final[dict[tuple[Farewell, FarewellEvent], Farewell]] = {
    (Farewell.UNSAID, FarewellEvent.CLOSE): Farewell.WAITING,
    (Farewell.UNSAID, FarewellEvent.HALF_CLOSE): Farewell.QUEUED,
    (Farewell.WAITING, FarewellEvent.TAKEN): Farewell.SENT,
}


class RecordWire:
    """The sending half of a `pysock._tls.TlsConnection`; see the module docstring."""

    __slots__ = ("farewell", "farewell_record", "nowait_lock", "records", "send_lock")

    def __init__(self, records: TlsRecords) -> None:
        self.records = records
        self.send_lock = threading.Lock()
        self.nowait_lock = threading.Lock()
        self.farewell = Farewell.UNSAID
        self.farewell_record = b""  # Our close_notify while WAITING.

    def say(self, event: FarewellEvent, guard: threading.Lock) -> bool:
        """Produce the farewell for `event`, once. False if it was produced already.

        `guard` (the connection's ``_lock``) makes the check and the change one step.
        """
        with guard:
            farewell = step(FAREWELLS, self.farewell, event)
            if farewell is None:
                return False
            if farewell is Farewell.WAITING:
                self.farewell_record = self.records.close_notify()
            else:
                self.records.queue_close_notify()
            self.farewell = farewell
            return True

    # -- writers: may block --------------------------------------------------------------

    def drain(self, sock: socket.socket, send: Callable[[Any], None]) -> None:
        """A writer sends the queue (`send` may block), then what others queued meanwhile."""
        with self.send_lock:
            self.send_queued(sock, send)
        outq = self.records.outq
        while (outq or self.farewell is Farewell.WAITING) and self.send_lock.acquire(
            blocking=False
        ):
            try:
                self.send_queued(sock, send)
            finally:
                self.send_lock.release()

    def send_queued(self, sock: socket.socket, send: Callable[[Any], None]) -> None:
        """Send the queue with `send`, then the farewell if it waits. Holds ``send_lock``."""
        outq = self.records.outq
        while outq:
            send(outq.popleft())
        if self.farewell is Farewell.WAITING:
            self._send_farewell(sock)

    # -- everyone else: never blocks -----------------------------------------------------

    def flush_nowait(self, sock: socket.socket) -> None:
        """Send what is queued (a KeyUpdate answer, the farewell) without ever blocking.

        What does not fit now stays first in the queue for the next writer or
        the next flush; a send error is left for the next write to report.
        """
        with self.nowait_lock:
            if not self.send_lock.acquire(blocking=False):
                return  # A writer sends them, and the farewell after them.
            try:
                self._send_nowait(sock)
            finally:
                self.send_lock.release()

    def _send_nowait(self, sock: socket.socket) -> None:
        outq = self.records.outq
        try:
            while outq:
                records = outq[0]
                sent = sock.send(records, MSG_DONTWAIT)
                if sent < len(records):
                    outq[0] = records[sent:]
                    return
                outq.popleft()
        except OSError:
            return
        if self.farewell is Farewell.WAITING:
            self._send_farewell(sock)

    def _send_farewell(self, sock: socket.socket) -> None:
        """Best effort: close_notify never blocks and never fails a caller. Holds ``send_lock``."""
        record, self.farewell_record = self.farewell_record, b""
        self.farewell = step(FAREWELLS, self.farewell, FarewellEvent.TAKEN) or Farewell.SENT
        try:
            sock.send(record, MSG_DONTWAIT)
        except OSError:
            pass  # The peer is gone or not reading: the connection is ending anyway.
