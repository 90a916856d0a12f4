"""Peers: stdlib servers on 127.0.0.1, port 0, each in its own (spawned) process.

A peer runs in a separate process so that the client process's GIL belongs to
the client alone. The parent talks to it over a `multiprocessing` pipe: the
peer sends its port first, then obeys ``"stop"`` (and, for the idle peer,
``"reset"`` / ``"close"``). Every peer exits by itself when its parent dies or
when its lifetime runs out, so a crashed benchmark leaves nothing behind.

Modes:

* ``stream``: a thread per connection reading a 9-byte command (see
  `command`): ``R`` n (send n bytes), ``S`` n (receive n bytes, answer ``K``),
  ``E`` n (echo n-byte messages until EOF), ``L`` n (send n short lines),
  ``C`` n (send n short CRLF-terminated lines, as SMTP or Redis do). A
  connection closed before any command is simply closed (connect + close).
  With a TLS certificate the connection is wrapped server-side first.
* ``hold``: one selector thread that accepts and closes each connection at
  its EOF (plaintext connect + close, cheap for thousands of connections).
* ``idle``: accepts `n` connections and holds them; ``"reset"`` closes all of
  them with SO_LINGER 0 (RST) and reports when it started and finished.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from bench.tlsconf import TLSMaterial, server_context

HOST = "127.0.0.1"
CHUNK = 1024 * 1024  # The peer sends and receives in 1 MiB blocks.
LINE_TEMPLATE = b"%08d,short line\n"  # 20 bytes per line.
CRLF_LINE_TEMPLATE = b"%08d,short line\r\n"  # 21 bytes per line.
STARTUP_TIMEOUT = 30.0
LIFETIME = 900.0  # A peer never outlives this, whatever happens to its parent.
_LINGER_RESET = struct.pack("ii", 1, 0)
# The CPU a peer is pinned to (`pin_cpus`); None leaves scheduling to the kernel.
_peer_cpu: Optional[int] = None


def pin_cpus(enabled: bool) -> str:
    """Pin this (client) process to CPU 0 and later peers to CPU 1, if there are two.

    On a 2-core machine this keeps the client and its peer from fighting over
    one core, which otherwise makes throughput swing by 2x between runs.
    Returns a description for the report.
    """
    global _peer_cpu
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not enabled or len(cpus) < 2:
        _peer_cpu = None
        return "not pinned"
    os.sched_setaffinity(0, {cpus[0]})
    _peer_cpu = cpus[1]
    return f"client process pinned to CPU {cpus[0]}, peer processes to CPU {cpus[1]}"


def command(op: bytes, arg: int) -> bytes:
    """The 9-byte command a client sends to a ``stream`` peer."""
    return op + arg.to_bytes(8, "big")


def lines_blob(count: int, template: bytes = LINE_TEMPLATE) -> bytes:
    """The bytes of `count` short lines, as a ``stream`` peer sends them for ``L`` (``C``)."""
    return b"".join([template % i for i in range(count)])


# -- the parent's side ------------------------------------------------------------------


@dataclass
class Peer:
    """A running peer process, as the parent sees it."""

    port: int
    pipe: multiprocessing.connection.Connection
    process: Any
    messages: list[Any] = field(default_factory=list)

    @property
    def addr(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def address(self) -> str:
        """The address as pysock takes it: ``"127.0.0.1:PORT"``."""
        return f"{HOST}:{self.port}"

    def send(self, message: Any) -> None:
        self.pipe.send(message)

    def receive(self, timeout: float) -> Any:
        """The peer's next message; `TimeoutError` if none comes within `timeout`."""
        if not self.pipe.poll(timeout):
            raise TimeoutError(f"the peer sent nothing within {timeout}s")
        return self.pipe.recv()


@contextlib.contextmanager
def running_peer(mode: str, tls: Optional[TLSMaterial] = None, **params: Any) -> Iterator[Peer]:
    """Start a peer process in `mode`; stop it (and wait for it) on exit."""
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    process = ctx.Process(
        target=peer_main,
        args=(mode, tls, params, child_end, os.getpid(), _peer_cpu),
        name=f"bench-peer-{mode}",
        daemon=True,
    )
    process.start()
    child_end.close()
    try:
        if not parent_end.poll(STARTUP_TIMEOUT):
            raise RuntimeError(f"the {mode} peer did not start within {STARTUP_TIMEOUT}s")
        peer = Peer(parent_end.recv(), parent_end, process)
        yield peer
    finally:
        _stop_process(parent_end, process)


def _stop_process(pipe: multiprocessing.connection.Connection, process: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        pipe.send("stop")
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)
    pipe.close()


# -- the peer process ---------------------------------------------------------------------


def peer_main(
    mode: str,
    tls: Optional[TLSMaterial],
    params: dict[str, Any],
    pipe: multiprocessing.connection.Connection,
    parent_pid: int,
    cpu: Optional[int] = None,
) -> None:
    """The peer process's entry point."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    raise_fd_limit()
    _start_watchdog(parent_pid)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(4096)
    context = server_context(tls) if tls is not None else None
    if mode == "stream":
        server: _Server = _StreamServer(listener, context, params)
    elif mode == "hold":
        server = _HoldServer(listener)
    elif mode == "idle":
        server = _IdleServer(listener, pipe, int(params["n"]))
    else:
        raise ValueError(f"unknown peer mode {mode!r}")
    thread = threading.Thread(target=server.run, name=f"peer-{mode}", daemon=True)
    thread.start()
    pipe.send(listener.getsockname()[1])
    _obey(pipe, server)
    server.stop()
    thread.join(5)
    os._exit(0)  # Daemon threads may sit in blocking calls: leave without waiting.


def _obey(pipe: multiprocessing.connection.Connection, server: _Server) -> None:
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        if not pipe.poll(0.5):
            continue
        try:
            message = pipe.recv()
        except EOFError:
            return
        if message == "stop":
            return
        server.handle(message)


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _start_watchdog(parent_pid: int) -> None:
    """Exit if the parent dies or the lifetime runs out."""

    def watch() -> None:
        deadline = time.monotonic() + LIFETIME
        while time.monotonic() < deadline and os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="peer-watchdog", daemon=True).start()


class _Server:
    """What every peer mode provides to `peer_main`."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.stopping = threading.Event()

    def run(self) -> None:
        raise NotImplementedError

    def handle(self, message: Any) -> None:
        raise ValueError(f"unexpected message {message!r}")

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.close()


class _StreamServer(_Server):
    """A thread per connection, obeying one command (module docstring)."""

    def __init__(
        self, listener: socket.socket, context: Optional[ssl.SSLContext], params: dict[str, Any]
    ) -> None:
        super().__init__(listener)
        self.context = context
        self.payload = memoryview(b"\x5a" * CHUNK)
        # Prepared at startup so that a timed command costs one sendall.
        self.lines: dict[int, bytes] = {}
        for count in params.get("line_counts", ()):
            self.lines[count] = lines_blob(count)
        self.crlf_lines: dict[int, bytes] = {}
        for count in params.get("crlf_line_counts", ()):
            self.crlf_lines[count] = lines_blob(count, CRLF_LINE_TEMPLATE)

    def run(self) -> None:
        self.listener.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            header = _recv_exactly(conn, 9)
            if len(header) == 9:
                self._obey(conn, header[:1], int.from_bytes(header[1:], "big"))
                _drain_until_eof(conn)
        except (OSError, ssl.SSLError, ValueError):
            pass  # The client went away (a reset after close is normal here).
        finally:
            conn.close()

    def _obey(self, conn: socket.socket, op: bytes, arg: int) -> None:
        if op == b"R":
            _send_count(conn, self.payload, arg)
        elif op == b"S":
            _recv_count(conn, arg)
            conn.sendall(b"K")
        elif op == b"E":
            _echo(conn, arg)
        elif op == b"L":
            conn.sendall(self.lines.get(arg) or lines_blob(arg))
        elif op == b"C":
            conn.sendall(self.crlf_lines.get(arg) or lines_blob(arg, CRLF_LINE_TEMPLATE))
        else:
            raise ValueError(f"unknown command {op!r}")


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _send_count(conn: socket.socket, payload: memoryview, total: int) -> None:
    remaining = total
    while remaining > 0:
        block = payload[: min(remaining, len(payload))]
        conn.sendall(block)
        remaining -= len(block)


def _recv_count(conn: socket.socket, total: int) -> None:
    buffer = bytearray(CHUNK)
    remaining = total
    while remaining > 0:
        n = conn.recv_into(buffer, min(remaining, CHUNK))
        if not n:
            raise ValueError("EOF before the announced byte count")
        remaining -= n


def _echo(conn: socket.socket, size: int) -> None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    while True:
        got = 0
        while got < size:
            n = conn.recv_into(view[got:])
            if not n:
                return
            got += n
        conn.sendall(buffer)


def _drain_until_eof(conn: socket.socket) -> None:
    buffer = bytearray(CHUNK)
    while conn.recv_into(buffer):
        pass


class _HoldServer(_Server):
    """Accept connections and close each at its EOF, on one selector thread."""

    def run(self) -> None:
        self.listener.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ, None)
            while not self.stopping.is_set():
                for key, _ in selector.select(0.5):
                    if key.data is None:
                        self._accept(selector)
                    else:
                        self._read(selector, key.fileobj)  # type: ignore[arg-type]

    def _accept(self, selector: selectors.BaseSelector) -> None:
        for _ in range(64):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, OSError):
                return
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ, True)

    def _read(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            selector.unregister(conn)
            conn.close()


class _IdleServer(_Server):
    """Accept `n` connections, hold them, then reset (or close) them all on command."""

    def __init__(
        self, listener: socket.socket, pipe: multiprocessing.connection.Connection, n: int
    ) -> None:
        super().__init__(listener)
        self.pipe = pipe
        self.n = n
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        self.listener.settimeout(0.5)
        deadline = time.monotonic() + LIFETIME
        while len(self.conns) < self.n and not self.stopping.is_set():
            if time.monotonic() > deadline:
                return
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)

    def handle(self, message: Any) -> None:
        if message == "count":
            self.pipe.send(len(self.conns))
        elif message in ("reset", "close"):
            self.pipe.send(self._close_all(reset=message == "reset"))
        else:
            super().handle(message)

    def _close_all(self, reset: bool) -> tuple[float, float, int]:
        """Close every held connection; return (start, end) (monotonic clock) and the count."""
        with self.lock:
            conns, self.conns = self.conns, []
        start = time.monotonic()
        for conn in conns:
            if reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            conn.close()
        return start, time.monotonic(), len(conns)

    def stop(self) -> None:
        super().stop()
        self._close_all(reset=False)
