"""Child programs for the process tests: each scenario runs in an interpreter of its own.

Run from the repository root as
``python -m tests.peers.child_scripts SCENARIO ARGS...``. A scenario
prints its observations as JSON objects, one a line, on stdout; the test
merges them and asserts. Durations are measured here with `time.monotonic()`
(CLOCK_MONOTONIC is system-wide on Linux, so a time printed here can also be
compared with the parent's clock, which is how the exit tests time the
interpreter's shutdown).

pysock is imported inside the scenarios, never at the top: a scenario that
needs an `atexit` handler to run *after* pysock's own (which stops the
selector thread) must register it before pysock is imported, since `atexit`
runs its handlers last-in, first-out.

The peers are stdlib sockets on loopback, port 0, in this same process. Every
blocking call here has a timeout and every loop is bounded, and the parent
kills a child that outlives its own generous timeout.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Final, Optional

from ..helpers import reap, recv_exactly, reset, sync_loop

if TYPE_CHECKING:
    from pysock import Socket, SocketReader

# Bound for every wait that should end quickly; a loaded machine may be slow.
WAIT: Final = 10.0
# Bytes the interrupted read has already gathered, and bytes the peer sends after.
PREFIX: Final = b"gathered-before-the-interrupt:"
SUFFIX: Final = b"sent-after-the-interrupt\n"
# Far more than loopback's send and receive buffers hold: the write must block.
BIG_WRITE: Final = 32 * 1024 * 1024
# How long a thread must sit in one unchanged system call to count as blocked.
_BLOCKED_SAMPLES: Final = 3
_SAMPLE_INTERVAL: Final = 0.05

Report = dict[str, Any]


def emit(report: Report) -> None:
    print(json.dumps(report), flush=True)


def wait_blocked(native_id: int, timeout: float = WAIT) -> None:
    """Return once thread `native_id` of this process sits in a blocking system call.

    Linux shows a thread's current system call in ``/proc/self/task/TID/syscall``
    (number, arguments, stack and instruction pointers; ``running`` when it is
    not in one). The same line read several times while this thread sleeps
    (and so leaves the GIL free) means the thread is blocked in that call, not
    waiting for the GIL on its way there. Without that file, fall back to a
    pause.
    """
    path = f"/proc/self/task/{native_id}/syscall"
    deadline = time.monotonic() + timeout
    previous, stable = "", 0
    while time.monotonic() < deadline:
        try:
            with open(path) as file:
                line = file.read().strip()
        except OSError:
            time.sleep(0.3)
            return
        if line == previous and not line.startswith("running"):
            stable += 1
            if stable >= _BLOCKED_SAMPLES:
                return
        else:
            stable = 0
        previous = line
        time.sleep(_SAMPLE_INTERVAL)
    raise RuntimeError(f"thread {native_id} never blocked in a system call")


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
    report["later_write"] = _error_of(lambda: sock.writable.write(b"more"))
    report["later_read"] = _error_of(lambda: sock.readable.read1(1))
    report["peer_received"], report["peer_end"] = _drain(conn)
    report["close"] = _error_of(sock.close)
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
    report["close"] = _error_of(sock.close)
    report["opened_error"] = type(sock.opened.exception(WAIT)).__name__
    report["closed_result"] = repr(sock.closed.exception(WAIT))
    return report


def _error_of(call: Callable[[], object]) -> Optional[str]:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return None


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
            emit({"late_close": _error_of(obj.close)})


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
        "inherited_read": _error_of(lambda: inherited.readable.readline()),
        "inherited_write": _error_of(lambda: inherited.writable.write(b"x")),
    }
    with connect(address) as fresh:
        fresh.writable.write(b"child\n")
        report["fresh_echo"] = fresh.readable.readline().decode()
    emit({"child": report})
    sys.exit(0)


SCENARIOS: Final[dict[str, Callable[..., None]]] = {
    "interrupt": interrupt,
    "exit_blocked": exit_blocked,
    "exit_idle": exit_idle,
    "exit_peer_reset": exit_peer_reset,
    "fork_exit_normally": fork_exit_normally,
}


# -- the parent's side: run a scenario, collect its report ---------------------------

ROOT: Final = Path(__file__).resolve().parents[2]
# Generous: a child runs for about a second, on a shared, loaded machine. Below
# pytest-timeout's 60 s, so that a hung child is killed and reported here.
CHILD_TIMEOUT: Final = 40.0
# The timeouts a scenario runs with: none (blocking, the C fast path) and one no
# call reaches.
TIMEOUTS: Final = [None, 5.0]


class ChildRun:
    """What a child interpreter reported, printed on stderr, and how it ended."""

    def __init__(
        self, report: Report, stderr: str, returncode: Optional[int], ended: float
    ) -> None:
        self.report = report
        self.stderr = stderr
        self.returncode = returncode  # None: it hung and was killed.
        self.ended = ended  # time.monotonic() when its pipes closed and it was reaped.

    def exit_duration(self) -> float:
        """Seconds from the child's main thread returning to the process being gone."""
        return self.ended - float(self.report["main_returned_at"])


def run_child(*args: str, hang_after: float = CHILD_TIMEOUT) -> ChildRun:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in ("PYTHONWARNINGS", "PYTHONDEVMODE"):  # The user's default: no -W, no -X dev.
        env.pop(name, None)
    command = [sys.executable, "-m", "tests.peers.child_scripts", *args]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        returncode: Optional[int]
        try:
            stdout, stderr = process.communicate(timeout=hang_after)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate(timeout=CHILD_TIMEOUT)
            returncode = None
        except BaseException:  # pytest-timeout's failure: Popen's exit would wait forever.
            process.kill()
            raise
        ended = time.monotonic()
    report: Report = {}
    for line in stdout.decode().splitlines():
        report.update(json.loads(line))
    return ChildRun(report, stderr.decode(errors="replace"), returncode, ended)


def timeout_id(timeout: Optional[float]) -> str:
    return f"timeout={timeout}"


if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
