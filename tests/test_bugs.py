"""Reporting pysock's own bugs (pysock/_bugs.py), and the loop serving on after one."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

from pysock import _loop
from pysock._bugs import guarded, report_bug

# Seconds to wait for the loop thread: far above any scheduling delay.
WAKE = 10.0


def _fail() -> None:
    raise RuntimeError("a bug")


def test_an_installed_hook_gets_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    owner = object()
    guarded(_fail)
    report_bug(ValueError("lost"), owner, "a pysock-dns thread")
    assert [(r.exc_type, r.object) for r in reported] == [
        (RuntimeError, _fail),
        (ValueError, owner),
    ]
    assert reported[0].err_msg == "pysock: exception in the selector thread"
    assert reported[1].err_msg == "pysock: exception in a pysock-dns thread"
    assert reported[0].exc_traceback is reported[0].exc_value.__traceback__


def test_without_a_hook_the_report_is_printed_as_python_prints_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    guarded(_fail)
    err = capsys.readouterr().err
    assert err.startswith(f"pysock: exception in the selector thread: {_fail!r}\n")
    assert "Traceback (most recent call last):" in err
    assert err.rstrip().endswith("RuntimeError: a bug")


def test_guarded_passes_the_arguments_and_lets_base_exceptions_through() -> None:
    got: list[int] = []
    guarded(got.append, 7)
    assert got == [7]
    with pytest.raises(KeyboardInterrupt):
        guarded(_interrupt)


def _interrupt() -> None:
    raise KeyboardInterrupt


def test_a_loop_command_that_raises_is_reported_and_the_loop_serves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    loop = _loop.Loop()  # Its own thread, not the process's loop.
    try:
        loop.call_soon_threadsafe(_fail)
        timer_ran = threading.Event()
        loop.call_at_threadsafe(0.0, _fail)
        loop.call_at_threadsafe(0.0, timer_ran.set)
        ran = threading.Event()
        loop.call_soon_threadsafe(ran.set)
        assert ran.wait(WAKE)
        assert timer_ran.wait(WAKE)
    finally:
        loop.stop_threadsafe(WAKE)
    assert not loop._thread.is_alive()
    assert [type(r.exc_value) for r in reported] == [RuntimeError, RuntimeError]
