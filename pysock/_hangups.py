"""`HangupSet`: the kernel's set of idle sockets the selector thread watches for hang-ups.

`closed` must complete when the peer ends a connection that no thread is
reading (a web view or a pool learns of it with no thread reading), so the
selector thread (`pysock._loop`) watches every open socket. It waits on this
set, an epoll instance, with the loop's selector nested inside it (see
`HangupSet.__init__` for why that way round). Its registrations ask for
``EPOLLRDHUP`` instead of ``EPOLLIN``: the thread wakes for the peer's FIN, a
reset or an error, never for ordinary data, so it stays off the data path even
while another thread streams gigabytes through the socket, and it sees a FIN
even when unread data sits in front of it. On macOS and the BSDs the set is a
kqueue behind the same calls (`pysock._kqueue`): a read filter that data never
wakes reports the FIN, even behind unread bytes, and the reset. Platforms with
neither use `pysock._peekwatch` instead, and `open_hangup_set` returns None.

Any thread may add or remove a socket here (``epoll_ctl`` is thread-safe and
a waiting ``epoll_wait`` sees the change), and that is deliberate: handing
each open and close to the selector thread cost a GIL hand-off apiece and
held connect+close to 0.2x of ``socket.create_connection``
(docs/performance.md). Each connection changes its own registration only
under its own lock and removes it before closing the descriptor, so the set
never holds a closed file. A new connection is not added at once: it waits in
a table that the loop thread moves into the set every `HANGUP_GRACE` seconds,
so a connection that lives shorter than that (connect, one request, close)
never pays for the two ``epoll_ctl`` calls (20-35 µs together on loopback, a
third of a raw connect+close). Epoll is level-triggered, so a hang-up that
came before the registration is still reported, up to `HANGUP_GRACE` later.

An event can still arrive late, for a descriptor that was closed and reused
meanwhile; targets therefore confirm the hang-up on their own socket with a
zero-timeout check before acting (`pysock._platform.hung_up`). Targets are
held through weak references, so the set never keeps a forgotten socket
alive; the socket's finalizer removes it.
"""

from __future__ import annotations

import select
import selectors
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Final, Optional, Protocol

from ._bugs import guarded, report_bug
from ._kqueue import KqueueHangups

if TYPE_CHECKING:
    from ._loop import Loop

__all__ = [
    "HANGUP_ERRORS_ONLY",
    "HANGUP_GRACE",
    "HANGUP_WITH_EOF",
    "HangupSet",
    "Target",
    "open_hangup_set",
]

_EPOLLRDHUP: Final = getattr(select, "EPOLLRDHUP", 0)
# A hang-up watch: peer FIN (EPOLLRDHUP); EPOLLERR and EPOLLHUP are always reported.
# With the peek watch (`pysock._peekwatch`) any non-zero mask means "watch".
HANGUP_WITH_EOF: Final = _EPOLLRDHUP or 1
# Only errors and full hang-ups: used once the peer's EOF has been seen.
HANGUP_ERRORS_ONLY: Final = 0
# How long a new connection waits before its hang-up watch reaches the kernel.
HANGUP_GRACE: Final = 0.01


class Target(Protocol):
    """What the set calls back, on the loop thread, when a watched socket hung up."""

    def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None: ...


def open_hangup_set(loop: Loop, selector: selectors.BaseSelector) -> Optional[HangupSet]:
    """The hang-up set of this platform (epoll, else kqueue), with `selector` nested in it.

    None where neither exists: the selector is then a ``poll()`` or ``select()``
    one, which has no descriptor to nest.
    """
    if hasattr(select, "epoll"):
        return HangupSet(loop, select.epoll(), selector.fileno())  # type: ignore[attr-defined]
    if hasattr(select, "kqueue"):  # macOS, the BSDs: EV_EOF for EPOLLRDHUP.
        return HangupSet(loop, KqueueHangups(), selector.fileno())  # type: ignore[attr-defined]
    return None


class HangupSet:
    """The loop's hang-up set; see the module docstring.

    `loop` is used only to schedule the flush of new watches
    (`Loop.call_at_threadsafe`). Watching and unwatching are safe from any
    thread; ``*_in_loop`` methods run on the loop thread.
    """

    def __init__(self, loop: Loop, kernel: Any, nested_fd: int) -> None:
        self._loop = loop
        self._kernel = kernel  # A select.epoll, or a KqueueHangups with its calls.
        self._nested = nested_fd
        self._targets: dict[int, weakref.ref[Target]] = {}
        # Re-entrant: a finalizer run by the garbage collector inside a critical
        # section may close (and so unwatch) another connection.
        self._lock = threading.RLock()
        # New watches not yet in the kernel's set: fd -> (target, mask).
        self._deferred: dict[int, tuple[weakref.ref[Target], int]] = {}
        self._flush_scheduled = False
        self._closed = False
        # The loop thread waits on this set, with the selector nested in it, not
        # the other way round: adding a socket to an epoll set that is itself
        # watched by another one makes the kernel run its loop and path checks
        # under a global mutex, which cost 12 µs per connect+close.
        if isinstance(kernel, KqueueHangups):
            kernel.register_nested(nested_fd)
        else:
            kernel.register(nested_fd, select.EPOLLIN)

    # -- any thread ---------------------------------------------------------------

    def watch_threadsafe(
        self, sock: socket.socket, target: Target, mask: int, defer: bool = False
    ) -> bool:
        """Add `sock` to the set, or change its mask; False once the set is closed.

        With `defer` (a new connection) the watch reaches the kernel within
        `HANGUP_GRACE` seconds, unless it is removed first. The caller holds the
        target's lock, so no other thread changes this socket's registration
        meanwhile.
        """
        fd = sock.fileno()
        ref = weakref.ref(target)
        with self._lock:
            if self._closed:
                return False  # After the loop stopped (interpreter exit): nothing to watch.
            if defer or fd in self._deferred:
                self._deferred[fd] = (ref, mask)
                if self._flush_scheduled:
                    return True
                self._flush_scheduled = True
            else:
                self._watch_now(fd, ref, mask)
                return True
        self._loop.call_at_threadsafe(time.monotonic() + HANGUP_GRACE, self._flush_deferred)
        return True

    def _watch_now(self, fd: int, ref: weakref.ref[Target], mask: int) -> None:
        """Put `fd` in the kernel's set. Holds ``_lock``."""
        known = self._targets.get(fd)
        self._targets[fd] = ref
        if known is None:
            try:
                self._kernel.register(fd, mask)
                return
            except FileExistsError:
                pass  # Registered under an earlier target: re-point it.
        self._kernel.modify(fd, mask)

    def unwatch_threadsafe(self, sock: socket.socket) -> None:
        """Remove `sock` from the set; call before closing its descriptor."""
        fd = sock.fileno()
        if fd < 0:
            return
        with self._lock:
            if self._closed:
                return  # The set is gone with the stopped loop.
            if self._deferred.pop(fd, None) is not None:
                return  # Never reached the kernel: nothing to undo.
            self._targets.pop(fd, None)
            try:
                self._kernel.unregister(fd)
            except OSError:
                pass  # Not registered.

    def close(self) -> None:
        """Close the kernel's set; later watches and unwatches do nothing."""
        with self._lock:  # Sockets closed later (at exit) must not touch it.
            self._closed = True
            self._kernel.close()

    # -- loop thread only ---------------------------------------------------------

    def _flush_deferred(self) -> None:
        with self._lock:
            deferred, self._deferred = self._deferred, {}
            self._flush_scheduled = False
            for fd, (ref, mask) in deferred.items():
                if ref() is None:
                    continue  # A dead target's finalizer unwatches it.
                try:
                    self._watch_now(fd, ref, mask)
                except OSError as exc:  # A pysock bug: a descriptor closed while watched.
                    self._targets.pop(fd, None)
                    report_bug(exc, ref())

    def dispatch_in_loop(
        self, timeout: Optional[float], nested_ready: Callable[[float], None]
    ) -> None:
        """Wait up to `timeout` seconds (None: no limit) and call back the hung-up targets.

        When the nested selector is ready, `nested_ready(0)` runs it.
        """
        for fd, _ in self._kernel.poll(-1 if timeout is None else timeout):
            if fd == self._nested:
                nested_ready(0)
                continue
            ref = self._targets.get(fd)
            target = ref() if ref is not None else None
            if target is not None:  # A dead target's finalizer already removed it.
                guarded(target.on_hangup_in_loop)
