"""The hang-up set on macOS and the BSDs: a kqueue behind the epoll calls the loop makes.

Theory of operation
===================

On Linux the loop watches idle sockets in an epoll set for ``EPOLLRDHUP``:
it wakes for the peer's FIN (even behind unread bytes) or a reset, never for
data. kqueue can do the same with one read filter per socket, and
`KqueueHangups` wraps it in the calls `pysock._loop.Loop` makes on its
hang-up set (``register``, ``modify``, ``unregister``, ``poll``, ``close``,
``fileno``), so the loop's dispatch is the same on both. What the kernels
do, and where each claim comes from:

* The read filter reports the end of the read side first. FreeBSD's
  ``filt_soread()`` (sys/kern/uipc_socket.c) returns at once with
  `EV_EOF` set and the socket's error in ``fflags`` when the receive buffer
  can take no more (``SBS_CANTRCVMORE``), before any low-water test; XNU's
  ``filt_soread_common()`` (bsd/kern/uipc_socket.c) does the same once any
  content filter has passed its data on, and OpenBSD's ``filt_soread()``
  too. kqueue(2) says so: "If the read direction
  of the socket has shutdown, then the filter also sets EV_EOF in flags, and
  returns the socket error (if any) in fflags. It is possible for EOF to be
  returned ... while there is still data pending in the socket buffer." So
  a FIN behind unread bytes is seen, and a reset's error arrives with it
  (BSD ``tcp_input`` sets ``so_error`` to ECONNRESET before ``tcp_close``
  marks the socket disconnected and wakes its buffers).
* Data alone must not wake the filter. With `NOTE_LOWAT` the filter's
  ``data`` is its own low-water mark: FreeBSD and OpenBSD compare the bytes
  waiting against it as given, so a mark no buffer reaches (`NEVER_LOW`)
  means no wake-up for data at all. XNU clamps the mark to the receive
  buffer's high-water mark (``sb_hiwat``): there a buffer that fills up,
  unread, does wake the filter, without `EV_EOF`. `poll` drops such events,
  and `EV_CLEAR` keeps them from repeating: a cleared filter fires again
  only when the buffer is woken again (a segment arrives), and a full
  buffer closes the peer's window.
* `EV_CLEAR` (kqueue(2): "After the event is retrieved by the user, its
  state is reset") is used for both masks. FreeBSD's ``kqueue_scan()``
  (sys/kern/kern_event.c) runs the filter again when it hands out the event
  (so the flags and ``fflags`` are current), then deactivates a cleared
  knote and zeroes its ``fflags``; ``knote()`` activates it again at the
  buffer's next wake-up if the filter is still true. A registration also
  runs the filter at once, so a FIN that came before it is reported, as
  epoll's level trigger does.
* `EV_EOF` after EOF: the end of the read side is permanent, so a cleared
  filter reports `EV_EOF` again at every later wake-up of the receive
  buffer. After the peer's FIN there are few: a reset (the disconnect wakes
  it, with the reset's error in ``fflags``), the connection's final close,
  our own ``SHUT_RD``. That is the errors-only watch (`HANGUP_ERRORS_ONLY`,
  mask 0): `poll` reports these events only when ``fflags`` holds an
  error. Level-triggered, the same filter would wake the loop for ever.
* Why not ``EVFILT_WRITE`` with a huge low-water mark for the errors-only
  watch: XNU's ``filt_sowrite_common()`` clamps that mark to the send
  buffer's ``sb_hiwat``, and an idle socket's free space *is* ``sb_hiwat``,
  so the filter fires at once and, level-triggered, for ever. On every
  system the write filter also sets `EV_EOF` for good after our own
  ``SHUT_WR`` (``SBS_CANTSENDMORE``), which a half-closed connection has.
* Changing the mask: ``EV_ADD`` on an existing knote only updates its
  ``fflags``, ``data`` and ``udata`` (FreeBSD ``kqueue_register()``; XNU's
  ``filt_sortouch()`` likewise takes only ``fflags`` and ``data``); flags
  such as `EV_CLEAR` are fixed when the knote is made. Both masks
  therefore register the same filter, and the mask only tells `poll` what
  to report. ``EV_ADD`` runs the filter again, so switching to errors-only
  after the FIN costs one wake-up that `poll` drops.
* The loop's own selector (a kqueue on these systems) is nested with a
  plain level-triggered read filter (`register_nested`): a kqueue
  descriptor is readable while it holds events (FreeBSD
  ``kqueue_kqfilter()``, XNU ``kqread_filtops``).

A socket error without EOF (``so_error`` set while the read side is still
open: the "temporary udp error" of the BSD sources; a TCP reset always comes
with EOF) wakes the filter without `EV_EOF` and is not reported: the next
read or write meets it.

`kqueue_hung_up` is the zero-timeout check that confirms an event on a
connection's own socket: the same read filter, added to a kqueue of its
own and collected with a timeout of 0. It sees a FIN behind unread bytes
and returns a reset's error without taking it from the socket (reading
``so_error`` into ``fflags`` does not clear it).

This module cannot run on Linux (``select`` has no ``kqueue`` there); its
tests drive it with a fake kqueue, never a real one. The kqueue and kevent
constructors are parameters for that reason.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from typing import Any, Callable, Final, Optional, Protocol

__all__ = ["HAVE_KQUEUE", "KqueueHangups", "kqueue_hung_up"]

# The values of <sys/event.h> where Python does not export them (on Linux, for
# the tests). macOS, FreeBSD and OpenBSD share these; NetBSD's EVFILT_READ
# differs, and there Python exports it.
EVFILT_READ: Final[int] = getattr(select, "KQ_FILTER_READ", -1)
EV_ADD: Final[int] = getattr(select, "KQ_EV_ADD", 0x0001)
EV_DELETE: Final[int] = getattr(select, "KQ_EV_DELETE", 0x0002)
EV_ONESHOT: Final[int] = getattr(select, "KQ_EV_ONESHOT", 0x0010)
EV_CLEAR: Final[int] = getattr(select, "KQ_EV_CLEAR", 0x0020)
EV_ERROR: Final[int] = getattr(select, "KQ_EV_ERROR", 0x4000)
EV_EOF: Final[int] = getattr(select, "KQ_EV_EOF", 0x8000)
NOTE_LOWAT: Final[int] = getattr(select, "KQ_NOTE_LOWAT", 0x0001)
# A read low-water mark no receive buffer reaches: only EOF or an error wakes
# the filter. INT_MAX fits a 32-bit intptr_t; buffers are megabytes at most
# (kern.ipc.maxsockbuf).
NEVER_LOW: Final = 2**31 - 1
# Events collected per poll: epoll.poll()'s default (FD_SETSIZE - 1). The
# rest stay queued in the kernel for the next call.
_MAX_EVENTS: Final = 1023
# The mask recorded for the nested selector: no mask of the loop's (those are >= 0).
_NESTED: Final = -1

# What `KqueueHangups.poll` reports per descriptor (the loop only uses the descriptor).
EOF: Final = 1  # The peer's FIN: the read side ended.
ERROR: Final = 2  # A socket error (a reset) came with the end.
READABLE: Final = 4  # The nested selector holds events.

HAVE_KQUEUE: Final = hasattr(select, "kqueue")


class Kevent(Protocol):
    """The fields of ``select.kevent`` read here."""

    @property
    def ident(self) -> int: ...

    @property
    def flags(self) -> int: ...

    @property
    def fflags(self) -> int: ...

    @property
    def data(self) -> int: ...


class Kqueue(Protocol):
    """The calls of ``select.kqueue`` made here."""

    def control(
        self, changelist: Optional[list[Any]], maxevents: int, timeout: Optional[float] = None, /
    ) -> list[Any]: ...

    def close(self) -> None: ...

    def fileno(self) -> int: ...


NewKqueue = Callable[[], Kqueue]
NewKevent = Callable[..., Any]


def _stdlib(name: str) -> Callable[..., Any]:
    found: Optional[Callable[..., Any]] = getattr(select, name, None)
    if found is None:
        raise OSError(errno.ENOSYS, f"select.{name} does not exist on this platform")
    return found


def _hangup_filter(new_kevent: NewKevent, fd: int, flags: int) -> Any:
    """The read filter that fires for EOF or an error, never for data (see the docstring)."""
    return new_kevent(fd, filter=EVFILT_READ, flags=flags, fflags=NOTE_LOWAT, data=NEVER_LOW)


def _error(code: int) -> Optional[OSError]:
    return OSError(code, os.strerror(code)) if code else None


class KqueueHangups:
    """The loop's hang-up set on a kqueue, with epoll's interface (module docstring).

    Masks are the loop's: non-zero (`pysock._loop.HANGUP_WITH_EOF`) reports
    the peer's FIN and errors; 0 (`pysock._loop.HANGUP_ERRORS_ONLY`) only
    errors. Like epoll, any thread may change the set while another waits in
    `poll`; the loop serialises the changes for one descriptor.
    """

    def __init__(
        self, new_kqueue: Optional[NewKqueue] = None, new_kevent: Optional[NewKevent] = None
    ) -> None:
        self._kevent: NewKevent = new_kevent or _stdlib("kevent")
        self._kqueue: Kqueue = (new_kqueue or _stdlib("kqueue"))()
        # fd -> the loop's mask, or _NESTED. Read by `poll` without a lock:
        # one dict lookup per event, atomic under the GIL.
        self._masks: dict[int, int] = {}

    def fileno(self) -> int:
        return self._kqueue.fileno()

    def register(self, fd: int, mask: int) -> None:
        """Watch `fd`; FileExistsError if it is watched already, as epoll raises."""
        if fd in self._masks:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
        self._add(fd, mask, _hangup_filter(self._kevent, fd, EV_ADD | EV_CLEAR))

    def register_nested(self, fd: int) -> None:
        """Watch the loop's own selector: readable while it holds events (level-triggered)."""
        if fd in self._masks:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
        self._add(fd, _NESTED, self._kevent(fd, filter=EVFILT_READ, flags=EV_ADD))

    def modify(self, fd: int, mask: int) -> None:
        """Change what `poll` reports for `fd`; FileNotFoundError if it is not watched."""
        if self._masks.get(fd) in (None, _NESTED):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        # The same filter for both masks (EV_CLEAR cannot change on a knote);
        # EV_ADD runs it again, so a FIN that is still there is reported again.
        self._add(fd, mask, _hangup_filter(self._kevent, fd, EV_ADD | EV_CLEAR))

    def unregister(self, fd: int) -> None:
        """Stop watching `fd`; an OSError (ENOENT, EBADF) if the kernel has no such filter."""
        try:
            self._kqueue.control([self._kevent(fd, filter=EVFILT_READ, flags=EV_DELETE)], 0, 0)
        finally:
            self._masks.pop(fd, None)

    def poll(self, timeout: Optional[float] = -1) -> list[tuple[int, int]]:
        """Wait for hang-ups: ``(fd, what)`` pairs, as ``epoll.poll`` returns them.

        `timeout` in seconds; None or a negative number waits without a limit.
        """
        wait = None if timeout is None or timeout < 0 else timeout
        reported = []
        for event in self._kqueue.control(None, _MAX_EVENTS, wait):
            what = self._what(event)
            if what:
                reported.append((event.ident, what))
        return reported

    def close(self) -> None:
        self._kqueue.close()
        self._masks.clear()

    def _add(self, fd: int, mask: int, change: Any) -> None:
        # Recorded first: an event that comes at once must find its mask.
        known = self._masks.get(fd)
        self._masks[fd] = mask
        try:
            self._kqueue.control([change], 0, 0)
        except OSError:
            if known is None:
                self._masks.pop(fd, None)
            else:
                self._masks[fd] = known
            raise

    def _what(self, event: Kevent) -> int:
        """What an event means for the loop: `EOF`, `ERROR`, `READABLE`, or 0 (nothing)."""
        mask = self._masks.get(event.ident)
        if mask == _NESTED:
            return READABLE
        if event.flags & EV_ERROR:
            return ERROR  # The descriptor's owner confirms on its own socket.
        if not event.flags & EV_EOF:
            return 0  # Data up to XNU's clamped low-water mark, or a soft error.
        if event.fflags:
            return EOF | ERROR
        # An unknown descriptor (unregistered while the event was on its way)
        # is reported: the loop drops it, or its target confirms it.
        return EOF if mask != 0 else 0


def kqueue_hung_up(
    sock: socket.socket,
    new_kqueue: Optional[NewKqueue] = None,
    new_kevent: Optional[NewKevent] = None,
) -> tuple[bool, Optional[OSError]]:
    """Has the peer's FIN or a reset arrived on `sock`? Never waits; consumes nothing.

    Returns ``(answer, reset error)``. True for a FIN even behind unread
    bytes; a reset comes back as ``(True, the error)``, and the error stays
    in ``SO_ERROR`` for whoever reads it next.

    Raises:
        OSError: the kernel refused the filter (a pysock bug: a descriptor
            closed while its connection still watched it).
    """
    fd = sock.fileno()
    if fd < 0:
        return False, None  # Closed: there is no socket left to ask.
    kqueue = (new_kqueue or _stdlib("kqueue"))()
    try:
        change = _hangup_filter(new_kevent or _stdlib("kevent"), fd, EV_ADD | EV_ONESHOT)
        events = kqueue.control([change], 1, 0)
    finally:
        kqueue.close()
    for event in events:
        if event.flags & EV_ERROR and event.data:
            raise OSError(event.data, os.strerror(event.data))
        if event.flags & EV_EOF:
            return True, _error(event.fflags)
    return False, None
