"""`HangupSet` (pysock/_hangups.py) alone: a real epoll set over loopback TCP sockets.

The loop's part is played by this thread: a stand-in records the flush that
`watch_threadsafe` schedules (`Loop.call_at_threadsafe`) and the test runs it
when it chooses, then calls `dispatch_in_loop` with a zero timeout where the
selector thread would wait. The kqueue behind the same calls is tested in
tests/test_kqueue.py.
"""

from __future__ import annotations

import contextlib
import gc
import select
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest

from pysock._hangups import HANGUP_ERRORS_ONLY, HANGUP_WITH_EOF, HangupSet

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="needs epoll")

# Seconds a dispatch waits for an event that should come: far above loopback's delay.
WAIT = 5.0


class _Loop:
    """The one call `HangupSet` makes on its loop, run on demand in this thread."""

    def __init__(self) -> None:
        self.scheduled: list[Callable[[], None]] = []

    def call_at_threadsafe(self, deadline: float, callback: Callable[[], None]) -> None:
        self.scheduled.append(callback)

    def run(self) -> None:
        scheduled, self.scheduled = self.scheduled, []
        for callback in scheduled:
            callback()


class _Target:
    def __init__(self) -> None:
        self.hangups = 0

    def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None:
        self.hangups += 1


class Fixture:
    def __init__(self) -> None:
        self.loop = _Loop()
        self.nested_recv, self.nested_send = socket.socketpair()
        self.nested_calls: list[float] = []
        self.hangups = HangupSet(self.loop, select.epoll(), self.nested_recv.fileno())  # type: ignore[arg-type]

    def dispatch(self, timeout: float = 0.0) -> None:
        self.hangups.dispatch_in_loop(timeout, self.nested_calls.append)

    def close(self) -> None:
        self.hangups.close()
        self.nested_recv.close()
        self.nested_send.close()


@pytest.fixture
def fx() -> Iterator[Fixture]:
    fixture = Fixture()
    yield fixture
    fixture.close()


@contextlib.contextmanager
def connected() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback TCP connection: ours, and the peer's end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=WAIT)
        peer, _ = listener.accept()
    with ours, peer:
        yield ours, peer


def reset(peer: socket.socket) -> None:
    """Close `peer` with SO_LINGER 0: a reset, not a FIN."""
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()


def test_a_new_watch_waits_for_the_flush_and_still_sees_an_earlier_fin(fx: Fixture) -> None:
    target = _Target()
    with connected() as (ours, peer), connected() as (other, _):
        assert fx.hangups.watch_threadsafe(ours, target, HANGUP_WITH_EOF, defer=True)
        assert fx.hangups.watch_threadsafe(other, _Target(), HANGUP_WITH_EOF, defer=True)
        assert len(fx.loop.scheduled) == 1  # One flush for a burst of new watches.
        peer.shutdown(socket.SHUT_WR)
        fx.dispatch()
        assert target.hangups == 0  # Not in the kernel's set yet.
        fx.loop.run()
        fx.dispatch(WAIT)  # Level-triggered: the FIN that came first is reported.
        assert target.hangups == 1
        fx.hangups.unwatch_threadsafe(ours)
        fx.hangups.unwatch_threadsafe(other)


def test_a_watch_removed_before_the_flush_never_reaches_the_kernel(fx: Fixture) -> None:
    target = _Target()
    with connected() as (ours, peer):
        assert fx.hangups.watch_threadsafe(ours, target, HANGUP_WITH_EOF, defer=True)
        fx.hangups.unwatch_threadsafe(ours)
        fx.loop.run()
        peer.shutdown(socket.SHUT_WR)
        fx.dispatch()
        assert target.hangups == 0
        # Not registered: the kernel's set takes the descriptor afresh.
        assert fx.hangups.watch_threadsafe(ours, target, HANGUP_WITH_EOF)
        fx.dispatch(WAIT)
        assert target.hangups == 1
        fx.hangups.unwatch_threadsafe(ours)


def test_data_never_wakes_the_set_but_a_fin_behind_it_does(fx: Fixture) -> None:
    target = _Target()
    with connected() as (ours, peer):
        assert fx.hangups.watch_threadsafe(ours, target, HANGUP_WITH_EOF)
        peer.sendall(b"unread bytes")
        fx.dispatch(0.05)
        assert target.hangups == 0
        peer.shutdown(socket.SHUT_WR)
        fx.dispatch(WAIT)
        assert target.hangups == 1
        assert ours.recv(100) == b"unread bytes"  # The set took nothing.
        fx.hangups.unwatch_threadsafe(ours)


def test_errors_only_ignores_the_fin_and_reports_a_later_reset(fx: Fixture) -> None:
    target = _Target()
    with connected() as (ours, peer):
        peer.shutdown(socket.SHUT_WR)
        assert fx.hangups.watch_threadsafe(ours, target, HANGUP_ERRORS_ONLY)
        fx.dispatch(0.05)
        assert target.hangups == 0
        ours.sendall(b"x")  # The peer still reads: its reset comes with the close.
        reset(peer)
        fx.dispatch(WAIT)
        assert target.hangups == 1
        fx.hangups.unwatch_threadsafe(ours)


def test_a_forgotten_target_is_not_called_and_a_ready_selector_is_run(fx: Fixture) -> None:
    target = _Target()
    with connected() as (ours, peer):
        assert fx.hangups.watch_threadsafe(ours, target, HANGUP_WITH_EOF)
        del target
        gc.collect()
        peer.shutdown(socket.SHUT_WR)
        fx.dispatch(0.05)  # Reported by the kernel, dropped: nobody to call.
        fx.nested_send.send(b"!")
        fx.dispatch(WAIT)
        assert fx.nested_calls[-1:] == [0]  # The nested selector runs without waiting.
        fx.hangups.unwatch_threadsafe(ours)


def test_a_target_that_raises_is_reported_and_the_others_are_served(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    class Failing(_Target):
        def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None:
            raise RuntimeError("a bug")

    failing, target = Failing(), _Target()
    with connected() as (first, first_peer), connected() as (second, second_peer):
        assert fx.hangups.watch_threadsafe(first, failing, HANGUP_WITH_EOF)
        assert fx.hangups.watch_threadsafe(second, target, HANGUP_WITH_EOF)
        first_peer.shutdown(socket.SHUT_WR)
        second_peer.shutdown(socket.SHUT_WR)
        for _ in range(2):
            fx.dispatch(WAIT)
            if target.hangups and reported:
                break
        assert target.hangups >= 1
        assert [type(r.exc_value) for r in reported[:1]] == [RuntimeError]
        fx.hangups.unwatch_threadsafe(first)
        fx.hangups.unwatch_threadsafe(second)


def test_once_closed_watching_does_nothing(fx: Fixture) -> None:
    with connected() as (ours, _):
        fx.hangups.close()
        assert not fx.hangups.watch_threadsafe(ours, _Target(), HANGUP_WITH_EOF)
        fx.hangups.unwatch_threadsafe(ours)  # No error: the set is gone.
        assert fx.loop.scheduled == []
