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

Two more machines say who holds the descriptor, and where it is watched:

    descriptor:   HELD --RELEASE--> RELEASING --LET_GO--> LAST_OUT
                  HELD --HAND_OFF--> HANDED_OFF   (start_tls took the socket)
                  any  --INHERIT--> INHERITED     (a forked child's copy)
    registration: two independent facts, "in the hang-up set" and "in the
                  loop's selector", as one of four values

The diagrams in docs/design.md are generated from these tables
(`mermaid`), and a test checks that they match.
"""

from __future__ import annotations

import enum
from typing import Final, Optional, TypeVar

__all__ = [
    "DESCRIPTOR_TRANSITIONS",
    "IN_HANGUP_SET",
    "IN_SELECTOR",
    "PEER_ENDED",
    "READER_CLOSED",
    "READ_ENDED",
    "READ_TRANSITIONS",
    "REGISTRATION_TRANSITIONS",
    "TERMINAL",
    "TRANSITIONS",
    "WRITE_TRANSITIONS",
    "Descriptor",
    "DescriptorEvent",
    "Event",
    "Read",
    "ReadEvent",
    "Registration",
    "RegistrationEvent",
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


class Descriptor(enum.Enum):
    """Who holds the descriptor, and who closes it (the close handshake).

    Closing from another thread must wake a blocked call without closing the
    descriptor under its feet (the number could be reused by an unrelated
    file before that call returns): the descriptor is closed only once the
    loop has let go of it and no call is inside it.
    """

    __hash__ = object.__hash__

    HELD = "held"  # The connection's; a call may be inside it.
    # close() or the end of both directions decided to give it back; the loop
    # thread may still watch it (`Registration`), so it lets go first.
    RELEASING = "releasing"
    # Nothing watches it: the releaser closes it, or the last call out does.
    LAST_OUT = "last out"
    HANDED_OFF = "handed off"  # start_tls() gave it to a new connection.
    # A forked child's copy: the descriptor and the peer are the parent's.
    INHERITED = "inherited"


class DescriptorEvent(enum.Enum):
    __hash__ = object.__hash__

    RELEASE = "release"  # close(), a failed opening, or FINISHED with nothing left to read.
    LET_GO = "let go"  # Unwatched (on the loop thread when it held the descriptor).
    HAND_OFF = "hand off"  # start_tls() took the socket.
    INHERIT = "inherit"  # os.fork(): in the child.


DESCRIPTOR_TRANSITIONS: Final[dict[tuple[Descriptor, DescriptorEvent], Descriptor]] = {
    (Descriptor.HELD, DescriptorEvent.RELEASE): Descriptor.RELEASING,
    (Descriptor.RELEASING, DescriptorEvent.LET_GO): Descriptor.LAST_OUT,
    (Descriptor.HELD, DescriptorEvent.HAND_OFF): Descriptor.HANDED_OFF,
    (Descriptor.HELD, DescriptorEvent.INHERIT): Descriptor.INHERITED,
    (Descriptor.RELEASING, DescriptorEvent.INHERIT): Descriptor.INHERITED,
    (Descriptor.LAST_OUT, DescriptorEvent.INHERIT): Descriptor.INHERITED,
    (Descriptor.HANDED_OFF, DescriptorEvent.INHERIT): Descriptor.INHERITED,
}


class Registration(enum.Enum):
    """Where the selector thread watches the descriptor.

    Two facts, each changed by its own events: whether the idle hang-up watch
    holds it (epoll, kqueue or the peek watch), and whether the loop's
    selector does (a connect attempt, a proxy's tunnel, the TLS handshake,
    or the peek watch, which uses the selector). A descriptor the selector
    holds is closed on the loop thread, after the selector lets go of it.
    """

    __hash__ = object.__hash__

    UNWATCHED = "unwatched"
    HANGUP = "hang-up set"
    SELECTOR = "selector"
    BOTH = "hang-up set and selector"  # The peek watch: its hang-up set is the selector.


class RegistrationEvent(enum.Enum):
    __hash__ = object.__hash__

    WATCH_HANGUP = "watch hang-up"
    UNWATCH_HANGUP = "unwatch hang-up"
    ENTER_SELECTOR = "enter selector"
    LEAVE_SELECTOR = "leave selector"


# Missing pairs change nothing: the event finds its registration in place
# (a handshake re-registering for other events, an unwatch of nothing).
REGISTRATION_TRANSITIONS: Final[dict[tuple[Registration, RegistrationEvent], Registration]] = {
    (Registration.UNWATCHED, RegistrationEvent.WATCH_HANGUP): Registration.HANGUP,
    (Registration.SELECTOR, RegistrationEvent.WATCH_HANGUP): Registration.BOTH,
    (Registration.HANGUP, RegistrationEvent.UNWATCH_HANGUP): Registration.UNWATCHED,
    (Registration.BOTH, RegistrationEvent.UNWATCH_HANGUP): Registration.SELECTOR,
    (Registration.UNWATCHED, RegistrationEvent.ENTER_SELECTOR): Registration.SELECTOR,
    (Registration.HANGUP, RegistrationEvent.ENTER_SELECTOR): Registration.BOTH,
    (Registration.SELECTOR, RegistrationEvent.LEAVE_SELECTOR): Registration.UNWATCHED,
    (Registration.BOTH, RegistrationEvent.LEAVE_SELECTOR): Registration.HANGUP,
}

IN_HANGUP_SET: Final = frozenset({Registration.HANGUP, Registration.BOTH})
IN_SELECTOR: Final = frozenset({Registration.SELECTOR, Registration.BOTH})

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
