"""Peers for the load test and the soak: stdlib servers in a separate process.

The peer runs in its own process (``python -m tests.peers.load
MODE LIFETIME [ARGS]``) so that the client under test has its GIL to itself.
The parent talks to it through the child's stdin and stdout, one JSON object
per line: the peer first prints ``{"ports": {...}}``, then answers each
request (``{"op": "stats"}``, ``{"op": "reset"}``, ``{"op": "stop"}``). The
peer exits at ``stop``, when its stdin reaches EOF (the parent died) or when
its lifetime runs out, so a crashed test leaves nothing behind.

Modes:

* ``echo``: one selector thread echoes every connection until its EOF, then
  closes it. It never blocks: what it cannot send yet waits in memory (at
  most `PENDING_CAP` per connection, then it stops reading that connection),
  so a client that writes a chunk before reading it back never deadlocks.
  ``reset`` closes every open connection with SO_LINGER (1, 0), an RST each.
  Used for the 1,000 busy sockets and the 10,000 idle ones.
* ``soak``: three listeners (``off``: plain TCP, ``on``: TLS from the first
  byte, ``starttls``: the line ``STARTTLS`` answered by ``GO`` before the
  handshake) and a thread per connection obeying one header line (`Header`).

Both sides of the soak make the same byte stream from an offset
(`pattern_chunks`), so a download is checked without sending its checksum.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import resource
import select
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Final, Iterator, Optional

from ..helpers import reset

__all__ = ["HOST", "Header", "PeerProcess", "pattern_chunks", "raise_fd_limit"]

MODULE: Final = "tests.peers.load"
ROOT: Final = Path(__file__).resolve().parents[2]
HOST: Final = "127.0.0.1"
# Beyond this much unsent echo a connection is not read until the client reads.
PENDING_CAP: Final = 1024 * 1024
# One recv of the echo peer: large enough for bulk transfers on loopback.
RECV_SIZE: Final = 256 * 1024
# Blocking calls of the soak peer: generous for a loaded 2-core machine.
SOAK_PEER_TIMEOUT: Final = 60.0
# A send still blocked this long after the client began closing is reported as stalled.
STALL_TIMEOUT: Final = 20.0

# -- the byte pattern both sides of the soak produce -------------------------------------

PATTERN_CHUNK: Final = 64 * 1024
# A random block whose length is not a power of two, so that chunk boundaries
# drift across it and a shifted stream never lines up with the original.
_PERIOD: Final = 1024 * 1024 + 4099
_BASE: Final = random.Random(20261127).randbytes(_PERIOD + PATTERN_CHUNK)
_BASE_VIEW: Final = memoryview(_BASE)


def pattern_chunks(offset: int, size: int, chunk: int = PATTERN_CHUNK) -> Iterator[memoryview]:
    """The stream of `size` bytes starting at `offset` of the pattern, in chunks <= `chunk`."""
    chunk = max(1, min(chunk, PATTERN_CHUNK))
    position = offset % _PERIOD
    remaining = size
    while remaining > 0:
        n = min(chunk, remaining)
        yield _BASE_VIEW[position : position + n]
        position = (position + n) % _PERIOD
        remaining -= n


# -- the parent's side ------------------------------------------------------------------


class PeerProcess:
    """A running peer process, as the parent sees it (a context manager)."""

    def __init__(self, mode: str, lifetime: float, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", MODULE, mode, str(lifetime), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
        )
        self.stopped: Optional[dict[str, Any]] = None
        try:
            self.ports: dict[str, int] = self.receive(60.0)["ports"]
        except BaseException:
            self.close()
            raise

    def address(self, name: str = "echo") -> str:
        return f"{HOST}:{self.ports[name]}"

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        """The peer's next message; `TimeoutError` if none comes within `timeout`."""
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the peer sent nothing within {timeout} s")
        line = stdout.readline()
        if not line:
            raise EOFError(f"the peer exited (status {self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def request(self, op: str, timeout: float = 60.0) -> dict[str, Any]:
        self.send({"op": op})
        return self.receive(timeout)

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Ask the peer to stop; return its final statistics."""
        if self.stopped is None:
            self.stopped = self.request("stop", timeout)
        return self.stopped

    def close(self) -> None:
        """Stop the process whatever its state, and release its pipes."""
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()  # EOF: a live peer exits.
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the peer process: common parts -------------------------------------------------------


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(4096)  # Capped by net.core.somaxconn; the clients connect in bursts.
    return sock


def _start_watchdog(lifetime: float) -> None:
    def watch() -> None:
        time.sleep(lifetime)
        os._exit(3)

    threading.Thread(target=watch, name="peer-watchdog", daemon=True).start()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # A peer process must outlive a broken connection.
        reset(sock)


# -- mode "echo": one selector thread ------------------------------------------------------


class _EchoConn:
    __slots__ = ("eof", "events", "pending", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()
        self.eof = False
        self.events = selectors.EVENT_READ


class EchoPeer:
    """Mode ``echo`` (module docstring): listener, connections and stdin in one selector."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.listener = _listener()
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self.selector.register(0, selectors.EVENT_READ, self._command)
        self.conns: dict[socket.socket, _EchoConn] = {}
        self.buffer = bytearray(RECV_SIZE)
        self.view = memoryview(self.buffer)
        self.stdin = b""
        self.stats = collections.Counter[str]()
        self.running = True

    def run(self) -> None:
        _reply({"ports": {"echo": self.listener.getsockname()[1]}})
        while self.running:
            for key, events in self.selector.select(1.0):
                key.data(key.fileobj, events)
        for sock in list(self.conns):
            self._drop(sock)
        _reply(self._stats())

    def _stats(self) -> dict[str, Any]:
        return {"open": len(self.conns), **self.stats}

    def _command(self, _fd: Any, _events: int) -> None:
        data = os.read(0, 4096)
        if not data:
            self.running = False
            return
        self.stdin += data
        while b"\n" in self.stdin:
            line, self.stdin = self.stdin.split(b"\n", 1)
            op = json.loads(line)["op"]
            if op == "stats":
                _reply(self._stats())
            elif op == "reset":
                _reply(self._reset_all())
            elif op == "stop":
                self.running = False
            else:
                raise ValueError(f"unknown request {op!r}")

    def _reset_all(self) -> dict[str, Any]:
        socks = list(self.conns)
        start = time.monotonic()  # CLOCK_MONOTONIC: the client's clock too.
        for sock in socks:
            self.selector.unregister(sock)
            del self.conns[sock]
            _reset(sock)
        self.stats["reset"] += len(socks)
        return {"start": start, "end": time.monotonic(), "count": len(socks)}

    def _accept(self, _listener: Any, _events: int) -> None:
        for _ in range(256):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self.conns[sock] = _EchoConn(sock)
            self.selector.register(sock, selectors.EVENT_READ, self._ready)
            self.stats["accepted"] += 1

    def _ready(self, sock: socket.socket, events: int) -> None:
        conn = self.conns[sock]
        try:
            if events & selectors.EVENT_READ and not conn.eof:
                n = sock.recv_into(self.buffer)
                if n == 0:
                    conn.eof = True
                conn.pending += self.view[:n]
            if conn.pending:
                sent = sock.send(conn.pending)
                del conn.pending[:sent]
                self.stats["echoed"] += sent
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.stats["errors"] += 1
            self._drop(sock)
            return
        if conn.eof and not conn.pending:
            self.stats["eof"] += 1
            self._drop(sock)
            return
        self._update(conn)

    def _update(self, conn: _EchoConn) -> None:
        wanted = selectors.EVENT_WRITE if conn.pending else 0
        if not conn.eof and len(conn.pending) < PENDING_CAP:
            wanted |= selectors.EVENT_READ
        if wanted != conn.events:
            conn.events = wanted
            self.selector.modify(conn.sock, wanted, self._ready)

    def _drop(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        del self.conns[sock]
        sock.close()


# -- mode "soak": a thread per connection ---------------------------------------------------


class Header:
    """The soak's request line: ``OP SIZE OFFSET``.

    ``ECHO``: echo until EOF, then close cleanly. ``SEND``: send SIZE pattern
    bytes from OFFSET, then close cleanly. ``SENDX``: the same, but the client
    closes before the end (errors expected). ``SINK``: read until EOF or an
    error (the client closes while writing). ``RSTS``: send SIZE bytes, then
    reset. ``RSTR``: receive SIZE bytes, then reset.
    """

    OPS: Final = ("ECHO", "SEND", "SENDX", "SINK", "RSTS", "RSTR")

    @staticmethod
    def encode(op: str, size: int = 0, offset: int = 0) -> bytes:
        return f"{op} {size} {offset}\n".encode()


class SoakPeer:
    """Mode ``soak`` (module docstring)."""

    def __init__(self, cert_path: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_path)
        self.listeners = {name: _listener() for name in ("off", "on", "starttls")}
        self.lock = threading.Lock()
        self.stats = collections.Counter[str]()
        self.unexpected: list[str] = []
        self.samples: dict[str, str] = {}  # The first error of each kind, for the report.
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        acceptors = [
            threading.Thread(target=self._accept_loop, args=(name, sock), daemon=True)
            for name, sock in self.listeners.items()
        ]
        for thread in acceptors:
            thread.start()
        _reply({"ports": {name: sock.getsockname()[1] for name, sock in self.listeners.items()}})
        for line in sys.stdin:
            op = json.loads(line)["op"]
            if op == "stop":
                break
            with self.lock:
                _reply({**self.stats, "unexpected": list(self.unexpected)})
        self.stopping.set()
        for thread in acceptors:
            thread.join(10)
        deadline = time.monotonic() + 2 * SOAK_PEER_TIMEOUT
        with self.lock:
            threads = list(self.threads)
        stuck = 0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            stuck += thread.is_alive()
        with self.lock:
            final = {"unexpected": self.unexpected, "stuck": stuck, "samples": self.samples}
            _reply({**self.stats, **final})

    def _count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def _accept_loop(self, kind: str, listener: socket.socket) -> None:
        listener.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            thread = threading.Thread(target=self._serve, args=(conn, kind), daemon=True)
            with self.lock:
                self.threads = [t for t in self.threads if t.is_alive()]
                self.threads.append(thread)
                self.stats[f"accepted {kind}"] += 1
            thread.start()
        listener.close()

    def _serve(self, conn: socket.socket, kind: str) -> None:
        stream: socket.socket = conn
        op = "handshake"
        try:
            conn.settimeout(SOAK_PEER_TIMEOUT)
            if kind == "starttls":
                line = _read_line(conn)
                if line != b"STARTTLS\n":
                    raise ValueError(f"expected STARTTLS, got {line!r}")
                conn.sendall(b"GO\n")
            if kind != "off":
                stream = self.context.wrap_socket(conn, server_side=True)
            fields = _read_line(stream).split()
            op, size, offset = fields[0].decode(), int(fields[1]), int(fields[2])
            if op not in Header.OPS:
                raise ValueError(f"unknown op {op!r}")
            self._count(f"op {op}")
            if op == "SENDX":  # The client closes mid-way: a send blocked this long is stuck.
                stream.settimeout(STALL_TIMEOUT)
            self._obey(stream, op, size, offset)
        except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError.
            key = f"error {op} {type(exc).__name__}"
            with self.lock:
                self.stats[key] += 1
                self.samples.setdefault(f"{key} {kind}", repr(exc))
        except Exception:
            with self.lock:
                self.unexpected.append(traceback.format_exc())
        finally:
            stream.close()

    def _obey(self, stream: socket.socket, op: str, size: int, offset: int) -> None:
        if op == "ECHO":
            while True:
                data = stream.recv(65536)
                if not data:
                    break
                stream.sendall(data)
                self._count("bytes ECHO", len(data))
            _close_cleanly(stream)
        elif op in ("SEND", "SENDX", "RSTS"):
            for chunk in pattern_chunks(offset, size):
                stream.sendall(chunk)
                self._count(f"bytes {op}", len(chunk))
            if op == "RSTS":
                _reset(stream)
            else:
                _close_cleanly(stream)
        elif op == "SINK":
            while True:
                data = stream.recv(65536)
                if not data:
                    break
                self._count("bytes SINK", len(data))
        elif op == "RSTR":
            got = 0
            while got < size:
                data = stream.recv(min(65536, size - got))
                if not data:
                    raise EOFError(f"EOF after {got} of {size} bytes")
                got += len(data)
            self._count("bytes RSTR", got)
            _reset(stream)


def _read_line(stream: socket.socket, limit: int = 100) -> bytes:
    """One line, byte by byte: nothing after it is consumed (STARTTLS needs that)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = stream.recv(1)
        if not byte:
            raise EOFError(f"EOF in a header line after {line!r}")
        line += byte
        if len(line) > limit:
            raise ValueError(f"header line too long: {line!r}")
    return line


def _close_cleanly(stream: socket.socket) -> None:
    """Plain TCP: FIN. TLS: close_notify, and the client's answer if it comes (bounded)."""
    if isinstance(stream, ssl.SSLSocket):
        with contextlib.suppress(OSError):
            stream.unwrap()
    stream.close()


# -- entry point -------------------------------------------------------------------------

MODES: Final[dict[str, Callable[..., Any]]] = {
    "echo": lambda: EchoPeer().run(),
    "soak": lambda cert_path: SoakPeer(cert_path).run(),
}


def main(argv: list[str]) -> None:
    mode, lifetime, args = argv[0], float(argv[1]), argv[2:]
    raise_fd_limit()
    _start_watchdog(lifetime)
    MODES[mode](*args)
    sys.stdout.flush()
    os._exit(0)  # Daemon threads may sit in blocking calls: leave without waiting.


if __name__ == "__main__":
    main(sys.argv[1:])
