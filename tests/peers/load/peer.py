"""The peer process: its modes (``echo``, ``soak``) and its entry point, `main`."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
import traceback
from typing import Any, Callable, Final

from ...helpers import reset
from .protocol import HOST, STALL_TIMEOUT, Header, pattern_chunks

# Beyond this much unsent echo a connection is not read until the client reads.
PENDING_CAP: Final = 1024 * 1024
# One recv of the echo peer: large enough for bulk transfers on loopback.
RECV_SIZE: Final = 256 * 1024
# Blocking calls of the soak peer: generous for a loaded 2-core machine.
SOAK_PEER_TIMEOUT: Final = 60.0


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
