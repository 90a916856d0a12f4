"""Every state a connection can be in, and every transition between them, in one table.

``closed`` completes on entering a terminal state: with None for CLOSED and
UPGRADED, with the error for BROKEN. ``opened`` completes when CONNECTING is
left. Per-direction half-closes do not change the state: when both the read
side (peer EOF or ``readable.close()``) and the write side
(``writable.close()`` or the automatic close of ``allow_half_open=False``)
are done, the connection fires FINISHED.

    CONNECTING --OPENED--> OPEN --FINISHED/CLOSE--> CLOSED
        |                   |--FAIL--> BROKEN
        |                   '--UPGRADE--> UPGRADED (start_tls took the connection over)
        |--OPEN_FAILED--> BROKEN (refused, DNS, deadline, handshake: only while connecting)
        '--CLOSE--> CLOSED
"""

from __future__ import annotations

import enum
from typing import Final, Optional

__all__ = ["TERMINAL", "Event", "State", "next_state"]


class State(enum.Enum):
    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum's own __hash__ is a Python call, paid on every transition).
    __hash__ = object.__hash__

    CONNECTING = "connecting"
    OPEN = "open"
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
    (State.OPEN, Event.FINISHED): State.CLOSED,
    (State.OPEN, Event.CLOSE): State.CLOSED,
    (State.OPEN, Event.FAIL): State.BROKEN,
    (State.OPEN, Event.UPGRADE): State.UPGRADED,
}

TERMINAL: Final = frozenset({State.CLOSED, State.BROKEN, State.UPGRADED})


def next_state(state: State, event: Event) -> Optional[State]:
    """Return the state after `event`, or None when `event` does not apply in `state`."""
    return TRANSITIONS.get((state, event))
