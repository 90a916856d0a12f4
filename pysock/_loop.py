"""The background selector thread: one per process, serving every socket.

Theory of operation
===================

pysock does its I/O in the caller's thread. A read first tries the socket and
only then waits; a write hands the caller's buffer to the kernel; a connect to
an IP literal is started by `connect()` itself. The background thread,
``pysock-selector``, exists for the events that nobody may be waiting for:

* a connect that did not complete at once (it completes ``opened``), and its
  ``connect_timeout`` deadline;
* the peer's FIN or RST arriving on a socket that no thread is reading, which
  must still complete ``closed`` (a web view or a pool learns of it with no
  thread reading);
* releasing the descriptor of a socket that is registered in the selector
  (closing a registered descriptor first would leave epoll watching a file
  that another process, after ``fork()``, may still hold open).

Only this thread touches the selector; other threads hand it commands with
`Loop.call_soon_threadsafe`, which appends to a deque and wakes the thread
through a socketpair (CPython's asyncio ``_write_to_self``). A flag keeps a
burst of commands down to one wake-up byte.

Idle sockets are watched for hang-ups only, in a second epoll set (the
*hang-up set*); the thread waits on it, with the selector's own descriptor
nested inside (see `Loop.__init__` for why that way round). Its registrations
ask for ``EPOLLRDHUP`` instead of ``EPOLLIN``: the thread wakes for the peer's
FIN, a reset or an error, never for ordinary data, so it stays off the data
path even while another thread streams gigabytes through the socket, and it
sees a FIN even when unread data sits in front of it. Any thread may add or
remove a socket there (``epoll_ctl`` is thread-safe and a waiting
``epoll_wait`` sees the change), and that is deliberate: handing each
open and close to this thread cost a GIL hand-off apiece and held
connect+close to 0.2x of ``socket.create_connection`` (docs/performance.md).
Each connection changes its own registration only under its own lock and
removes it before closing the descriptor, so the set never holds a closed
file. A new connection is not added at once: it waits in a table that the
thread moves into the set every `HANGUP_GRACE` seconds, so a connection that
lives shorter than that (connect, one request, close) never pays for the two
``epoll_ctl`` calls (20-35 µs together on loopback, a third of a raw
connect+close). Epoll is level-triggered, so a hang-up that came before the
registration is still reported, up to `HANGUP_GRACE` later.

An event can still arrive late, for a descriptor that was closed and reused
meanwhile; targets therefore confirm the hang-up on their own socket with a
zero-timeout check before acting (`pysock._platform.hung_up`). On macOS and
the BSDs the hang-up set is a kqueue behind the same calls (`pysock._kqueue`):
a read filter that data never wakes reports the FIN, even behind unread
bytes, and the reset. Platforms
with neither watch idle sockets with readiness plus a peek instead
(`pysock._peekwatch`), which takes the bytes that wait unread on an idle
socket into its reader's stash to reach a FIN behind them; the sockets it
holds in the selector are closed on this thread (`watches_in_selector`).

Targets registered here are held through weak references, so the loop never
keeps a forgotten socket alive; the socket's finalizer closes it.
"""

from __future__ import annotations

import atexit
import collections
import heapq
import itertools
import os
import select
import selectors
import socket
import sys
import threading
import time
import traceback
import weakref
from typing import Any, Callable, Final, Optional, Protocol

from ._kqueue import KqueueHangups
from ._peekwatch import PeekWatch, Watched

__all__ = ["Loop", "Timer", "fork_generation", "get_loop", "report_bug"]

_EPOLLRDHUP: Final = getattr(select, "EPOLLRDHUP", 0)
# A hang-up watch: peer FIN (EPOLLRDHUP); EPOLLERR and EPOLLHUP are always reported.
# With the peek watch (`pysock._peekwatch`) any non-zero mask means "watch".
HANGUP_WITH_EOF: Final = _EPOLLRDHUP or 1
# Only errors and full hang-ups: used once the peer's EOF has been seen.
HANGUP_ERRORS_ONLY: Final = 0
# How long a new connection waits before its hang-up watch reaches the kernel.
HANGUP_GRACE: Final = 0.01
_MAX_WAIT: Final = 86400.0  # Seconds: the longest single wait of the loop thread.
_ERROR_PAUSE: Final = 0.01  # Seconds after an unexpected wait error: no busy loop.
# How long the exiting interpreter waits for the thread to stop: it only has to leave select().
_STOP_JOIN_TIMEOUT: Final = 1.0


class Target(Protocol):
    """What the loop calls back when a watched socket is ready."""

    def on_ready_in_loop(self, events: int) -> None: ...

    def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None: ...


class Timer:
    """A callback scheduled on the loop; `cancel()` is safe from any thread."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """The process's background selector thread; see the module docstring."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._hangups: Any = None
        if hasattr(select, "epoll"):
            self._hangups = select.epoll()
        elif hasattr(select, "kqueue"):  # macOS, the BSDs: EV_EOF for EPOLLRDHUP.
            self._hangups = KqueueHangups()
        # Without either: readiness plus a peek, in the selector (pysock._peekwatch).
        self._peek_watch = (
            PeekWatch(self, self._selector, HANGUP_GRACE) if self._hangups is None else None
        )
        self._hangup_targets: dict[int, weakref.ref[Target]] = {}
        # New watches not yet in the kernel's set: fd -> (target, mask).
        # Re-entrant: a finalizer run by the garbage collector inside a critical
        # section may close (and so unwatch) another connection.
        self._hangup_lock = threading.RLock()
        self._deferred: dict[int, tuple[weakref.ref[Target], int]] = {}
        self._deferred_flush_scheduled = False
        self._closed = False
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self._selector.register(self._wake_recv, selectors.EVENT_READ, None)
        if self._hangups is not None:
            # The thread waits on the hang-up set, with the selector nested in it,
            # not the other way round: adding a socket to an epoll set that is
            # itself watched by another one makes the kernel run its loop and
            # path checks under a global mutex, which cost 12 µs per connect+close.
            if isinstance(self._hangups, KqueueHangups):
                self._hangups.register_nested(self._selector.fileno())
            else:
                self._hangups.register(self._selector.fileno(), select.EPOLLIN)
        self._commands: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._wakeup_pending = False
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._stopping = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="pysock-selector", daemon=True)
        self._thread.start()

    # -- any thread ---------------------------------------------------------------

    def call_soon_threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread, soon."""
        self._commands.append((callback, args))
        if not self._wakeup_pending:
            self._wakeup_pending = True
            try:
                self._wake_send.send(b"\0")
            except OSError:
                pass  # Full buffer: a wake-up is already pending. Closed: the loop is gone.

    def call_at_threadsafe(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the loop thread at `deadline` (`time.monotonic()`)."""
        timer = Timer(deadline, callback)
        self.call_soon_threadsafe(self._add_timer, timer)
        return timer

    def watch_hangup_threadsafe(
        self, sock: socket.socket, target: Target, mask: int, defer: bool = False
    ) -> bool:
        """Add `sock` to the hang-up set, or change its mask (see the module docstring).

        With `defer` (a new connection) the watch reaches the kernel within
        `HANGUP_GRACE` seconds, unless it is removed first. The caller holds the
        target's lock, so no other thread changes this socket's registration
        meanwhile. Returns False if nothing watches it: with the peek watch, a
        mask of `HANGUP_ERRORS_ONLY` (a readable socket at EOF would wake it for
        ever; the next read or write meets a later reset), or a socket that
        ``select()`` cannot take.
        """
        if self._hangups is None:
            if self._peek_watch is None or self._closed:
                return False
            if not mask:
                self._peek_watch.unwatch_threadsafe(sock)
                return False
            return self._peek_watch.watch_threadsafe(sock, target)
        fd = sock.fileno()
        ref = weakref.ref(target)
        with self._hangup_lock:
            if self._closed:
                return False  # After the loop stopped (interpreter exit): nothing to watch.
            if defer or fd in self._deferred:
                self._deferred[fd] = (ref, mask)
                if self._deferred_flush_scheduled:
                    return True
                self._deferred_flush_scheduled = True
            else:
                self._watch_now(fd, ref, mask)
                return True
        self.call_at_threadsafe(time.monotonic() + HANGUP_GRACE, self._flush_deferred)
        return True

    def _watch_now(self, fd: int, ref: weakref.ref[Target], mask: int) -> None:
        """Put `fd` in the kernel's hang-up set. Holds ``_hangup_lock``."""
        known = self._hangup_targets.get(fd)
        self._hangup_targets[fd] = ref
        if known is None:
            try:
                self._hangups.register(fd, mask)
                return
            except FileExistsError:
                pass  # Registered under an earlier target: re-point it.
        self._hangups.modify(fd, mask)

    def unwatch_hangup_threadsafe(self, sock: socket.socket) -> None:
        """Remove `sock` from the hang-up set; call before closing its descriptor."""
        fd = sock.fileno()
        if self._hangups is None:
            if self._peek_watch is not None and fd >= 0 and not self._closed:
                self._peek_watch.unwatch_threadsafe(sock)
            return
        if fd < 0:
            return
        with self._hangup_lock:
            if self._closed:
                return  # The set is gone with the stopped loop.
            if self._deferred.pop(fd, None) is not None:
                return  # Never reached the kernel: nothing to undo.
            self._hangup_targets.pop(fd, None)
            try:
                self._hangups.unregister(fd)
            except OSError:
                pass  # Not registered.

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    @property
    def watches_in_selector(self) -> bool:
        """True if the idle watch holds sockets in the selector (no epoll: `pysock._peekwatch`).

        A watched socket's descriptor must then be closed on this thread,
        after it left the selector: ``select()`` fails on a closed one.
        """
        return self._peek_watch is not None

    @property
    def stopped(self) -> bool:
        """True once the loop stopped (interpreter exit): its callbacks no longer run."""
        return self._stopping

    def stop_threadsafe(self, timeout: float = _STOP_JOIN_TIMEOUT) -> None:
        self._stopping = True
        self.call_soon_threadsafe(_noop)
        if not self.in_loop_thread():
            self._thread.join(timeout)

    # -- loop thread only ---------------------------------------------------------

    def watch_writable(self, sock: socket.socket, target: Target) -> None:
        """Call ``target.on_ready_in_loop`` when `sock` is writable (a connect ended)."""
        self._register(sock, selectors.EVENT_WRITE, target)

    def watch(self, sock: socket.socket, events: int, target: Target) -> None:
        """Call ``target.on_ready_in_loop`` for the selector `events` (a TLS handshake)."""
        self._register(sock, events, target)

    def unwatch(self, sock: socket.socket) -> None:
        """Forget `sock` if registered. Call before its descriptor is closed."""
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _register(self, sock: socket.socket, events: int, target: Target) -> None:
        ref = weakref.ref(target)
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            self._selector.register(sock, events, ref)
            return
        self._selector.modify(key.fileobj, events, ref)

    def _flush_deferred(self) -> None:
        with self._hangup_lock:
            deferred, self._deferred = self._deferred, {}
            self._deferred_flush_scheduled = False
            for fd, (ref, mask) in deferred.items():
                if ref() is None:
                    continue  # A dead target's finalizer unwatches it.
                try:
                    self._watch_now(fd, ref, mask)
                except OSError as exc:  # A pysock bug: a descriptor closed while watched.
                    self._hangup_targets.pop(fd, None)
                    report_bug(exc, ref())

    def _add_timer(self, timer: Timer) -> None:
        heapq.heappush(self._timers, (timer.deadline, next(self._sequence), timer))

    def _run(self) -> None:
        monotonic = time.monotonic
        while not self._stopping:
            timeout: Optional[float] = None
            if self._timers:
                # At most a day per wait: a huge deadline must not overflow epoll.
                timeout = min(max(0.0, self._timers[0][0] - monotonic()), _MAX_WAIT)
            try:
                if self._hangups is None:
                    self._dispatch_selector(timeout)
                else:
                    self._dispatch_hangups(timeout)
            except Exception as exc:  # A pysock bug: report it, never let the thread die.
                report_bug(exc, self)
                time.sleep(_ERROR_PAUSE)
            # Helpers, not inline code: no local of this frame may keep a
            # forgotten socket alive while select() waits.
            self._run_timers(monotonic())
            self._run_commands()
        self._close_resources()

    def call_later_in_loop(self, delay: float, callback: Callable[[], None]) -> None:
        """Loop thread: run `callback` on this thread `delay` seconds from now."""
        self._add_timer(Timer(time.monotonic() + delay, callback))

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        ref = key.data
        if ref is None:
            self._drain_wakeups()
            return
        if type(ref) is Watched:
            assert self._peek_watch is not None
            self._peek_watch.ready_in_loop(ref, events)
            return
        target = ref()
        if target is None:
            self.unwatch(key.fileobj)  # type: ignore[arg-type]
        else:
            _guarded(target.on_ready_in_loop, events)

    def _dispatch_selector(self, timeout: Optional[float]) -> None:
        for key, events in self._selector.select(timeout):
            self._dispatch(key, events)

    def _dispatch_hangups(self, timeout: Optional[float]) -> None:
        selector_fd = self._selector.fileno()
        for fd, _ in self._hangups.poll(-1 if timeout is None else timeout):
            if fd == selector_fd:
                self._dispatch_selector(0)
                continue
            ref = self._hangup_targets.get(fd)
            target = ref() if ref is not None else None
            if target is not None:  # A dead target's finalizer already removed it.
                _guarded(target.on_hangup_in_loop)

    def _run_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                _guarded(timer.callback)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_recv.recv(4096):
                pass
        except OSError:
            pass

    def _run_commands(self) -> None:
        # Clear the flag before draining, so a command appended after this point
        # always writes a new wake-up byte (see call_soon_threadsafe).
        self._wakeup_pending = False
        commands = self._commands
        while commands:
            callback, args = commands.popleft()
            _guarded(callback, *args)

    def _close_resources(self) -> None:
        if self._peek_watch is not None:
            self._peek_watch.close_all()
        self._selector.close()
        with self._hangup_lock:  # Sockets closed later (at exit) must not touch it.
            self._closed = True
            if self._hangups is not None:
                self._hangups.close()
        self._wake_recv.close()
        self._wake_send.close()

    def abandon_after_fork(self) -> None:
        """In a forked child: drop the parent's loop without touching its thread."""
        self._stopping = True
        self._close_resources()


def _noop() -> None:
    pass


def _guarded(callback: Callable[..., None], *args: Any) -> None:
    # Callbacks route their own errors to the sockets' futures. One that still
    # raises is a pysock bug: report it like an exception in __del__ (pytest
    # turns that into a failure) and keep serving every other socket.
    try:
        callback(*args)
    except Exception as exc:
        report_bug(exc, callback)


class _Unraisable:
    def __init__(
        self, exc: BaseException, obj: object, where: str = "the selector thread"
    ) -> None:
        self.exc_type: type[BaseException] = type(exc)
        self.exc_value: Optional[BaseException] = exc
        self.exc_traceback = exc.__traceback__
        self.err_msg: Optional[str] = f"pysock: exception in {where}"
        self.object = obj


def report_bug(exc: BaseException, obj: object, where: str = "the selector thread") -> None:
    """Report an exception no caller can receive, as Python reports one in ``__del__``.

    An installed hook (pytest's, which fails the test) gets it. The default hook
    accepts only its own argument type, which Python code cannot build, so in
    its place the report is printed the way it prints one.
    """
    args = _Unraisable(exc, obj, where)
    hook = sys.unraisablehook
    if hook is not sys.__unraisablehook__:
        hook(args)
        return
    stderr = sys.stderr
    if stderr is None:
        return
    print(f"{args.err_msg}: {obj!r}", file=stderr)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=stderr)


_loop: Optional[Loop] = None
_loop_lock = threading.Lock()
_fork_generation = 0
_after_fork_callbacks: list[Callable[[], None]] = []


def get_loop() -> Loop:
    """Return the process's loop, starting its thread on first use (never at import)."""
    loop = _loop
    if loop is not None:
        return loop
    return _start_loop()


def _start_loop() -> Loop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = Loop()
        return _loop


def fork_generation() -> int:
    """A number that changes in a child process after each `os.fork()`."""
    return _fork_generation


def register_after_fork(callback: Callable[[], None]) -> None:
    """Run `callback` in a forked child, after the loop has been reset."""
    _after_fork_callbacks.append(callback)


def _after_fork_in_child() -> None:
    global _loop, _loop_lock, _fork_generation
    _fork_generation += 1
    _loop_lock = threading.Lock()
    loop, _loop = _loop, None
    if loop is not None:
        loop.abandon_after_fork()
    for callback in _after_fork_callbacks:
        callback()


def _stop_at_exit() -> None:
    loop = _loop
    if loop is not None and loop._pid == os.getpid():
        loop.stop_threadsafe()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_at_exit)
