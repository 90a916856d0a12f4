"""Every state a connection can be in, and every transition between them, in tables.

A connection is three small machines side by side: its lifecycle (`State`),
its read side (`Read`) and its write side (`Write`). Everything that decides
what a read or a write may do, and when the connection is over, is a rule
over those three values, here, so that no flag elsewhere holds state of its
own. (Flags that only say "a call is inside the descriptor" live with the
close handshake in `pysock._connection`; they are not state.)

The lifecycle::

    CONNECTING --OPENED--> OPEN --FINISHED--> FINISHED --CLOSE--> CLOSED
        |                   |--CLOSE--> CLOSED
        |                   |--FAIL--> BROKEN
        |                   '--UPGRADE--> UPGRADED (start_tls took the connection over)
        |--OPEN_FAILED--> BROKEN (refused, DNS, deadline, handshake: only while connecting)
        '--CLOSE--> CLOSED

``closed`` completes on entering a terminal state: with None for FINISHED,
CLOSED and UPGRADED, with the error for BROKEN. ``opened`` completes when
CONNECTING is left. FINISHED is the clean end of both directions: the bytes
the peer sent before its FIN stay readable there, until ``close()``.

The directions change independently of the lifecycle (a half-close is not
an end), and FINISHED fires by rule (`finishes`) once both are over:

    read:  OPEN --PEER_EOF--> PEER_DONE --STOP--> DONE
           OPEN --STOP--> STOPPED --PEER_EOF--> DONE
           OPEN --STOP_WAKING--> WAKING      (the EOF that follows is our own)
    write: OPEN --SHUT--> DONE

The diagrams in docs/design.md are generated from these tables
(`mermaid`), and a test checks that they match.
"""

from __future__ import annotations

import enum
from typing import Final, Optional, TypeVar

__all__ = [
    "PEER_ENDED",
    "READER_CLOSED",
    "READ_ENDED",
    "READ_TRANSITIONS",
    "TERMINAL",
    "TRANSITIONS",
    "WRITE_TRANSITIONS",
    "Event",
    "Read",
    "ReadEvent",
    "State",
    "Write",
    "WriteEvent",
    "finishes",
    "may_read",
    "may_write",
    "mermaid",
    "next_state",
    "step",
    "upgrade_refusal",
]


class State(enum.Enum):
    """The lifecycle of a connection."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum's own __hash__ is a Python call, paid on every transition).
    __hash__ = object.__hash__

    CONNECTING = "connecting"
    OPEN = "open"
    FINISHED = "finished"  # Both directions ended cleanly; what came before the FIN stays.
    CLOSED = "closed"
    BROKEN = "broken"
    UPGRADED = "upgraded"


class Event(enum.Enum):
    __hash__ = object.__hash__

    OPENED = "opened"
    FINISHED = "finished"
    CLOSE = "close"
    FAIL = "fail"
    # Opening failed (refused, DNS, the connect deadline, the TLS handshake). Unlike
    # FAIL it never applies to an OPEN connection: a connect deadline timer that
    # fires late, just after the open, must not break the connection.
    OPEN_FAILED = "open failed"
    UPGRADE = "upgrade"


TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (State.CONNECTING, Event.OPENED): State.OPEN,
    (State.CONNECTING, Event.FAIL): State.BROKEN,
    (State.CONNECTING, Event.OPEN_FAILED): State.BROKEN,
    (State.CONNECTING, Event.CLOSE): State.CLOSED,
    (State.OPEN, Event.FINISHED): State.FINISHED,
    (State.OPEN, Event.CLOSE): State.CLOSED,
    (State.OPEN, Event.FAIL): State.BROKEN,
    (State.OPEN, Event.UPGRADE): State.UPGRADED,
    # After a clean end, close() only gives the descriptor back: `closed` is done.
    (State.FINISHED, Event.CLOSE): State.CLOSED,
}

TERMINAL: Final = frozenset({State.FINISHED, State.CLOSED, State.BROKEN, State.UPGRADED})
# Where reads go on: the bytes received before the peer's FIN outlive FINISHED.
_READING_STATES: Final = frozenset({State.OPEN, State.FINISHED})


class Read(enum.Enum):
    """The read side of an open (or opening) connection."""

    __hash__ = object.__hash__

    OPEN = "open"
    PEER_DONE = "peer done"  # The peer's FIN came: buffered bytes, then b"" every time.
    STOPPED = "stopped"  # readable.close(): reads raise; nothing is read any more.
    # readable.close() while a reader was inside recv(): the socket was shut down
    # (SHUT_RD) to wake it, so the EOF that follows is ours, not the peer's.
    WAKING = "waking"
    DONE = "done"  # Both: the peer's FIN came and readable.close() was called.


class ReadEvent(enum.Enum):
    __hash__ = object.__hash__

    PEER_EOF = "peer eof"  # A reader's recv() returned 0, or the selector thread saw the FIN.
    STOP = "stop"  # readable.close() with no reader inside.
    STOP_WAKING = "stop waking"  # readable.close() with a reader inside recv().


READ_TRANSITIONS: Final[dict[tuple[Read, ReadEvent], Read]] = {
    (Read.OPEN, ReadEvent.PEER_EOF): Read.PEER_DONE,
    (Read.OPEN, ReadEvent.STOP): Read.STOPPED,
    (Read.OPEN, ReadEvent.STOP_WAKING): Read.WAKING,
    (Read.PEER_DONE, ReadEvent.STOP): Read.DONE,
    # A reader inside recv() after the FIN returns by itself: nothing to wake.
    (Read.PEER_DONE, ReadEvent.STOP_WAKING): Read.DONE,
    (Read.STOPPED, ReadEvent.PEER_EOF): Read.DONE,
}

READ_ENDED: Final = frozenset(Read) - {Read.OPEN}
PEER_ENDED: Final = frozenset({Read.PEER_DONE, Read.DONE})
READER_CLOSED: Final = frozenset({Read.STOPPED, Read.WAKING, Read.DONE})


class Write(enum.Enum):
    """The write side: open until ``writable.close()`` or the automatic close."""

    __hash__ = object.__hash__

    OPEN = "open"
    # Our FIN is sent (or, while connecting, will be at the open); writes raise.
    DONE = "done"


class WriteEvent(enum.Enum):
    __hash__ = object.__hash__

    # writable.close(), or allow_half_open=False after the peer's EOF.
    SHUT = "shut"


WRITE_TRANSITIONS: Final[dict[tuple[Write, WriteEvent], Write]] = {
    (Write.OPEN, WriteEvent.SHUT): Write.DONE,
}

_S = TypeVar("_S", bound=enum.Enum)
_E = TypeVar("_E", bound=enum.Enum)


def next_state(state: State, event: Event) -> Optional[State]:
    """Return the state after `event`, or None when `event` does not apply in `state`."""
    return TRANSITIONS.get((state, event))


def step(table: dict[tuple[_S, _E], _S], state: _S, event: _E) -> Optional[_S]:
    """One step of a direction's machine: the new state, or None if `event` does not apply."""
    return table.get((state, event))


def finishes(read: Read, write: Write) -> bool:
    """The FINISHED rule: an open connection is over once both directions are."""
    return read in READ_ENDED and write is Write.DONE


def may_read(state: State, read: Read) -> bool:
    """Whether a read goes to the socket (the fast path's flag), or raises why not."""
    return state in _READING_STATES and read not in READER_CLOSED


def may_write(state: State, write: Write) -> bool:
    """Whether a write goes to the socket (the fast path's flag), or raises why not."""
    return state is State.OPEN and write is Write.OPEN


def upgrade_refusal(state: State, read: Read, write: Write) -> Optional[str]:
    """The UPGRADE guard: why `start_tls()` cannot take the connection over, or None."""
    if state is not State.OPEN:
        return f"is {'closed' if state is State.FINISHED else state.value}"
    if read is not Read.OPEN or write is not Write.OPEN:
        return "is half-closed"
    return None


def mermaid(table: dict[tuple[_S, _E], _S], start: Optional[_S] = None) -> str:
    """A Mermaid ``stateDiagram-v2`` of `table` (docs/design.md shows these)."""
    lines = ["stateDiagram-v2"]
    if start is not None:
        lines.append(f"    [*] --> {start.name}")
    for (source, event), target in table.items():
        lines.append(f"    {source.name} --> {target.name}: {event.name}")
    return "\n".join(lines)


# -- precomputed for the engine's hot path (kept apart from the rules above) --------------

# `may_read` and `may_write` for every (state, read side, write side): what
# `Connection._enter` looks up each time the state or a side changes.
FAST_FLAGS: Final[dict[tuple[State, Read, Write], tuple[bool, bool]]] = {
    (state, read, write): (may_read(state, read), may_write(state, write))
    for state in State
    for read in Read
    for write in Write
}
