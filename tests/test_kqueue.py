"""The kqueue hang-up set (pysock/_kqueue.py), against a fake kqueue on Linux.

Linux has no kqueue, so these tests check what pysock asks of it (the
changelists handed to ``kevent()``) and what it makes of the events a BSD or
macOS kernel would return (scripted here, following the kernel sources cited
in the module's docstring). They cannot show that a real kernel behaves that
way: that rests on the sources, not on a test.

`FakeKqueue` records every ``control()`` call and returns scripted events.
`SelectingKqueue` also makes the nested selector work, with ``select()`` on
its descriptor, so that a real `pysock._loop.Loop` can run on it.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import pytest

from pysock import _loop
from pysock._kqueue import (
    EOF,
    ERROR,
    EV_ADD,
    EV_CLEAR,
    EV_DELETE,
    EV_EOF,
    EV_ERROR,
    EV_ONESHOT,
    EVFILT_READ,
    NEVER_LOW,
    NOTE_LOWAT,
    READABLE,
    KqueueHangups,
    kqueue_hung_up,
)

from .helpers import WAKE

WITH_EOF = _loop.HANGUP_WITH_EOF
ERRORS_ONLY = _loop.HANGUP_ERRORS_ONLY


@dataclass(frozen=True)
class FakeKevent:
    """``select.kevent``'s fields and keyword arguments."""

    ident: int
    filter: int = EVFILT_READ
    flags: int = EV_ADD
    fflags: int = 0
    data: int = 0
    udata: int = 0


@dataclass(frozen=True)
class Call:
    """One ``control()`` call: its changelist, maxevents and timeout."""

    changes: Optional[list[Any]]
    maxevents: int
    timeout: Optional[float]


class FakeKqueue:
    """Records ``control()`` calls; a call that collects returns the next scripted reply."""

    def __init__(self, *replies: list[FakeKevent]) -> None:
        self.calls: list[Call] = []
        self.replies = list(replies)
        self.refuse: Optional[OSError] = None  # Raised by the next change.
        self.closed = False

    def control(
        self, changes: Optional[list[Any]], maxevents: int, timeout: Optional[float] = None, /
    ) -> list[Any]:
        assert not self.closed, "control() on a closed kqueue"
        self.calls.append(Call(None if changes is None else list(changes), maxevents, timeout))
        if changes and self.refuse is not None:
            refused, self.refuse = self.refuse, None
            raise refused
        if maxevents and self.replies:
            return self.replies.pop(0)
        return []

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return 1000

    def changelists(self) -> list[list[Any]]:
        return [call.changes for call in self.calls if call.changes is not None]


@contextlib.contextmanager
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    with ours, peer:
        yield ours, peer


def hangup_filter(fd: int, flags: int) -> FakeKevent:
    return FakeKevent(fd, EVFILT_READ, flags, NOTE_LOWAT, NEVER_LOW)


def new_set(kqueue: FakeKqueue) -> KqueueHangups:
    return KqueueHangups(lambda: kqueue, FakeKevent)


# -- the changelists -------------------------------------------------------------------


@pytest.mark.parametrize("mask", [WITH_EOF, ERRORS_ONLY], ids=["with-eof", "errors-only"])
def test_register_adds_a_cleared_read_filter_that_data_never_wakes(mask: int) -> None:
    kqueue = FakeKqueue()
    new_set(kqueue).register(5, mask)
    assert kqueue.calls == [Call([hangup_filter(5, EV_ADD | EV_CLEAR)], 0, 0)]
    assert NEVER_LOW >= 2**31 - 1  # Above any socket buffer (kern.ipc.maxsockbuf).


def test_modify_registers_the_same_filter_again() -> None:
    kqueue = FakeKqueue()
    hangups = new_set(kqueue)
    hangups.register(5, WITH_EOF)
    hangups.modify(5, ERRORS_ONLY)
    hangups.modify(5, WITH_EOF)
    # EV_CLEAR is fixed when a knote is made: one filter serves both masks.
    assert kqueue.changelists() == [[hangup_filter(5, EV_ADD | EV_CLEAR)]] * 3


def test_unregister_deletes_the_filter() -> None:
    kqueue = FakeKqueue()
    hangups = new_set(kqueue)
    hangups.register(5, WITH_EOF)
    hangups.unregister(5)
    assert kqueue.changelists()[-1] == [FakeKevent(5, EVFILT_READ, EV_DELETE)]
    hangups.register(5, ERRORS_ONLY)  # Forgotten: a new registration, not a duplicate.


def test_the_nested_selector_is_a_plain_level_triggered_read() -> None:
    kqueue = FakeKqueue([FakeKevent(7, flags=0, data=1)])
    hangups = new_set(kqueue)
    hangups.register_nested(7)
    assert kqueue.changelists() == [[FakeKevent(7, EVFILT_READ, EV_ADD)]]
    assert hangups.poll(0) == [(7, READABLE)]


def test_registrations_fail_as_epolls_do() -> None:
    """The loop relies on these: FileExistsError re-points a watch, OSError means gone."""
    kqueue = FakeKqueue()
    hangups = new_set(kqueue)
    with pytest.raises(FileNotFoundError):
        hangups.modify(5, ERRORS_ONLY)
    hangups.register(5, WITH_EOF)
    with pytest.raises(FileExistsError):
        hangups.register(5, ERRORS_ONLY)
    kqueue.refuse = FileNotFoundError(errno.ENOENT, "no such knote")
    with pytest.raises(FileNotFoundError):
        hangups.unregister(5)
    with pytest.raises(FileNotFoundError):
        hangups.modify(5, ERRORS_ONLY)  # Forgotten even though the kernel refused.


def test_a_refused_registration_is_not_remembered() -> None:
    kqueue = FakeKqueue([FakeKevent(5, flags=EV_EOF)])
    hangups = new_set(kqueue)
    kqueue.refuse = OSError(errno.EBADF, "bad descriptor")
    with pytest.raises(OSError, match="bad descriptor"):
        hangups.register(5, ERRORS_ONLY)
    hangups.register(5, WITH_EOF)  # No FileExistsError: the refused one left no trace.
    kqueue.refuse = OSError(errno.EBADF, "bad descriptor")
    with pytest.raises(OSError, match="bad descriptor"):
        hangups.modify(5, ERRORS_ONLY)
    assert hangups.poll(0) == [(5, EOF)]  # Still the mask before the refused change.


# -- what poll() reports ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "event", "reported"),
    [
        (WITH_EOF, FakeKevent(5, flags=EV_EOF), EOF),
        (WITH_EOF, FakeKevent(5, flags=EV_EOF, data=300), EOF),  # A FIN behind 300 bytes.
        (WITH_EOF, FakeKevent(5, flags=EV_EOF, fflags=errno.ECONNRESET), EOF | ERROR),
        (ERRORS_ONLY, FakeKevent(5, flags=EV_EOF, fflags=errno.ECONNRESET), EOF | ERROR),
        (WITH_EOF, FakeKevent(5, flags=EV_ERROR, data=errno.EBADF), ERROR),
        # The EOF after the FIN that an errors-only watch must not wake the loop for.
        (ERRORS_ONLY, FakeKevent(5, flags=EV_EOF), None),
        # Data up to XNU's clamped low-water mark (sb_hiwat): no EV_EOF, no report.
        (WITH_EOF, FakeKevent(5, flags=0, data=131072), None),
        (ERRORS_ONLY, FakeKevent(5, flags=0, data=131072), None),
    ],
    ids=[
        "fin",
        "fin-behind-data",
        "reset",
        "reset-after-fin",
        "ev-error",
        "eof-again-after-fin",
        "data-with-eof-watch",
        "data-with-errors-only-watch",
    ],
)
def test_poll_reports_ends_and_errors_only(
    mask: int, event: FakeKevent, reported: Optional[int]
) -> None:
    kqueue = FakeKqueue([event])
    hangups = new_set(kqueue)
    hangups.register(5, mask)
    assert hangups.poll(0) == ([] if reported is None else [(5, reported)])


def test_poll_reports_every_ended_descriptor_of_a_batch() -> None:
    kqueue = FakeKqueue(
        [
            FakeKevent(5, flags=EV_EOF),
            FakeKevent(6, flags=EV_EOF),  # Errors only: dropped.
            FakeKevent(7, flags=EV_EOF, fflags=errno.ECONNRESET),
            FakeKevent(9, flags=EV_EOF),  # Unregistered while on its way: reported.
        ]
    )
    hangups = new_set(kqueue)
    hangups.register(5, WITH_EOF)
    hangups.register(6, ERRORS_ONLY)
    hangups.register(7, ERRORS_ONLY)
    assert hangups.poll(0) == [(5, EOF), (7, EOF | ERROR), (9, EOF)]


@pytest.mark.parametrize(
    ("timeout", "waits"), [(-1, None), (None, None), (0, 0), (0.25, 0.25), (86400.0, 86400.0)]
)
def test_poll_waits_like_epoll(timeout: Optional[float], waits: Optional[float]) -> None:
    kqueue = FakeKqueue()
    assert new_set(kqueue).poll(timeout) == []
    assert kqueue.calls == [Call(None, 1023, waits)]


def test_close_closes_the_kqueue() -> None:
    kqueue = FakeKqueue()
    hangups = new_set(kqueue)
    assert hangups.fileno() == 1000
    hangups.close()
    assert kqueue.closed


# -- kqueue_hung_up ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "answer", "error"),
    [
        ([], False, None),
        ([FakeKevent(0, flags=EV_EOF | EV_ONESHOT, data=5)], True, None),  # FIN behind data.
        ([FakeKevent(0, flags=EV_EOF, fflags=errno.ECONNRESET)], True, ConnectionResetError),
        ([FakeKevent(0, flags=0, data=131072)], False, None),  # XNU's clamped mark: data.
    ],
    ids=["nothing", "fin-behind-data", "reset", "data"],
)
def test_kqueue_hung_up(
    reply: list[FakeKevent], answer: bool, error: Optional[type[OSError]]
) -> None:
    kqueue = FakeKqueue(reply)
    with pair() as (ours, peer):
        peer.sendall(b"unread")
        ended, reset = kqueue_hung_up(ours, lambda: kqueue, FakeKevent)
        assert ended is answer
        if error is None:
            assert reset is None
        else:
            assert isinstance(reset, error) and reset.errno == errno.ECONNRESET
        assert kqueue.calls == [Call([hangup_filter(ours.fileno(), EV_ADD | EV_ONESHOT)], 1, 0)]
        assert kqueue.closed
        assert ours.recv(64, socket.MSG_DONTWAIT) == b"unread"  # Nothing was consumed.


def test_kqueue_hung_up_raises_what_the_kernel_refused() -> None:
    kqueue = FakeKqueue([FakeKevent(0, flags=EV_ERROR, data=errno.EBADF)])
    with pair() as (ours, _), pytest.raises(OSError) as raised:
        kqueue_hung_up(ours, lambda: kqueue, FakeKevent)
    assert raised.value.errno == errno.EBADF
    assert kqueue.closed


def test_kqueue_hung_up_on_a_closed_socket_asks_nothing() -> None:
    kqueue = FakeKqueue()
    ours, peer = socket.socketpair()
    ours.close()
    peer.close()
    assert kqueue_hung_up(ours, lambda: kqueue, FakeKevent) == (False, None)
    assert kqueue.calls == []


# -- a real Loop on the fake ---------------------------------------------------------------


class SelectingKqueue(FakeKqueue):
    """A `FakeKqueue` whose waits block on the nested selector with ``select()``.

    Pushed events are returned by the next collecting call, with the nested
    selector's event when it is readable.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._nested: list[int] = []
        self._pushed: list[FakeKevent] = []

    def push(self, event: FakeKevent) -> None:
        with self._lock:
            self._pushed.append(event)

    def control(
        self, changes: Optional[list[Any]], maxevents: int, timeout: Optional[float] = None, /
    ) -> list[Any]:
        with self._lock:
            replied = super().control(changes, maxevents, timeout)
            for change in changes or []:
                if change.flags == EV_ADD and not change.fflags:
                    self._nested.append(change.ident)
            if not maxevents:
                return replied
        readable, _, _ = select.select(self._nested, [], [], timeout)
        with self._lock:
            pushed, self._pushed = self._pushed, []
        return [FakeKevent(fd, flags=0, data=1) for fd in readable] + pushed


class Target:
    def __init__(self) -> None:
        self.hung_up = threading.Event()

    def on_ready_in_loop(self, events: int) -> None:
        pass

    def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None:
        self.hung_up.set()


def test_the_loop_runs_on_kqueue_where_epoll_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    kqueue = SelectingKqueue()
    monkeypatch.delattr(select, "epoll")
    monkeypatch.setattr(select, "kqueue", lambda: kqueue, raising=False)
    monkeypatch.setattr(select, "kevent", FakeKevent, raising=False)
    loop = _loop.Loop()
    try:
        assert loop._hangups is not None
        assert isinstance(loop._hangups._kernel, KqueueHangups)
        assert loop._peek_watch is None
        nested = loop._selector.fileno()
        assert kqueue.changelists() == [[FakeKevent(nested, EVFILT_READ, EV_ADD)]]
        # Commands reach the thread through the nested selector.
        ran = threading.Event()
        loop.call_soon_threadsafe(ran.set)
        assert ran.wait(WAKE)
        with pair() as (ours, _):
            target = Target()
            assert loop.watch_hangup_threadsafe(ours, target, WITH_EOF)
            fd = ours.fileno()
            assert kqueue.changelists()[-1] == [hangup_filter(fd, EV_ADD | EV_CLEAR)]
            # The errors-only EOF is dropped; the FIN reaches the target.
            assert loop.watch_hangup_threadsafe(ours, target, ERRORS_ONLY)
            kqueue.push(FakeKevent(fd, flags=EV_EOF))
            loop.call_soon_threadsafe(_noop)
            synced = threading.Event()
            loop.call_soon_threadsafe(synced.set)
            assert synced.wait(WAKE)
            assert not target.hung_up.is_set()
            assert loop.watch_hangup_threadsafe(ours, target, WITH_EOF)
            kqueue.push(FakeKevent(fd, flags=EV_EOF, data=6))
            loop.call_soon_threadsafe(_noop)
            assert target.hung_up.wait(WAKE)
            loop.unwatch_hangup_threadsafe(ours)
            assert kqueue.changelists()[-1] == [FakeKevent(fd, EVFILT_READ, EV_DELETE)]
    finally:
        loop.stop_threadsafe()
    assert not loop._thread.is_alive()
    assert kqueue.closed


def _noop() -> None:
    pass
