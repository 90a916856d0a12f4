"""Ctrl-C during a blocking call in the main thread: promptly interrupted, and what
it leaves behind (docs/reliability.md, "Processes and signals").

Each case runs in a child interpreter (`tests.peers.child_scripts`), which
measures its own timings with `time.monotonic()`; the parent only collects the
reports, with generous timeouts, and kills a child that outlives them.
tests/test_process.py covers an interrupt in the pytest process itself.
"""

from __future__ import annotations

import functools
from typing import Final, Optional

import pytest

from .peers.child_scripts import (
    BIG_WRITE,
    CONNECTING_OPS,
    READ_OPS,
    TIMEOUTS,
    ChildRun,
    run_child,
    timeout_id,
)

pytestmark = pytest.mark.process

# The bound docs/reliability.md promises, measured in the child: Ctrl-C stops a
# blocking call before a person at the terminal presses it again.
INTERRUPT_BOUND: Final = 0.5


# -- Ctrl-C during a blocking call in the main thread: promptly interrupted --------------


@functools.cache
def interrupt_run(op: str, timeout: Optional[float]) -> ChildRun:
    run = run_child("interrupt", op, str(timeout))
    assert run.returncode == 0 and not run.stderr, (run.returncode, run.stderr)
    return run


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=timeout_id)
@pytest.mark.parametrize("op", [*READ_OPS, "write", *CONNECTING_OPS])
def test_ctrl_c_interrupts_a_blocking_call_within_half_a_second(
    op: str, timeout: Optional[float]
) -> None:
    report = interrupt_run(op, timeout).report
    assert report["outcome"] == "KeyboardInterrupt"
    assert report["delay"] < INTERRUPT_BOUND


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=timeout_id)
@pytest.mark.parametrize("op", READ_OPS)
def test_an_interrupted_read_leaves_the_socket_usable(op: str, timeout: Optional[float]) -> None:
    report = interrupt_run(op, timeout).report
    assert report["primed"] == "hello\n", report
    assert report["closed_done_after_interrupt"] is False, report
    assert report["peer_got"] == "ping", report  # Writing still works.
    assert report["closed_result"] == "None", report  # A clean end at the peer's EOF.


# Every read keeps what an interrupted call gathered, readline() on the C fast
# path included: pysock's raw layer parks the KeyboardInterrupt raised inside
# recv() and returns 0, so io.BufferedReader hands back what it had gathered,
# and the reader puts it back before raising (socket.makefile() drops it).


@pytest.mark.parametrize(
    ("op", "timeout"),
    [
        pytest.param(op, timeout, id=f"{op}-{timeout_id(timeout)}")
        for op in READ_OPS
        for timeout in TIMEOUTS
    ],
)
def test_an_interrupted_read_loses_no_data(op: str, timeout: Optional[float]) -> None:
    """Bytes gathered before the interrupt and bytes sent after it are all read, in order."""
    report = interrupt_run(op, timeout).report
    assert report["got"] == report["expected"], f"the gathered bytes were lost: {report}"
    assert report["retry_error"] is None


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=timeout_id)
def test_an_interrupted_write_breaks_the_socket(timeout: Optional[float]) -> None:
    report = interrupt_run("write", timeout).report
    assert report["closed_error"] == "BrokenSocketError"
    assert report["closed_error_is_connection_error"]
    assert report["later_write"] == "BrokenSocketError"
    assert report["later_read"] == "BrokenSocketError"
    # The connection really ended: the peer reads what was sent, then EOF.
    assert report["peer_end"] == "eof"
    assert 0 < report["peer_received"] < BIG_WRITE
    assert report["close"] is None


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=timeout_id)
@pytest.mark.parametrize("op", CONNECTING_OPS)
def test_an_interrupted_open_leaves_the_socket_connecting(
    op: str, timeout: Optional[float]
) -> None:
    report = interrupt_run(op, timeout).report
    assert report["state_after_interrupt"].endswith(" off connecting>")
    assert report["opened_done_after_interrupt"] is False
    # ...and it closes cleanly: opened fails as "closed while connecting", closed is None.
    assert report["close"] is None
    assert report["opened_error"] == "SocketClosedError"
    assert report["closed_result"] == "None"
    assert report["leaked_fds"] == []
