"""os.fork() while the parent's sockets and its loop are busy (docs/reliability.md,
"Processes and signals").

These tests fork this very process with `os.fork()` while its threads stream
data through pysock sockets, and the child leaves with `os._exit()`.
tests/test_process.py covers a fork with one idle socket; these add a busy
parent at fork time and the state each socket is left in, on both sides.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import select
import threading
import time
import warnings
from typing import Any, Callable, Final, Optional

import pytest

from pysock import Socket, _loop, connect
from pysock import _fork as registry

from .helpers import reap, recv_exactly, sync_loop, wait_for
from .peers import child_scripts as child
from .peers.child_scripts import CHILD_TIMEOUT, Report, timeout_id, wait_blocked
from .peers.tcp import PEER_TIMEOUT, Blackhole, Server, echo

pytestmark = pytest.mark.process


# -- os.fork() while the parent's sockets and its loop are busy --------------------------

# Timeouts for the fork scenario: None (blocking sockets and the C fast path) and
# one long enough that no blocked call times out while the child runs.
FORK_TIMEOUTS: Final = [None, 30.0]
INHERITED: Final = ("streaming", "blocked_writer", "blocked_reader", "idle", "connecting")
INHERITED_OPS: Final = ("read1", "readline", "write")
# A check on an inherited socket that has not returned after this long is hung.
CHILD_CHECK_BOUND: Final = 3.0
BLOCKED_WRITE: Final = 8 * 1024 * 1024  # Much more than loopback buffers: the write blocks.
STREAM_CHUNK: Final = 16 * 1024
FRESH_ECHO: Final = 1024 * 1024


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class BusyParent:
    """Sockets kept busy across the fork, with their peers and threads.

    ``streaming``: a thread echoes 16 KiB chunks through it without pause.
    ``blocked_writer``: a thread is blocked writing 8 MiB to a peer that does not
    read yet. ``blocked_reader``: a thread is blocked reading from a peer that
    has not sent yet. ``idle``: open, nobody uses it. ``connecting``: a connect
    pending against a full accept queue. Meanwhile a churn thread connects,
    echoes a line and closes, over and over, which keeps the selector thread
    busy with new connections and released descriptors.
    """

    def __init__(self, timeout: Optional[float]) -> None:
        self.stop = threading.Event()
        self.release_writer_peer = threading.Event()
        self.send_late = threading.Event()
        self.writer_peer_got: list[bool] = []
        self.rounds = 0
        self.churned = 0
        self.errors: list[str] = []
        self.write_result: list[str] = []
        self.read_result: list[bytes] = []
        self.echo_server = Server(echo)
        self.writer_server = Server(self._slow_reader)
        self.reader_server = Server(self._late_sender)
        self.hole = Blackhole()
        self.timeout = timeout
        self.sockets: dict[str, Socket] = {
            "streaming": connect(self.echo_server.address, timeout=timeout),
            "blocked_writer": connect(self.writer_server.address, timeout=timeout),
            "blocked_reader": connect(self.reader_server.address, timeout=timeout),
            "idle": connect(self.echo_server.address, timeout=timeout),
            "connecting": connect(self.hole.address, timeout=timeout),
        }
        self.threads = {
            name: threading.Thread(target=target, name=f"busy-{name}")
            for name, target in (
                ("streaming", self._stream),
                ("churn", self._churn),
                ("blocked_writer", self._blocked_write),
                ("blocked_reader", self._blocked_read),
            )
        }

    def start(self) -> None:
        for thread in self.threads.values():
            thread.start()
        for name in ("blocked_writer", "blocked_reader"):
            native_id = self.threads[name].native_id
            assert native_id is not None
            wait_blocked(native_id)
        assert wait_for(lambda: self.rounds > 10 and self.churned > 2, PEER_TIMEOUT), self.errors

    def close(self) -> None:
        self.stop.set()
        self.release_writer_peer.set()
        self.send_late.set()
        for sock in self.sockets.values():
            sock.close()  # Wakes any thread still blocked in it.
        for thread in self.threads.values():
            if thread.ident is not None:  # Started.
                thread.join(PEER_TIMEOUT)
        for server in (self.echo_server, self.writer_server, self.reader_server):
            server.stop()
        self.hole.close()

    # -- the peers' handlers ---------------------------------------------------------

    def _slow_reader(self, conn: Any) -> None:
        self.release_writer_peer.wait(PEER_TIMEOUT)
        try:
            every_byte = recv_exactly(conn, BLOCKED_WRITE) == pattern(BLOCKED_WRITE)
        except EOFError:
            every_byte = False  # Reported by the parent's observations.
        self.writer_peer_got.append(every_byte)

    def _late_sender(self, conn: Any) -> None:
        self.send_late.wait(PEER_TIMEOUT)
        conn.sendall(b"late data")

    # -- the parent's busy threads ---------------------------------------------------------

    def _stream(self) -> None:
        sock = self.sockets["streaming"]
        chunk = pattern(STREAM_CHUNK)
        try:
            while not self.stop.is_set():
                sock.writable.write(chunk)
                if sock.readable.readexactly(STREAM_CHUNK) != chunk:
                    raise AssertionError("the echo came back corrupted")
                self.rounds += 1
        except BaseException as exc:
            if not self.stop.is_set():
                self.errors.append(f"streaming: {exc!r}")

    def _churn(self) -> None:
        try:
            while not self.stop.wait(0.005):
                with connect(self.echo_server.address, timeout=self.timeout) as sock:
                    sock.writable.write(b"churn\n")
                    if sock.readable.readline() != b"churn\n":
                        raise AssertionError("the churn echo came back wrong")
                self.churned += 1
        except BaseException as exc:
            self.errors.append(f"churn: {exc!r}")

    def _blocked_write(self) -> None:
        try:
            self.sockets["blocked_writer"].writable.write(pattern(BLOCKED_WRITE))
            self.write_result.append("returned")
        except BaseException as exc:
            self.write_result.append(repr(exc))

    def _blocked_read(self) -> None:
        try:
            self.read_result.append(self.sockets["blocked_reader"].readable.readexactly(9))
        except BaseException as exc:
            self.read_result.append(repr(exc).encode())


@functools.cache
def fork_run(timeout: Optional[float]) -> Report:
    """Fork while `BusyParent` runs; return what the child and the parent observed."""
    parent = BusyParent(timeout)
    try:
        parent.start()
        return _fork(parent)
    finally:
        parent.close()


def _fork(parent: BusyParent) -> Report:
    rounds_at_fork = parent.rounds
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a multi-threaded process: that is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_end)
            payload = json.dumps(_in_child(parent)).encode()
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    payload = _read_to_eof(read_end, CHILD_TIMEOUT)
    observed: Report = {"child_status": reap(pid, CHILD_TIMEOUT)}
    observed["child"] = json.loads(payload) if payload else {}
    rounds_at_exit = parent.rounds
    observed["streamed_while_the_child_ran"] = rounds_at_exit > rounds_at_fork
    observed.update(_parent_after_child(parent, rounds_at_exit))
    return observed


def _in_child(parent: BusyParent) -> Report:  # pragma: no cover - runs in the child
    """The forked child: the inherited sockets, new sockets, then drop the inherited."""
    sockets = parent.sockets
    address = parent.echo_server.address
    inherited: dict[str, Callable[[], object]] = {}
    for name, sock in sockets.items():
        inherited[f"{name}.read1"] = functools.partial(sock.readable.read1, 1)
        inherited[f"{name}.readline"] = sock.readable.readline
        inherited[f"{name}.write"] = functools.partial(sock.writable.write, b"x")
    report: Report = {"inherited": bounded(inherited, CHILD_CHECK_BOUND)}
    report["fresh"] = bounded(
        {f"timeout={t}": functools.partial(_echo_fresh, address, t) for t in (None, 5.0)},
        PEER_TIMEOUT,
    )
    report["selector_threads"] = sum(
        1 for t in threading.enumerate() if t.name == "pysock-selector"
    )
    report["close_inherited"] = {
        name: child.error_of(sockets[name].close) for name in ("streaming", "blocked_writer")
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sockets.clear()
        inherited.clear()
        gc.collect()
    report["warnings_collecting_inherited"] = [str(w.message) for w in caught]
    report["fresh_after_collecting"] = bounded(
        {"echo": functools.partial(_echo_fresh, address, None)}, PEER_TIMEOUT
    )["echo"]
    return report


def bounded(calls: dict[str, Callable[[], object]], bound: float) -> dict[str, str]:
    """Run each call in its own daemon thread; how each ended: returned, an error, or hang."""
    outcomes: dict[str, str] = {}

    def run(name: str, call: Callable[[], object]) -> None:
        try:
            call()
            outcomes[name] = "returned"
        except BaseException as exc:
            outcomes[name] = type(exc).__name__

    threads = [
        threading.Thread(target=run, args=(name, call), daemon=True)
        for name, call in calls.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + bound
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: outcomes.get(name, "hang") for name in calls}


def _echo_fresh(address: str, timeout: Optional[float]) -> None:
    data = pattern(FRESH_ECHO)
    with connect(address, timeout=timeout) as sock:
        sock.writable.write(data)
        if sock.readable.readexactly(len(data)) != data:
            raise AssertionError("the child's echo came back wrong")


def _read_to_eof(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = pipe.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _parent_after_child(parent: BusyParent, rounds_at_exit: int) -> Report:
    sockets = parent.sockets
    observed: Report = {
        "closed_done_after_child": {name: s.closed.done() for name, s in sockets.items()},
        "streamed_after_the_child": wait_for(
            lambda: parent.rounds > rounds_at_exit + 10, PEER_TIMEOUT
        ),
    }
    parent.release_writer_peer.set()
    parent.threads["blocked_writer"].join(PEER_TIMEOUT)
    observed["blocked_write"] = parent.write_result
    assert wait_for(lambda: bool(parent.writer_peer_got), PEER_TIMEOUT)
    observed["writer_peer_got_every_byte"] = parent.writer_peer_got
    parent.send_late.set()
    parent.threads["blocked_reader"].join(PEER_TIMEOUT)
    observed["blocked_read"] = [data.decode() for data in parent.read_result]
    idle = sockets["idle"]
    idle.writable.write(b"idle after the child\n")
    observed["idle_echo"] = idle.readable.readline().decode()
    observed["connecting_state"] = repr(sockets["connecting"])
    parent.stop.set()
    for name in ("streaming", "churn"):
        parent.threads[name].join(PEER_TIMEOUT)
    observed["errors"] = parent.errors
    sync_loop()  # The parent's selector thread still answers.
    return observed


@pytest.mark.parametrize("timeout", FORK_TIMEOUTS, ids=timeout_id)
def test_fork_child_opens_new_sockets_and_echoes(timeout: Optional[float]) -> None:
    observed = fork_run(timeout)
    assert observed["child_status"] == 0
    child_report = observed["child"]
    assert child_report["fresh"] == {"timeout=None": "returned", "timeout=5.0": "returned"}
    assert child_report["selector_threads"] == 1
    assert child_report["fresh_after_collecting"] == "returned"


@pytest.mark.parametrize("timeout", FORK_TIMEOUTS, ids=timeout_id)
@pytest.mark.parametrize("op", INHERITED_OPS)
@pytest.mark.parametrize("name", INHERITED)
def test_fork_inherited_socket_raises_socket_closed_error(
    name: str, op: str, timeout: Optional[float]
) -> None:
    """At once, even when a parent thread held the stream's lock at the fork (the
    blocked_* sockets: blocked in write(), or in the first read, which runs the
    Python path) or the socket was still connecting (the child has no loop to
    open it). "hang" means the call had not returned after CHILD_CHECK_BOUND."""
    outcome = fork_run(timeout)["child"]["inherited"][f"{name}.{op}"]
    assert outcome == "SocketClosedError"


@pytest.mark.parametrize("timeout", FORK_TIMEOUTS, ids=timeout_id)
def test_fork_child_closes_and_collects_inherited_sockets_quietly(
    timeout: Optional[float],
) -> None:
    child_report = fork_run(timeout)["child"]
    assert child_report["close_inherited"] == {"streaming": None, "blocked_writer": None}
    assert child_report["warnings_collecting_inherited"] == []


@pytest.mark.parametrize("timeout", FORK_TIMEOUTS, ids=timeout_id)
def test_fork_leaves_the_parents_sockets_working(timeout: Optional[float]) -> None:
    observed = fork_run(timeout)
    assert observed["child_status"] == 0
    assert observed["errors"] == []
    assert observed["streamed_while_the_child_ran"]
    assert observed["streamed_after_the_child"]
    assert observed["closed_done_after_child"] == dict.fromkeys(INHERITED, False)
    assert observed["blocked_write"] == ["returned"]
    assert observed["writer_peer_got_every_byte"] == [True]
    assert observed["blocked_read"] == ["late data"]
    assert observed["idle_echo"] == "idle after the child\n"
    assert observed["connecting_state"].endswith(" connecting>")


# -- the fork registry (pysock._fork) alone ---------------------------------------------


def test_after_fork_callbacks_run_in_the_child_in_order_once_the_loop_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`register_after_fork` callbacks run in a real forked child only, in the
    order registered, with the generation already bumped and the parent's loop
    already abandoned (the loop registers first), so a callback may start the
    child's own loop."""
    sync_loop()  # The parent's loop runs: the child inherits it.
    parent_loop = _loop.get_loop()
    generation = registry.fork_generation()
    seen: list[dict[str, Any]] = []

    def first() -> None:
        seen.append(
            {
                "generation": registry.fork_generation(),
                "loop_dropped": _loop._loop is None,
                "parent_loop_stopped": parent_loop.stopped,
            }
        )

    def second() -> None:
        seen.append({"after_first": len(seen) == 1})
        new_loop = _loop.get_loop()
        ran = threading.Event()
        new_loop.call_soon_threadsafe(ran.set)
        seen.append({"new_loop": new_loop is not parent_loop, "serves": ran.wait(PEER_TIMEOUT)})

    registered = list(registry._after_fork_callbacks)
    assert registered[0] is _loop._forget_loop_in_child  # First: the others may use a loop.
    # A copy: the process's own list must not keep this test's callbacks.
    monkeypatch.setattr(registry, "_after_fork_callbacks", registered)
    registry.register_after_fork(first)
    registry.register_after_fork(second)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: the point.
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(json.dumps(seen).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    payload = _read_to_eof(read_end, CHILD_TIMEOUT)
    assert reap(pid, CHILD_TIMEOUT) == 0
    assert json.loads(payload) == [
        {"generation": generation + 1, "loop_dropped": True, "parent_loop_stopped": True},
        {"after_first": True},
        {"new_loop": True, "serves": True},
    ]
    # Nothing ran here: the parent keeps its generation and its loop.
    assert seen == []
    assert registry.fork_generation() == generation
    assert _loop.get_loop() is parent_loop and not parent_loop.stopped
    sync_loop()
