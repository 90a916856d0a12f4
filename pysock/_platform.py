"""What differs between platforms, chosen once at import by feature detection.

pysock's behaviour is the same everywhere; the Linux features below are
optimisations with a portable fallback, never requirements. Each choice is
made by looking for the feature itself (``hasattr(select, "poll")``), never by
``sys.platform``: a platform that gains a feature gets the faster path.

- **Waiting on one socket with a deadline** (a read or write with a
  timeout): ``poll()`` where it exists, ``select()`` otherwise (Windows).
  Neither needs a descriptor of its own, and one socket is all they watch.
- **Never blocking by accident**: a read or write that must not block (TLS
  moving ciphertext from a thread that must not wait, a peek for a
  hang-up) uses ``MSG_DONTWAIT`` where it exists (Linux, the BSDs, macOS).
  Without it (Windows) a per-call flag does not exist, so sockets stay in
  non-blocking mode for good (`CAN_BLOCK` is False) and every call is
  non-blocking by itself; a call that may wait does so with `wait_socket`.
- **Telling a reset from a FIN** after a read met EOF: Linux's ``TCP_INFO``
  gives the TCP state without consuming anything (a reset leaves the socket
  in CLOSE); elsewhere ``SO_ERROR`` holds the reset's error until someone
  reads it (`reset_error`).
- **Has the peer hung up?** (`hung_up`, a zero-timeout check): ``POLLRDHUP``
  on Linux says "FIN received" even with unread data in front of it. Without
  it, where there is kqueue (macOS, the BSDs), a read filter on a kqueue of
  its own says the same, and returns a reset's error without consuming it
  (`pysock._kqueue.kqueue_hung_up`). Elsewhere a readable socket is peeked:
  an empty peek is a FIN, an error is a reset, and data means "not known
  yet" (the FIN, if any, is behind bytes a reader will consume first).

The selector thread's watch over idle sockets is `pysock._loop`'s: epoll on
Linux, kqueue on macOS and the BSDs, and elsewhere the same readiness plus
peek, with a back-off so that a socket holding unread bytes never keeps the
thread busy.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import time
from typing import Final, Optional

from ._kqueue import HAVE_KQUEUE, kqueue_hung_up

__all__ = [
    "CAN_BLOCK",
    "HAVE_POLL",
    "MSG_DONTWAIT",
    "TELLS_RESET_LATE",
    "Peek",
    "hung_up",
    "peek_end",
    "reset_error",
    "wait_socket",
]

HAVE_POLL: Final = hasattr(select, "poll")
# 0 where the flag does not exist: there every pysock socket is non-blocking.
MSG_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
# Blocking mode is used (timeout=None: each call is exactly the stdlib call)
# only where a single call can still be made non-blocking.
CAN_BLOCK: Final = MSG_DONTWAIT != 0
_POLLRDHUP: Final = getattr(select, "POLLRDHUP", 0)
# Without POLLRDHUP, kqueue's read filter still sees a FIN behind unread bytes.
_KQUEUE_HUNG_UP: Final = not _POLLRDHUP and HAVE_KQUEUE
_TCP_INFO: Final = getattr(socket, "TCP_INFO", None)
# True where a reset can be told from a FIN after another call consumed its
# error (see `reset_error`): without it, an end seen while a writer is inside
# ``send()`` is judged a moment later, once that writer has reported a reset.
TELLS_RESET_LATE: Final = _TCP_INFO is not None
# Linux's TCP states (include/net/tcp_states.h): after a reset the socket is CLOSE.
_TCP_CLOSE: Final = 7
MAX_WAIT: Final = 86400.0  # Seconds: the longest single wait; callers loop to their deadline.


def wait_socket(sock: socket.socket, write: bool, timeout: Optional[float]) -> bool:
    """Wait until `sock` is readable (or writable), at most `timeout` seconds.

    Returns False if the time ran out. None waits without a limit.
    """
    if HAVE_POLL:
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN)
        if timeout is None:
            return bool(poller.poll())
        return bool(poller.poll(math.ceil(min(timeout, MAX_WAIT) * 1000)))
    seconds = None if timeout is None else min(timeout, MAX_WAIT)
    if write:
        _, ready, errors = select.select([], [sock], [sock], seconds)
    else:
        ready, _, errors = select.select([sock], [], [sock], seconds)
    return bool(ready or errors)


def deadline_wait(sock: socket.socket, write: bool, deadline: Optional[float]) -> bool:
    """`wait_socket` until a `time.monotonic()` deadline; False once it passed."""
    if deadline is None:
        return wait_socket(sock, write, None)
    remaining = deadline - time.monotonic()
    return remaining > 0 and wait_socket(sock, write, remaining)


class Peek:
    """What a peek at a readable socket found: the three answers of `peek_end`."""

    DATA = "data"  # Bytes wait in front: the end, if any, is behind them.
    FIN = "fin"
    NOTHING = "nothing"  # Not readable after all (another thread took the bytes).


def peek_end(sock: socket.socket) -> tuple[str, Optional[OSError]]:
    """Peek at `sock` without consuming or blocking: (`Peek` answer, reset error).

    A reset comes back as (``Peek.FIN``, the error): the stream is over either way.
    """
    try:
        data = sock.recv(1, socket.MSG_PEEK | MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return Peek.NOTHING, None
    except OSError as exc:
        return Peek.FIN, exc
    return (Peek.DATA if data else Peek.FIN), None


def hung_up(sock: socket.socket) -> tuple[bool, Optional[OSError]]:
    """Has the peer's FIN or a reset arrived? (never waits): (answer, reset error).

    Nothing is consumed where the platform can tell without reading (poll's
    ``POLLRDHUP``, ``POLLERR`` and ``POLLHUP``; kqueue's read filter). Where
    only a peek can tell (``select()``), a reset's error is consumed by it:
    it is returned, for the caller to keep. Without ``POLLRDHUP`` or kqueue
    a FIN behind unread bytes is not seen yet: the reader meets it after
    those bytes.
    """
    if _KQUEUE_HUNG_UP:
        return kqueue_hung_up(sock)
    if HAVE_POLL:
        poller = select.poll()
        ends = _POLLRDHUP | select.POLLHUP | select.POLLERR
        # With POLLRDHUP the answer is complete without a peek: data alone is no end.
        poller.register(sock, ends if _POLLRDHUP else ends | select.POLLIN)
        ready = poller.poll(0)
        if not ready:
            return False, None
        if ready[0][1] & ends or _POLLRDHUP:
            return True, None
    elif not wait_socket(sock, False, 0):
        return False, None
    answer, error = peek_end(sock)
    return answer == Peek.FIN, error


def reset_error(sock: Optional[socket.socket]) -> Optional[OSError]:
    """The reset behind an EOF a read just met, or None for the peer's FIN.

    A reset's ECONNRESET is reported once (``SO_ERROR`` and ``recv()`` both
    consume it), so when the selector thread and a reader race for it, the
    loser sees what looks like a FIN. With ``TCP_INFO`` the TCP state tells,
    without consuming anything: a FIN leaves the socket in CLOSE_WAIT (or,
    after our own FIN, TIME_WAIT), a reset in CLOSE. Without it, a reset
    nobody has taken yet is still in ``SO_ERROR``.
    """
    if sock is None:
        return None
    try:
        if _TCP_INFO is not None:
            state = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0]
            if state != _TCP_CLOSE:
                return None
            return ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError:
        return None  # Not TCP (a Unix socket), or closed meanwhile.
    return OSError(code, os.strerror(code)) if code else None
