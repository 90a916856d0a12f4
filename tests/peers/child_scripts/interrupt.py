"""The Ctrl-C scenarios: SIGINT while the main thread is blocked in a read, a write
or an open, and the state the socket is left in."""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable, Final, Optional

from ...helpers import recv_exactly, sync_loop
from .basics import BIG_WRITE, PREFIX, SUFFIX, WAIT, Report, emit, error_of, wait_blocked

if TYPE_CHECKING:
    from pysock import Socket, SocketReader

# -- Ctrl-C in the main thread ------------------------------------------------------


def interrupted(call: Callable[[], object]) -> Report:
    """Run `call` in the main thread; SIGINT the process once it is blocked.

    The signal is process-directed (``os.kill``, like the terminal's Ctrl-C);
    Linux hands it to the main thread, which does not block it. Reports how the
    call ended and the delay from the signal to the `KeyboardInterrupt`.
    """
    # A Ctrl-C in a terminal reaches Python's handler. A test run started in the
    # background by a non-interactive shell (`make test &` in a script) inherits
    # SIGINT as ignored, and Python then leaves it ignored: install the handler
    # every script and REPL has, or the signal below would be dropped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.get_native_id()
    started = threading.Event()
    finished = threading.Event()
    sent: list[float] = []

    def fire() -> None:
        started.wait(WAIT)
        wait_blocked(main)
        if not finished.is_set():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=fire, name="sigint-timer", daemon=True)
    timer.start()
    outcome, ended = "returned", 0.0
    try:
        started.set()
        call()
    except KeyboardInterrupt:
        ended, outcome = time.monotonic(), "KeyboardInterrupt"
    except BaseException as exc:
        ended, outcome = time.monotonic(), type(exc).__name__
    finally:
        finished.set()
    timer.join(WAIT)
    delay = ended - sent[0] if sent and ended else None
    return {"outcome": outcome, "delay": delay}


_BLOCKED_READS: Final[dict[str, Callable[[SocketReader, int], bytes]]] = {
    "read": lambda r, n: r.read(n + 1000),
    "readexactly": lambda r, n: r.readexactly(n + 1000),
    "readline": lambda r, n: r.readline(),
    "readuntil": lambda r, n: r.readuntil(b"\n"),
    "read1": lambda r, n: r.read1(1000),
    "read_all": lambda r, n: r.read(),
}
_RETRIED_READS: Final[dict[str, Callable[[SocketReader, int], bytes]]] = {
    "read": lambda r, n: r.read(n),
    "readexactly": lambda r, n: r.readexactly(n),
    "readline": lambda r, n: r.readline(),
    "readuntil": lambda r, n: r.readuntil(b"\n"),
    "read1": lambda r, n: r.read1(n),
    "read_all": lambda r, n: r.read(),
}
READ_OPS: Final = tuple(_BLOCKED_READS)
CONNECTING_OPS: Final = ("opened", "read_connecting", "write_connecting")


def interrupt(op: str, timeout_arg: str) -> None:
    """SIGINT during the blocking `op`; report the delay and the socket's state after."""
    timeout = None if timeout_arg == "None" else float(timeout_arg)
    if op in CONNECTING_OPS:
        emit(_interrupt_connecting(op, timeout))
        return
    from pysock import connect

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    sock = connect(listener.getsockname(), timeout=timeout)
    conn = listener.accept()[0]
    listener.close()
    conn.settimeout(WAIT)
    with sock, conn:
        if op == "write":
            emit(_interrupt_write(sock, conn))
        else:
            emit(_interrupt_read(op, sock, conn))


def _interrupt_read(op: str, sock: Socket, conn: socket.socket) -> Report:
    from pysock import IncompleteReadError

    # read1 returns buffered bytes without blocking: it can only block on an empty buffer.
    prefix = b"" if op == "read1" else PREFIX
    # One small send is one segment: the priming readline() takes it all in one
    # recv, so `prefix` waits in pysock's buffer when the blocking call starts.
    conn.sendall(b"hello\n" + prefix)
    reader = sock.readable
    primed = reader.readline()
    report = interrupted(lambda: _BLOCKED_READS[op](reader, len(prefix)))
    report["primed"] = primed.decode()
    report["closed_done_after_interrupt"] = sock.closed.done()
    sock.writable.write(b"ping")
    try:
        report["peer_got"] = recv_exactly(conn, 4).decode()
    except EOFError as exc:  # Reported like any other wrong answer.
        report["peer_got"] = repr(exc)
    report["closed_before_the_suffix"] = sock.closed.done() and repr(sock.closed.exception())
    conn.sendall(SUFFIX)
    conn.shutdown(socket.SHUT_WR)
    expected = prefix + SUFFIX
    try:
        got = _RETRIED_READS[op](reader, len(expected))
        report["retry_error"] = None
    except IncompleteReadError as exc:
        got = exc.partial
        report["retry_error"] = type(exc).__name__
    got += reader.read()
    report["got"] = got.decode()
    report["expected"] = expected.decode()
    report["closed_result"] = repr(sock.closed.exception(WAIT))
    return report


def _interrupt_write(sock: Socket, conn: socket.socket) -> Report:
    report = interrupted(lambda: sock.writable.write(bytes(BIG_WRITE)))
    error = sock.closed.exception(WAIT)
    report["closed_error"] = None if error is None else type(error).__name__
    report["closed_error_is_connection_error"] = isinstance(error, ConnectionError)
    report["later_write"] = error_of(lambda: sock.writable.write(b"more"))
    report["later_read"] = error_of(lambda: sock.readable.read1(1))
    report["peer_received"], report["peer_end"] = _drain(conn)
    report["close"] = error_of(sock.close)
    return report


def _interrupt_connecting(op: str, timeout: Optional[float]) -> Report:
    from tests.peers.tcp import Blackhole

    hole = Blackhole()
    sync_loop()  # Start the selector thread first: its descriptors are not a leak.
    fds_before = set(os.listdir("/proc/self/fd"))
    report = _interrupt_and_close(op, timeout, hole.address)
    gc.collect()
    sync_loop()
    report["leaked_fds"] = sorted(set(os.listdir("/proc/self/fd")) - fds_before)
    hole.close()
    return report


def _interrupt_and_close(op: str, timeout: Optional[float], address: str) -> Report:
    from pysock import connect

    sock = connect(address, timeout=timeout)
    calls: dict[str, Callable[[], object]] = {
        "opened": lambda: sock.opened.result(timeout),
        "read_connecting": lambda: sock.readable.read(1),
        "write_connecting": lambda: sock.writable.write(b"x"),
    }
    report = interrupted(calls[op])
    report["state_after_interrupt"] = repr(sock)
    report["opened_done_after_interrupt"] = sock.opened.done()
    report["close"] = error_of(sock.close)
    report["opened_error"] = type(sock.opened.exception(WAIT)).__name__
    report["closed_result"] = repr(sock.closed.exception(WAIT))
    return report


def _drain(conn: socket.socket) -> tuple[int, str]:
    """Read until the end; return the byte count and how it ended."""
    total = 0
    try:
        while True:
            chunk = conn.recv(1024 * 1024)
            if not chunk:
                return total, "eof"
            total += len(chunk)
    except socket.timeout:
        return total, "timeout"
    except ConnectionResetError:
        return total, "reset"
