"""The peek watch's limits with a ``select()`` selector (pysock._peekwatch).

``select()`` takes a fixed number of descriptors: CPython's Windows build 512
sockets per call, elsewhere only descriptors below ``FD_SETSIZE`` (1024). A
watch beyond either would make every ``select()`` of the loop fail, so the
watch refuses such sockets. A real `selectors.SelectSelector` is used; the
loop is a stand-in that runs the watch's scheduled callbacks when told to.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from pysock._peekwatch import IDLE_BEFORE_TAKING, SELECT_WATCHES, PeekWatch, Watched


class _Loop:
    """The two scheduling calls PeekWatch makes, run on demand in this thread."""

    def __init__(self) -> None:
        self.pending: list[Callable[..., None]] = []

    def call_at_threadsafe(self, deadline: float, callback: Callable[[], None]) -> None:
        self.pending.append(callback)

    def call_soon_threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
        self.pending.append(lambda: callback(*args))

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for callback in pending:
            callback()


class _Target:
    raw_reads = 0

    def __init__(self) -> None:
        self.taken = 0

    def take_unread_in_loop(self, sock: socket.socket) -> None:
        self.taken += 1

    def peek_in_loop(self, sock: socket.socket) -> tuple[str, None]:
        return "data", None


@pytest.fixture
def watch() -> Iterator[tuple[PeekWatch, selectors.SelectSelector, _Loop]]:
    selector = selectors.SelectSelector()
    loop = _Loop()
    yield PeekWatch(loop, selector, 0.0), selector, loop  # type: ignore[arg-type]
    selector.close()


def test_a_select_selector_watches_at_most_select_watches_sockets(
    watch: tuple[PeekWatch, selectors.SelectSelector, _Loop],
) -> None:
    peek_watch, selector, loop = watch
    target = _Target()
    sockets = [socket.socket() for _ in range(SELECT_WATCHES + 1)]
    try:
        assert all(peek_watch.watch_threadsafe(s, target) for s in sockets[:-1])
        assert not peek_watch.watch_threadsafe(sockets[-1], target)
        loop.run()
        assert len(selector.get_map()) == SELECT_WATCHES
        # Room again once one is unwatched.
        peek_watch.unwatch_threadsafe(sockets[0])
        loop.run()
        assert peek_watch.watch_threadsafe(sockets[-1], target)
        loop.run()
        assert len(selector.get_map()) == SELECT_WATCHES
        selector.select(0)  # Does not raise: every descriptor is within its reach.
    finally:
        for sock in sockets:
            sock.close()


def test_a_descriptor_select_cannot_take_is_not_put_in_the_selector(
    watch: tuple[PeekWatch, selectors.SelectSelector, _Loop],
) -> None:
    peek_watch, selector, loop = watch
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = 2000  # Beyond FD_SETSIZE (1024) on Linux and macOS.
    if hard != resource.RLIM_INFINITY and hard <= high:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} leaves no descriptor above {high}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, high + 1), hard))
    low = socket.socket()
    try:
        os.dup2(low.fileno(), high)
        beyond = socket.socket(fileno=high)
        try:
            target = _Target()
            assert peek_watch.watch_threadsafe(beyond, target)
            assert peek_watch.watch_threadsafe(low, target)
            loop.run()
            assert list(selector.get_map()) == [low.fileno()]
            selector.select(0)  # Would raise ValueError with `high` in it.
        finally:
            beyond.close()
    finally:
        low.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("idle", [0.0, IDLE_BEFORE_TAKING / 2])
def test_bytes_are_taken_only_after_idle_before_taking_with_no_raw_read(
    watch: tuple[PeekWatch, selectors.SelectSelector, _Loop], idle: float
) -> None:
    """The rule alone, with the clock set back instead of waited for."""
    peek_watch, _, _ = watch
    target = _Target()
    with socket.socket() as sock:
        watched = Watched(sock, lambda: target)  # type: ignore[arg-type]
        watched.reads = target.raw_reads
        watched.since = time.monotonic() - idle
        peek_watch._data_in_loop(watched, target)  # type: ignore[arg-type]
        assert target.taken == 0  # Not idle long enough.
        watched.since = time.monotonic() - IDLE_BEFORE_TAKING - 1
        target.raw_reads += 1  # A read ended since the last look: someone reads it.
        peek_watch._data_in_loop(watched, target)  # type: ignore[arg-type]
        assert target.taken == 0
        assert watched.reads == target.raw_reads  # Counted, and the idle time restarts.
        watched.since = time.monotonic() - IDLE_BEFORE_TAKING - 1
        peek_watch._data_in_loop(watched, target)  # type: ignore[arg-type]
        assert target.taken == 1  # No raw read for longer than the limit: taken.
