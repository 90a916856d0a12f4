"""The exit scenarios: the interpreter exits with sockets open, threads blocked, a
peer resetting during the shutdown, and a forked child exiting through it."""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Callable

from ...helpers import reap, reset
from .basics import BIG_WRITE, WAIT, Report, emit, error_of, wait_blocked

if TYPE_CHECKING:
    from pysock import Socket

# -- interpreter exit ------------------------------------------------------------------

# Keeps peers and sockets alive until the interpreter's shutdown collects them.
_KEEP: list[object] = []


def _peer() -> tuple[socket.socket, tuple[str, int]]:
    """A listener in this process; the caller accepts (no thread needed)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    _KEEP.append(listener)
    return listener, listener.getsockname()


def _accept(listener: socket.socket) -> socket.socket:
    conn = listener.accept()[0]
    conn.settimeout(WAIT)
    _KEEP.append(conn)
    return conn


def exit_blocked(op: str, kind: str, timeout_arg: str) -> None:
    """The main thread returns while a `kind` thread is blocked in `op`."""
    from pysock import PysockError, connect
    from tests.peers.tcp import Blackhole

    timeout = None if timeout_arg == "None" else float(timeout_arg)
    if op == "opened":
        hole = Blackhole()
        _KEEP.append(hole)
        sock = connect(hole.address, timeout=timeout)
    else:
        listener, address = _peer()
        sock = connect(address, timeout=timeout)
        _accept(listener)  # Never sends, never reads.
        sock.opened.result(WAIT)
    calls: dict[str, Callable[[], object]] = {
        "read": sock.readable.read,
        "write": lambda: sock.writable.write(bytes(BIG_WRITE)),
        "opened": sock.opened.result,
    }

    def blocked() -> None:
        try:
            calls[op]()
            outcome = "returned"
        except PysockError as exc:  # What a careful thread does with a socket closed at exit.
            outcome = type(exc).__name__
        if kind == "nondaemon":
            emit({"thread_outcome": outcome})

    thread = threading.Thread(target=blocked, name=f"blocked-{op}", daemon=kind == "daemon")
    thread.start()
    assert thread.native_id is not None
    wait_blocked(thread.native_id)
    emit({"main_returned_at": time.monotonic()})


def exit_idle(state: str) -> None:
    """Exit with a socket left in `state`, referenced from a module global.

    ``open``: open and idle. ``connecting``: a connect still pending.
    ``peer_closed``: the peer closed it cleanly first. ``closed_by_late_atexit``:
    closed by an `atexit` handler that runs after pysock's own.
    """
    if state == "closed_by_late_atexit":
        atexit.register(_close_kept_socket)
    from pysock import connect
    from tests.peers.tcp import Blackhole

    if state == "connecting":
        hole = Blackhole()
        _KEEP.append(hole)
        sock = connect(hole.address)
        _KEEP.append(sock)
        emit({"main_returned_at": time.monotonic()})
        return
    listener, address = _peer()
    sock = connect(address)
    conn = _accept(listener)
    sock.opened.result(WAIT)
    _KEEP.append(sock)
    if state == "peer_closed":
        conn.close()
        emit({"closed_result": repr(sock.closed.exception(WAIT))})
    else:
        _let_the_hangup_watch_start()
    emit({"main_returned_at": time.monotonic()})


def _close_kept_socket() -> None:
    from pysock import Socket

    for obj in _KEEP:
        if isinstance(obj, Socket):
            emit({"late_close": error_of(obj.close)})


def _let_the_hangup_watch_start() -> None:
    # A new connection joins the selector thread's hang-up set after a grace
    # period (pysock._loop.HANGUP_GRACE, 10 ms): an exit must meet it there.
    time.sleep(0.1)


def exit_peer_reset(when: str, reader: str) -> None:
    """The peer resets the connection during the interpreter's shutdown.

    `when`: ``atexit`` (a handler that runs before pysock's own, while the
    selector thread still runs) or ``after_loop_stopped`` (a handler registered
    before pysock was imported, so it runs after pysock stopped its thread).
    `reader`: ``daemon`` (a daemon thread is blocked reading) or ``none``.
    """
    reset_handler: list[Callable[[], None]] = []
    if when == "after_loop_stopped":
        atexit.register(lambda: reset_handler[0]())
    from pysock import PysockError, connect

    listener, address = _peer()
    sock = connect(address)
    conn = _accept(listener)
    sock.opened.result(WAIT)
    _KEEP.append(sock)
    _let_the_hangup_watch_start()

    def reset_now() -> None:
        reset(conn)
        if when == "atexit":
            emit({"closed_during_shutdown": repr(sock.closed.exception(WAIT))})
        else:
            time.sleep(0.1)  # Let the reset arrive before the finalization goes on.

    reset_handler.append(reset_now)
    if when == "atexit":
        atexit.register(reset_now)
    if reader == "daemon":

        def read_quietly() -> None:
            try:
                sock.readable.read()
            except PysockError:
                pass

        thread = threading.Thread(target=read_quietly, name="blocked-read", daemon=True)
        thread.start()
        assert thread.native_id is not None
        wait_blocked(thread.native_id)
    emit({"main_returned_at": time.monotonic()})


# -- fork, then the child exits through the interpreter's shutdown --------------------


def fork_exit_normally() -> None:
    """Fork with sockets open; the child returns normally (atexit, finalization).

    The child meets its inherited sockets (which must raise `SocketClosedError`),
    opens and closes one of its own, leaves the inherited ones referenced from
    globals for the finalization to collect, and exits with ``sys.exit(0)``.
    This process then checks that its own sockets still work.
    """
    from pysock import connect
    from tests.peers.tcp import Server, echo

    server = Server(echo)
    parent = os.getpid()
    try:
        emit(_fork_and_check(server.address, connect))
    finally:
        if os.getpid() == parent:  # The child must not shut the server's connections down.
            server.stop()


def _fork_and_check(address: str, connect: Callable[..., Socket]) -> Report:
    busy = connect(address)
    idle = connect(address)
    busy.writable.write(b"before fork\n")
    assert busy.readable.readline() == b"before fork\n"
    idle.opened.result(WAIT)
    _let_the_hangup_watch_start()
    sys.stdout.flush()  # The child must not print this process's buffered output again.
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a threaded process; forking one (with
        # pysock's thread running) is exactly what this scenario checks.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        _KEEP.extend((busy, idle))
        _child_then_exit(address, busy, connect)
    report: Report = {"child_status": reap(pid, WAIT)}
    for name, sock in (("busy", busy), ("idle", idle)):
        report[f"{name}_closed_done"] = sock.closed.done()
        sock.writable.write(f"{name} after the child\n".encode())
        report[f"{name}_echo"] = sock.readable.readline().decode()
        sock.close()
    return report


def _child_then_exit(address: str, inherited: Socket, connect: Callable[..., Socket]) -> None:
    report: Report = {
        "inherited_read": error_of(lambda: inherited.readable.readline()),
        "inherited_write": error_of(lambda: inherited.writable.write(b"x")),
    }
    with connect(address) as fresh:
        fresh.writable.write(b"child\n")
        report["fresh_echo"] = fresh.readable.readline().decode()
    emit({"child": report})
    sys.exit(0)
