"""A connection's ``opened`` and ``closed`` futures, created on first use.

A `concurrent.futures.Future` costs about 1.4 KiB, and most sockets never
look at theirs: 10,000 idle sockets would carry 28 MiB of them. So each
future's slot on the connection holds None, then the outcome ``(result,
error)`` once there is one, and the future itself only once something asks
for it (`created_future`), completed at once with the outcome kept.

Each future has one outcome: the state machine lets only one event leave
CONNECTING (``opened``), and every terminal state after the first completes
``closed`` with the same None. An existing future is completed outside the
connection's lock, so that a done-callback may call back into the socket.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Lazy", "complete", "created_future", "finish"]

# A future's slot: None, then the outcome ``(result, error)`` or, once asked
# for, the future itself (`Connection._new_future`: TLS's ``opened`` is a
# `pysock._handover.HandshakeFuture`).
Lazy = Union[None, tuple[Any, Optional[BaseException]], "concurrent.futures.Future[Any]"]


def created_future(connection: Connection, slot: str) -> Any:
    """The future in `slot`, created on first use and completed with the outcome kept there."""
    with connection._lock:
        held = getattr(connection, slot)
        if isinstance(held, concurrent.futures.Future):
            return held  # Another thread created it first.
        future = connection._new_future(slot)
        setattr(connection, slot, future)
        if held is not None:
            # Under the lock, so that no later outcome comes first; a new future
            # has no callbacks that could call back into the socket.
            finish(future, *held)
    return future


def complete(
    connection: Connection, slot: str, result: Any, error: Optional[BaseException]
) -> None:
    """Record the first outcome in `slot`, or complete its future (outside the lock)."""
    with connection._lock:
        held = getattr(connection, slot)
        if held is None:
            setattr(connection, slot, (result, error))
            return
        if not isinstance(held, concurrent.futures.Future) or held.done():
            return  # The first outcome stays.
    finish(held, result, error)


def finish(
    future: concurrent.futures.Future[Any], result: Any, error: Optional[BaseException]
) -> None:
    """Complete `future` with `result`, or with `error` if there is one."""
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # Cancelled by its user: there is nobody left to tell.
