"""Interpreter exit with sockets open: quick and quiet (docs/reliability.md,
"Processes and signals").

Each case runs in a child interpreter (`tests.peers.child_scripts`), which
reports when its main thread returned; the parent times the rest of the exit.
"""

from __future__ import annotations

from typing import Final, Optional

import pytest

from .peers.child_scripts import TIMEOUTS, run_child, timeout_id

pytestmark = pytest.mark.process

# The bound docs/reliability.md promises, measured in the child: exit never waits
# on pysock's thread.
EXIT_BOUND: Final = 1.0
# How long a child may keep running after its main thread returned before the
# test calls it hung and kills it (well past EXIT_BOUND, so a slow exit still
# reports its real duration).
HANG_AFTER: Final = 5.0


# -- interpreter exit (the selector thread stops at exit, never holding it) --------------


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=timeout_id)
@pytest.mark.parametrize("op", ["read", "write", "opened"])
def test_exit_with_a_daemon_thread_blocked_is_quick_and_quiet(
    op: str, timeout: Optional[float]
) -> None:
    run = run_child("exit_blocked", op, "daemon", str(timeout))
    assert run.returncode == 0
    assert run.stderr == ""
    assert run.exit_duration() < EXIT_BOUND


def test_exit_with_a_non_daemon_thread_blocked_in_a_read() -> None:
    """Documented behaviour (docs/reliability.md, known limits), as with a stdlib socket:
    Python joins non-daemon threads before any atexit hook, and pysock does not close
    sockets a running thread may still be waiting on, so the process stays alive."""
    run = run_child("exit_blocked", "read", "nondaemon", "None", hang_after=HANG_AFTER)
    assert run.returncode is None, "the interpreter exited under a running non-daemon reader"
    assert "main_returned_at" in run.report  # The main thread did return.


@pytest.mark.parametrize("state", ["open", "connecting", "peer_closed", "closed_by_late_atexit"])
def test_exit_with_an_unused_socket_is_quick_and_quiet(state: str) -> None:
    """Also after pysock's atexit handler stopped the selector thread: the finalizer
    of a socket still in the hang-up set, or a close() from a later atexit handler."""
    run = run_child("exit_idle", state)
    assert run.returncode == 0
    assert run.stderr == ""
    assert run.report.get("late_close") is None
    assert run.exit_duration() < EXIT_BOUND


@pytest.mark.parametrize("reader", ["none", "daemon"])
@pytest.mark.parametrize("when", ["atexit", "after_loop_stopped"])
def test_a_peer_reset_during_shutdown_prints_nothing(when: str, reader: str) -> None:
    run = run_child("exit_peer_reset", when, reader)
    assert run.returncode == 0
    assert run.stderr == ""
    if when == "atexit":  # The selector thread still runs: it sees the reset.
        assert run.report["closed_during_shutdown"].startswith("BrokenSocketError(")


def test_a_forked_child_exiting_through_the_interpreter_shutdown() -> None:
    """The child runs atexit and the finalizer over its inherited sockets; the parent's live."""
    run = run_child("fork_exit_normally")
    assert run.returncode == 0
    assert run.stderr == ""
    assert run.report["child"] == {
        "inherited_read": "SocketClosedError",
        "inherited_write": "SocketClosedError",
        "fresh_echo": "child\n",
    }
    assert run.report["child_status"] == 0
    assert run.report["busy_closed_done"] is False and run.report["idle_closed_done"] is False
    assert run.report["busy_echo"] == "busy after the child\n"
    assert run.report["idle_echo"] == "idle after the child\n"
