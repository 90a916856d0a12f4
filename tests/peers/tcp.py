"""Peers for the tests: stdlib servers in threads on loopback, port 0.

Each test may write its own handler (urllib3's socket-level tests do the
same): a function that receives the accepted stdlib socket. Every blocking
call has a timeout, and `stop()` joins every thread it started.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Callable, Optional

Handler = Callable[[socket.socket], None]
# Long enough for a loaded CI machine, short enough that a broken test fails fast.
PEER_TIMEOUT = 10.0


class Server:
    """A TCP listener that runs `handler` in a thread for each accepted connection."""

    def __init__(
        self, handler: Handler, host: str = "127.0.0.1", backlog: int = 16, port: int = 0
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(backlog)
        self.listener.settimeout(0.05)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.handler = handler
        self.errors: list[BaseException] = []
        self.accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-server")
        self._acceptor.start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(PEER_TIMEOUT)
            self.accepted.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), name="test-peer")
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except BaseException as exc:  # Reported by stop(), in the test's thread.
            self.errors.append(exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self._acceptor.join(PEER_TIMEOUT)
        for conn in self.accepted:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(PEER_TIMEOUT)
        self.listener.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.stop()


def echo(conn: socket.socket) -> None:
    """Echo until EOF, then close."""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


class Blackhole:
    """A listener whose accept queue is full: new connects never complete.

    Linux drops a SYN when the accept queue is full, so the client keeps
    retransmitting and its connect stays pending until its deadline.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.listener = socket.create_server((host, port), family=family, backlog=0)
        self.port: int = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(8):
            filler = socket.socket(family)
            filler.setblocking(False)
            filler.connect_ex((host, self.port))
            self.fillers.append(filler)
        # Wait until the queue is visibly full: the last fillers stay pending.
        for _ in range(100):
            if not _writable(self.fillers[-1]):
                break
            threading.Event().wait(0.01)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()


def _writable(sock: socket.socket) -> bool:
    import select

    # select(), not poll(): it exists everywhere (tests/portable runs without poll).
    _, writable, _ = select.select([], [sock], [], 0)
    return bool(writable)
