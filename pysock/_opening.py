"""Opening a connection: DNS, the connect attempts and the connect deadline.

The first attempt to an IP literal runs in the caller's thread inside
`connect()`: a loopback or LAN connect is usually complete by the time a
zero-timeout ``poll()`` looks, and finishing it there costs no hand-off to the
selector thread. A name is resolved by a DNS worker, which then starts the
attempts; an attempt still in progress is handed to the selector thread,
which finishes it when the socket turns writable. One deadline
(``connect_timeout``) covers the lookup, every attempt and the TLS handshake.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final, Optional, Union

from . import _loop
from ._info import SocketInfo, format_sockaddr, socket_info
from ._state import State
from .errors import ConnectError, SocketTimeout

_log = logging.getLogger("pysock")

if TYPE_CHECKING:
    from ._address import Endpoint
    from ._options import Options

__all__ = ["Opening", "Sockaddr", "dns_executor", "reset_dns_after_fork", "tune"]

# Threads are started on demand up to this bound, so one slow lookup never
# stalls another until 32 are slow at once, and a burst of lookups for
# unresponsive names cannot create threads without limit. A lookup that
# outlives its connect deadline is abandoned (its result dropped) but holds its
# worker until getaddrinfo() returns.
_DNS_WORKERS: Final = 32
_IN_PROGRESS: Final = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK})
_SOCK_NONBLOCK: Final = getattr(socket, "SOCK_NONBLOCK", 0)

Sockaddr = Union[tuple[str, int], tuple[str, int, int, int]]

_dns_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_dns_lock = threading.Lock()


class Opening:
    """The opening half of `Connection` (a mixin: every method runs on a Connection)."""

    if not TYPE_CHECKING:  # Connection declares every slot; mypy checks them there.
        __slots__ = ()

    if TYPE_CHECKING:  # Provided by Connection.
        endpoint: Endpoint
        options: Options
        state: State
        _lock: threading.Lock
        _blocking: bool
        _in_selector: bool
        _attempt: Optional[socket.socket]
        _addresses: list[tuple[int, Sockaddr]]
        _errors: list[OSError]
        _connect_deadline: Optional[float]
        _deadline_timer: Optional[_loop.Timer]

        def _opened(self, sock: socket.socket, info: SocketInfo) -> None: ...
        def on_ready_in_loop(self, events: int) -> None: ...
        def on_hangup_in_loop(self) -> None: ...
        def _fail_open(
            self, error: BaseException, cause: Optional[BaseException] = None
        ) -> None: ...

    def start(self) -> None:
        """Begin opening: connect to an IP literal here, or hand the name to DNS."""
        endpoint = self.endpoint
        timeout = self.options.connect_timeout
        self._connect_deadline = None if timeout is None else time.monotonic() + timeout
        if endpoint.family is not None:
            self._addresses = [(endpoint.family, (endpoint.host, endpoint.port))]
            self._try_next_address()
        else:
            ref = weakref.ref(self)
            dns_executor().submit(_resolve, ref, endpoint.host, endpoint.port)
        if self.state is State.CONNECTING and self._connect_deadline is not None:
            self.schedule_connect_deadline()

    def schedule_connect_deadline(self) -> None:
        """Fail the opening with `SocketTimeout` at ``_connect_deadline``."""
        assert self._connect_deadline is not None
        ref = weakref.ref(self)
        self._deadline_timer = _loop.get_loop().call_at_threadsafe(
            self._connect_deadline, lambda: _call_if_alive(ref, "_on_connect_deadline")
        )

    def _on_resolved(self, addresses: list[tuple[int, Sockaddr]]) -> None:
        """DNS worker: start the attempts (one at a time; see issue on happy eyeballs)."""
        with self._lock:
            if self.state is not State.CONNECTING:
                return
            self._addresses = addresses
        self._try_next_address()

    def _on_resolve_failed(self, exc: OSError) -> None:
        message = (
            f"cannot resolve {self.endpoint.host!r} for {self.endpoint}: {exc.strerror or exc}"
        )
        self._fail_open(ConnectError(message, exc.errno), exc)

    def _try_next_address(self) -> None:
        """Start the next connect attempt. Runs in the caller, DNS or loop thread."""
        while self._addresses:
            family, sockaddr = self._addresses.pop(0)
            try:
                # Non-blocking from birth: one fcntl() less than setblocking(False).
                sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)
            except OSError as exc:
                self._errors.append(exc)
                continue
            with self._lock:
                if self.state is not State.CONNECTING:
                    sock.close()
                    return
                self._attempt = sock
            if not _SOCK_NONBLOCK:
                sock.setblocking(False)
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("%s: connecting to %s", self.endpoint, format_sockaddr(sockaddr))
            code = _start_connect(sock, sockaddr)
            peer: Optional[Sockaddr] = None
            if code in _IN_PROGRESS:
                # Loopback and LAN connects are often done already: finishing here
                # saves a trip through the selector thread. getpeername() tells,
                # and its answer is needed anyway.
                try:
                    peer = sock.getpeername()
                    code = 0
                except OSError:  # ENOTCONN: still connecting, or failed.
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or code
            if code in _IN_PROGRESS:
                _loop.get_loop().call_soon_threadsafe(self._watch_connect_in_loop, sock)
                return
            if code == 0:
                self._connected(sock, peer)
                return
            self._attempt_failed(sock, OSError(code, os.strerror(code)))
        self._fail_open_with_attempt_errors()

    def _attempt_failed(self, sock: socket.socket, exc: OSError) -> None:
        _log.debug("%s: connect attempt failed: %s", self.endpoint, exc)
        with self._lock:
            if self._attempt is sock:
                self._attempt = None
        sock.close()
        self._errors.append(exc)

    def _fail_open_with_attempt_errors(self) -> None:
        errors = self._errors
        last = errors[-1] if errors else OSError(errno.EHOSTUNREACH, "no address to connect to")
        reason = last.strerror or str(last)
        message = f"cannot connect to {self.endpoint}: {reason}"
        self._fail_open(ConnectError(message, last.errno, errors), last)

    def _watch_connect_in_loop(self, sock: socket.socket) -> None:
        with self._lock:  # close() decides under this lock who releases the descriptor.
            if self._attempt is sock and self.state is State.CONNECTING:
                _loop.get_loop().watch_writable(sock, self)
                self._in_selector = True

    def _finish_connect_in_loop(self) -> None:
        sock = self._attempt
        if sock is None:
            return
        loop = _loop.get_loop()
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        with self._lock:
            loop.unwatch(sock)
            self._in_selector = False
        if code == 0:
            self._connected(sock)
            return
        self._attempt_failed(sock, OSError(code, os.strerror(code)))
        self._try_next_address()

    def _connected(self, sock: socket.socket, peer: Optional[Sockaddr] = None) -> None:
        """The TCP connection is up: switch the socket to its I/O mode and open.

        `peer` is ``sock.getpeername()`` when the caller has it already.
        """
        try:
            tune(sock)
            if self._blocking:
                sock.setblocking(True)
            info = socket_info(sock, peer)
        except OSError as exc:
            self._attempt_failed(sock, exc)
            self._try_next_address()
            return
        self._opened(sock, info)

    def _cancel_deadline(self) -> None:
        timer = self._deadline_timer
        if timer is not None:
            timer.cancel()

    def _on_connect_deadline(self) -> None:
        timeout = self.options.connect_timeout
        self._fail_open(SocketTimeout(f"connecting to {self.endpoint} timed out after {timeout}s"))


def dns_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _dns_pool
    with _dns_lock:
        if _dns_pool is None:
            _dns_pool = concurrent.futures.ThreadPoolExecutor(
                _DNS_WORKERS, thread_name_prefix="pysock-dns"
            )
        return _dns_pool


def _start_connect(sock: socket.socket, sockaddr: Sockaddr) -> int:
    try:
        return sock.connect_ex(sockaddr)
    except OSError as exc:  # connect_ex still raises for some errors (e.g. gaierror).
        return exc.errno or errno.EINVAL


def tune(sock: socket.socket) -> None:
    # Request/response protocols (SMTP, Redis, PostgreSQL) stall on Nagle + delayed ACK.
    # Asking is cheaper than reading sock.family (an enum conversion in Python).
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOPROTOOPT):
            raise  # Not a TCP socket (a Unix socket) is fine; anything else is not.


def _call_if_alive(ref: weakref.ref[Any], method: str) -> None:
    connection = ref()
    if connection is not None:
        getattr(connection, method)()


def _resolve(ref: weakref.ref[Any], host: str, port: int) -> None:
    """DNS worker: resolve, then hand the addresses back (the socket may be gone)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        connection = ref()
        if connection is not None:
            connection._on_resolve_failed(exc)
        return
    connection = ref()
    if connection is not None:
        addresses: list[tuple[int, Sockaddr]] = [
            (info[0], info[4])  # type: ignore[misc]  # SOCK_STREAM + AF_INET/6: (host, port, ...)
            for info in infos
        ]
        connection._on_resolved(addresses)


def reset_dns_after_fork() -> None:
    """In a forked child: the parent's DNS workers do not exist here."""
    global _dns_pool, _dns_lock
    _dns_pool = None
    _dns_lock = threading.Lock()
