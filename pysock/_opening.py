"""Opening a connection: DNS, Happy Eyeballs, proxies and the connect deadline.

The first attempt to an IP literal runs in the caller's thread inside
`connect()`: a loopback or LAN connect is usually complete by the time a
zero-timeout ``poll()`` looks, and finishing it there costs no hand-off to the
selector thread. A name is resolved by a DNS worker, which then starts the
attempts; an attempt still in progress is handed to the selector thread,
which finishes it when the socket turns writable. One deadline
(``connect_timeout``) covers the lookup, every attempt, a proxy's handshake
and the TLS handshake.

Happy Eyeballs v2 (RFC 8305): the addresses of one lookup are interleaved by
family, first family first (section 4); while an attempt is in progress the
next one starts ``happy_eyeballs_delay`` seconds later, or at once when an
attempt fails (section 5). The first connect to succeed wins and the others
are closed; every failure is kept for `ConnectError.errors`. With the delay
None, attempts run one at a time.

``address_filter`` is called for each address immediately before its
``connect()``, so the checked address is the connected address: a DNS answer
that changes between a check and a connect (DNS rebinding) cannot slip past.
Through a proxy it checks the destination, not the proxy: with ``socks5://``
pysock resolves the name itself and checks each address; with ``socks5h://``
and ``http://`` the proxy resolves names, so only an IP literal can be checked
and a name is refused.

A proxy's handshake (`pysock._proxy`) runs on the selector thread once the TCP
connection to the proxy is up; then the connection goes on as a direct one
would (TLS, if asked, is negotiated with the destination through the tunnel).
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (see _stream_addresses)
import errno
import logging
import os
import selectors
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final, Optional, Union

from . import _loop
from ._guard import deny_private, private_reason
from ._info import SocketInfo, format_sockaddr, socket_info
from ._proxy import Handshake, ProxyConfig, ProxyRefused, handshake_for
from ._state import RegistrationEvent, State
from ._workers import Workers
from .errors import ConnectError, SocketTimeout

_log = logging.getLogger("pysock")

if TYPE_CHECKING:
    from ._address import Endpoint
    from ._options import Options

__all__ = [
    "Attempt",
    "Opening",
    "Sockaddr",
    "dns_workers",
    "reset_dns_after_fork",
    "resolve",
    "tune",
]

# A DNS thread idle this long exits. A lookup that outlives its connect deadline
# is abandoned (its result dropped) but holds its thread until getaddrinfo()
# returns; the threads never bound how many lookups run at once (pysock._workers).
_DNS_IDLE_SECONDS: Final = 10.0
_IN_PROGRESS: Final = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK})
_SOCK_NONBLOCK: Final = getattr(socket, "SOCK_NONBLOCK", 0)
_PROXY_READ: Final = 16 * 1024  # Bytes peeked per read of a proxy's reply.
_NOT_TCP: Final = (errno.EOPNOTSUPP, errno.ENOPROTOOPT)  # A Unix socket has no TCP options.

Sockaddr = Union[str, tuple[str, int], tuple[str, int, int, int]]

# The resolver, looked up at each use: tests give a name both loopback
# addresses through it, since no hosts file here lists one for both families.
getaddrinfo = socket.getaddrinfo

_dns_workers: Optional[Workers] = None
_dns_lock = threading.Lock()
# The lookups in progress, by (host, port): the connections waiting for each.
# A burst of connects to one name (a pool filling up while DNS is slow) shares
# one getaddrinfo() call and one thread.
_waiting: dict[tuple[str, int], list[weakref.ref[Any]]] = {}


class Attempt:
    """One connect attempt, or the tunnel through a proxy, watched by the selector thread."""

    __slots__ = ("__weakref__", "connection", "pending", "received", "sock", "sockaddr", "tunnel")

    def __init__(self, connection: Opening, sock: socket.socket, sockaddr: Sockaddr) -> None:
        self.connection = weakref.ref(connection)
        self.sock = sock
        self.sockaddr = sockaddr
        self.tunnel: Optional[Handshake] = None
        self.pending = b""  # Handshake bytes the proxy's socket did not take yet.
        self.received = b""  # The start of the proxy's message, taken off the socket.

    def on_ready_in_loop(self, events: int) -> None:
        connection = self.connection()
        if connection is not None:
            connection._attempt_ready_in_loop(self, events)

    def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None:  # Never watched.
        pass


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

        @property
        def in_selector(self) -> bool: ...

        _attempts: tuple[Attempt, ...]
        _addresses: list[tuple[int, Sockaddr]]
        _errors: list[OSError]
        _connect_deadline: Optional[float]
        _deadline_timer: Optional[_loop.Timer]
        _stagger_timer: Optional[_loop.Timer]
        _via: Optional[str]

        def _opened(self, sock: socket.socket, info: SocketInfo) -> None: ...
        def _watched(self, event: RegistrationEvent) -> None: ...
        def on_ready_in_loop(self, events: int) -> None: ...
        def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None: ...
        def _fail_open(
            self, error: BaseException, cause: Optional[BaseException] = None
        ) -> None: ...

    def start(self) -> None:
        """Begin opening: connect to an IP literal here, or hand the name to DNS."""
        endpoint = self.endpoint
        options = self.options
        timeout = options.connect_timeout
        self._connect_deadline = None if timeout is None else time.monotonic() + timeout
        if options.sock is not None:
            self._adopt(options.sock)
        elif options.proxy is not None:
            dns_workers().submit(_plan_proxy, weakref.ref(self), options.proxy)
        elif endpoint.family is not None:
            # A Unix socket's endpoint has port 0 and its path as host.
            sockaddr: Sockaddr = (endpoint.host, endpoint.port) if endpoint.port else endpoint.host
            self._addresses = [(endpoint.family, sockaddr)]
            self._start_next(in_loop=False)
        else:
            resolve(weakref.ref(self), endpoint.host, endpoint.port)
        if self.state is State.CONNECTING and self._connect_deadline is not None:
            self.schedule_connect_deadline()

    def schedule_connect_deadline(self) -> None:
        """Fail the opening with `SocketTimeout` at ``_connect_deadline``."""
        assert self._connect_deadline is not None
        ref = weakref.ref(self)
        self._deadline_timer = _loop.get_loop().call_at_threadsafe(
            self._connect_deadline, lambda: _call_if_alive(ref, "_on_connect_deadline")
        )

    def _adopt(self, sock: socket.socket) -> None:
        """``connect(sock=...)``: the connection is up already."""
        attempt = Attempt(self, sock, "")
        with self._lock:
            self._attempts = (attempt,)
        try:
            sock.setblocking(False)
        except OSError as exc:
            self._attempt_failed(attempt, exc)
            self._fail_open_with_attempt_errors()
            return
        self._connected(sock)

    def _on_resolved(self, addresses: list[tuple[int, Sockaddr]]) -> None:
        """DNS worker: start the attempts, interleaved by family (RFC 8305 section 4)."""
        with self._lock:
            if self.state is not State.CONNECTING:
                return
            self._addresses = interleave(addresses)
        self._start_next(in_loop=False)

    def _on_resolve_failed(self, exc: OSError, host: Optional[str] = None) -> None:
        name = host or self.endpoint.host
        message = f"cannot resolve {name!r} for {self.endpoint}: {exc.strerror or exc}"
        self._fail_open(ConnectError(message, exc.errno), exc)

    # -- attempts ---------------------------------------------------------------

    def _start_next(self, in_loop: bool) -> None:
        """Start the next connect attempt; fail the opening when none is left.

        Runs in the caller or a DNS worker (`in_loop` False: no attempt is in
        progress yet) or in the selector thread (a stagger timer, a failure).
        """
        while True:
            with self._lock:
                if self.state is not State.CONNECTING:
                    return
                if not self._addresses:
                    if self._attempts:
                        return  # The attempts in progress decide.
                    break
                family, sockaddr = self._addresses.pop(0)
            if self.options.address_filter is not None and self.options.proxy is None:
                admitted = self.admits(sockaddr)
                if admitted is None:
                    return
                if not admitted:
                    continue
            started = self._begin_attempt(family, sockaddr)
            if started is None:
                continue  # Failed at once: RFC 8305 starts the next one at once.
            attempt, peer = started
            if peer is None:
                self._hand_to_loop(attempt, in_loop)
            else:
                self._won(attempt, in_loop, peer)
            return
        self._fail_open_with_attempt_errors()

    def admits(self, sockaddr: Sockaddr) -> Optional[bool]:
        """Run ``address_filter`` on `sockaddr`.

        Returns:
            True to connect; False when refused (the refusal is kept in
            ``_errors``); None when the filter raised (the opening has failed).
        """
        try:
            refusal = self.check_destination(sockaddr)
        except Exception as exc:  # The user's filter failed: nothing is opened.
            message = f"address_filter failed for {self.endpoint}: {exc!r}"
            # A ConnectError's cause is always an OSError (code catching OSError
            # sees every opening failure); the filter's exception is behind it.
            refusal = OSError(errno.EACCES, f"address_filter raised {exc!r}")
            refusal.__cause__ = exc
            self._fail_open(ConnectError(message, errno.EACCES), refusal)
            return None
        if refusal is None:
            return True
        _log.debug("%s: %s", self.endpoint, refusal.strerror)
        self._errors.append(refusal)
        return False

    def check_destination(self, sockaddr: Sockaddr) -> Optional[OSError]:
        """Ask ``address_filter`` about `sockaddr`; return the refusal, or None to go on."""
        if isinstance(sockaddr, str):
            return None  # A Unix socket's path: no address to judge.
        address_filter = self.options.address_filter
        assert address_filter is not None
        ip, port = sockaddr[0], sockaddr[1]
        if address_filter(ip, port):
            return None
        if address_filter is deny_private:
            reason = f"{ip} is {private_reason(ip)}"
        else:
            reason = f"{ip} is refused by address_filter"
        return OSError(errno.EACCES, f"destination refused: {reason}", format_sockaddr(sockaddr))

    def _begin_attempt(
        self, family: int, sockaddr: Sockaddr
    ) -> Optional[tuple[Attempt, Optional[Sockaddr]]]:
        """Create a socket and start its connect.

        Returns:
            None if it failed at once (the error is kept); else the attempt and,
            when the connect is complete already, the peer's address.
        """
        local = self.options.local_address
        if local is not None and local[0] != family:
            reason = f"local_address {local[1][0]} cannot reach it"
            self._errors.append(OSError(errno.EAFNOSUPPORT, reason, format_sockaddr(sockaddr)))
            return None
        try:
            # Non-blocking from birth: one fcntl() less than setblocking(False).
            sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)
        except OSError as exc:
            self._errors.append(_with_target(exc, format_sockaddr(sockaddr)))
            return None
        # The socket is this thread's alone until it is in _attempts: close() in
        # another thread closes what is there, and must not close a descriptor
        # under a connect() or getsockopt() in progress here.
        attempt = Attempt(self, sock, sockaddr)
        if not _SOCK_NONBLOCK:
            sock.setblocking(False)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: connecting to %s", self.endpoint, format_sockaddr(sockaddr))
        if local is not None:
            try:
                sock.bind(local[1])
            except OSError as exc:
                self._attempt_failed(attempt, exc)
                return None
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
        if code not in _IN_PROGRESS and code != 0:
            self._attempt_failed(attempt, OSError(code, os.strerror(code)))
            return None
        with self._lock:
            if self.state is not State.CONNECTING:
                sock.close()  # close() or the deadline came first: nobody else knows it.
                return None
            self._attempts += (attempt,)
        return attempt, peer

    def _hand_to_loop(self, attempt: Attempt, in_loop: bool) -> None:
        with self._lock:  # From now on close() releases the descriptors on the loop.
            self._watched(RegistrationEvent.ENTER_SELECTOR)
        if in_loop:
            self._watch_attempt_in_loop(attempt)
        else:
            _loop.get_loop().call_soon_threadsafe(self._watch_attempt_in_loop, attempt)

    def _watch_attempt_in_loop(self, attempt: Attempt) -> None:
        loop = _loop.get_loop()
        with self._lock:  # close() decides under this lock who releases the descriptor.
            if attempt not in self._attempts or self.state is not State.CONNECTING:
                return
            loop.watch_writable(attempt.sock, attempt)
            stagger = (
                self.options.happy_eyeballs_delay is not None
                and bool(self._addresses)
                and self._stagger_timer is None
            )
        if stagger:
            delay = self.options.happy_eyeballs_delay
            assert delay is not None
            ref = weakref.ref(self)
            self._stagger_timer = loop.call_at_threadsafe(
                time.monotonic() + delay, lambda: _call_if_alive(ref, "_on_stagger")
            )

    def _on_stagger(self) -> None:
        """Selector thread: the previous attempt had its head start; start the next."""
        self._stagger_timer = None
        self._start_next(in_loop=True)

    def _cancel_stagger(self) -> None:
        timer = self._stagger_timer
        if timer is not None:
            timer.cancel()
            self._stagger_timer = None

    def _attempt_ready_in_loop(self, attempt: Attempt, events: int) -> None:
        """Selector thread: an attempt's connect ended, or its proxy sent or took bytes."""
        if self.state is not State.CONNECTING or attempt not in self._attempts:
            return
        if attempt.tunnel is not None:
            self._tunnel_step_in_loop(attempt, events)
            return
        code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._won(attempt, in_loop=True, peer=None)
            return
        self._attempt_failed(attempt, OSError(code, os.strerror(code)))
        self._cancel_stagger()  # RFC 8305 section 5: a failure starts the next at once.
        self._start_next(in_loop=True)

    def _attempt_failed(self, attempt: Attempt, exc: OSError) -> None:
        target = format_sockaddr(attempt.sockaddr) if attempt.sockaddr else str(self.endpoint)
        _log.debug("%s: connect attempt to %s failed: %s", self.endpoint, target, exc)
        with self._lock:
            self._attempts = tuple(a for a in self._attempts if a is not attempt)
            if self.in_selector:
                _loop.get_loop().unwatch(attempt.sock)  # Only the loop thread watches.
        attempt.sock.close()
        self._errors.append(_with_target(exc, target))

    def _won(self, attempt: Attempt, in_loop: bool, peer: Optional[Sockaddr]) -> None:
        """`attempt` connected (to `peer`, if known): close the others, then tunnel or open."""
        with self._lock:
            if self.state is not State.CONNECTING:
                return  # close() or the deadline came first; the release closes it.
            losers = [a for a in self._attempts if a is not attempt]
            self._attempts = (attempt,)
            self._addresses = []
            if in_loop:
                loop = _loop.get_loop()
                for other in (attempt, *losers):
                    loop.unwatch(other.sock)
                self._watched(RegistrationEvent.LEAVE_SELECTOR)
        if self._stagger_timer is not None:
            self._cancel_stagger()
        for loser in losers:  # Only a loop thread's attempts have rivals.
            _log.debug("%s: closing the slower attempt to %s", self.endpoint, loser.sockaddr)
            loser.sock.close()
        proxy = self.options.proxy
        if proxy is not None:
            assert self._via is not None
            attempt.tunnel = handshake_for(proxy, self._via, self.endpoint.port)
            self._hand_to_loop(attempt, in_loop)
            return
        self._connected(attempt.sock, peer)

    def _fail_open_with_attempt_errors(self) -> None:
        errors = self._errors
        last = errors[-1] if errors else OSError(errno.EHOSTUNREACH, "no address to connect to")
        if len(errors) > 1:
            tried = "; ".join(f"{e.filename}: {e.strerror or e}" for e in errors)
            reason = f"{len(errors)} addresses failed ({tried})"
        else:
            reason = last.strerror or str(last)
        proxy = self.options.proxy
        if proxy is not None and self._via is not None:
            reason = f"the proxy {proxy} failed: {reason}"
        message = f"cannot connect to {self.endpoint}: {reason}"
        self._fail_open(ConnectError(message, last.errno, errors), last)

    # -- a proxy's tunnel (selector thread) -----------------------------------------

    def _tunnel_step_in_loop(self, attempt: Attempt, events: int) -> None:
        tunnel = attempt.tunnel
        sock = attempt.sock
        assert tunnel is not None
        proxy = self.options.proxy
        try:
            if events & selectors.EVENT_READ:
                self._tunnel_receive(attempt, tunnel)
            attempt.pending += tunnel.data_to_send()
            while attempt.pending:
                sent = sock.send(attempt.pending)
                attempt.pending = attempt.pending[sent:]
        except BlockingIOError:
            pass
        except (ProxyRefused, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"cannot connect to {self.endpoint} through proxy {proxy}: {reason}"
            # The cause is an OSError, as for a direct connect: a ConnectError's always is.
            cause = exc if isinstance(exc, OSError) else OSError(exc.errno, reason)
            self._fail_open(ConnectError(message, exc.errno), cause)
            return
        loop = _loop.get_loop()
        with self._lock:
            if self.state is not State.CONNECTING:
                return
            if not (tunnel.done and not attempt.pending):
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if attempt.pending else 0)
                loop.watch(sock, events, attempt)
                return
            loop.unwatch(sock)
            self._watched(RegistrationEvent.LEAVE_SELECTOR)
        _log.debug("%s: tunnel open through proxy %s", self.endpoint, proxy)
        self._connected(sock)

    @staticmethod
    def _tunnel_receive(attempt: Attempt, tunnel: Handshake) -> None:
        """Take the proxy's next message off the socket, and not one byte more.

        The bytes are peeked first: what follows the proxy's last reply is the
        destination's. An incomplete message is taken whole (all of it is the
        proxy's), so the level-triggered selector waits for more, never spins.
        """
        data = attempt.sock.recv(_PROXY_READ, socket.MSG_PEEK)
        if not data:
            raise ProxyRefused("it closed the connection during the handshake", errno.ECONNRESET)
        message = attempt.received + data
        length = tunnel.receive(message)
        if length == 0:
            attempt.sock.recv(len(data))
            attempt.received = message
            return
        attempt.sock.recv(length - len(attempt.received))
        attempt.received = b""

    # -- the connection is up -------------------------------------------------------

    def _connected(self, sock: socket.socket, peer: Optional[Sockaddr] = None) -> None:
        """The TCP connection (or tunnel) is up: switch the socket to its I/O mode and open.

        `peer` is ``sock.getpeername()`` when the caller has it already.
        """
        try:
            tune(sock, self.options)
            if self._blocking:
                sock.setblocking(True)
            info = socket_info(sock, peer)
        except OSError as exc:
            self._connected_failed(sock, exc)
            return
        self._opened(sock, info)

    def _connected_failed(self, sock: socket.socket, exc: OSError) -> None:
        for attempt in self._attempts:
            if attempt.sock is sock:
                self._attempt_failed(attempt, exc)
        self._start_next(in_loop=_loop.get_loop().in_loop_thread())

    def _cancel_deadline(self) -> None:
        timer = self._deadline_timer
        if timer is not None:
            timer.cancel()
        if self._stagger_timer is not None:
            self._cancel_stagger()

    def _on_connect_deadline(self) -> None:
        timeout = self.options.connect_timeout
        self._fail_open(SocketTimeout(f"connecting to {self.endpoint} timed out after {timeout}s"))


def interleave(addresses: list[tuple[int, Sockaddr]]) -> list[tuple[int, Sockaddr]]:
    """RFC 8305 section 4: alternate families, starting with the first address's.

    Duplicates (one address listed twice by the resolver) are dropped.
    """
    unique = list(dict.fromkeys(addresses))
    if not unique:
        return unique
    first = unique[0][0]
    preferred = [a for a in unique if a[0] == first]
    other = [a for a in unique if a[0] != first]
    result: list[tuple[int, Sockaddr]] = []
    for index in range(max(len(preferred), len(other))):
        result.extend(group[index] for group in (preferred, other) if index < len(group))
    return result


def _with_target(exc: OSError, target: str) -> OSError:
    """`exc` with the address it concerns as its ``filename`` (shown in its message)."""
    if exc.filename is None and exc.errno is not None:
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), target)
    return exc


def dns_workers() -> Workers:
    global _dns_workers
    with _dns_lock:
        if _dns_workers is None:
            _dns_workers = Workers("pysock-dns", _DNS_IDLE_SECONDS)
        return _dns_workers


def _start_connect(sock: socket.socket, sockaddr: Sockaddr) -> int:
    try:
        return sock.connect_ex(sockaddr)
    except OSError as exc:  # connect_ex still raises for some errors (e.g. gaierror).
        return exc.errno or errno.EINVAL


def tune(sock: socket.socket, options: Options) -> None:
    """Apply ``no_delay`` and ``keep_alive`` to a connected socket (a Unix socket ignores them)."""
    # Request/response protocols (SMTP, Redis, PostgreSQL) stall on Nagle + delayed ACK.
    # Asking is cheaper than reading sock.family (an enum conversion in Python).
    try:
        if options.no_delay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        elif options.sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    except OSError as exc:
        if exc.errno not in _NOT_TCP:
            raise  # Not a TCP socket (a Unix socket) is fine; anything else is not.
        return
    keep_alive = options.keep_alive
    if keep_alive is None:
        return  # Never switched off: an adopted socket keeps the keepalive its owner set.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = keep_alive
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", count),
    ):
        option = getattr(socket, name, None)
        if name == "TCP_KEEPIDLE" and option is None:
            option = getattr(socket, "TCP_KEEPALIVE", None)  # macOS spells it so.
        if value is not None and option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, int(value))


def _call_if_alive(ref: weakref.ref[Any], method: str) -> None:
    connection = ref()
    if connection is not None:
        getattr(connection, method)()


def resolve(ref: weakref.ref[Any], host: str, port: int) -> None:
    """Look `host` up in a DNS thread, then call ``_on_resolved`` or ``_on_resolve_failed``.

    Joins a lookup of the same name and port already in progress, if any.
    """
    key = (host, port)
    with _dns_lock:
        waiting = _waiting.get(key)
        if waiting is not None:
            waiting.append(ref)
            return
        _waiting[key] = [ref]
    try:
        dns_workers().submit(_resolve_for_waiting, host, port)
    except BaseException:
        with _dns_lock:
            del _waiting[key]
        raise


def _resolve_for_waiting(host: str, port: int) -> None:
    """DNS thread: one lookup, its answer handed to every socket waiting for it."""
    error: Optional[OSError] = None
    addresses: list[tuple[int, Sockaddr]] = []
    try:
        addresses = _stream_addresses(host, port)
    except OSError as exc:
        error = exc
    with _dns_lock:
        waiting = _waiting.pop((host, port), [])
    for ref in waiting:
        connection = ref()
        if connection is None:
            continue  # Garbage collected while it waited.
        try:
            if error is not None:
                connection._on_resolve_failed(error, host)
            else:
                connection._on_resolved(list(addresses))
        except Exception as exc:  # A pysock bug: the other sockets still get their answer.
            _loop.report_bug(exc, connection, "a pysock-dns thread")
        del connection


def _stream_addresses(host: str, port: int) -> list[tuple[int, Sockaddr]]:
    """``getaddrinfo()`` for a stream socket: (family, sockaddr) pairs; raises `OSError`.

    ``getaddrinfo()`` encodes a str name with the "idna" codec, which Python
    imports on first use: this module imports it, so that a DNS thread (a
    daemon) never holds the import lock when the interpreter's exit stops it,
    which would hang the exit. A name the codec refuses is an `OSError` too.
    """
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise
    except Exception as exc:  # UnicodeError from the codec, or a resolver's bug.
        raise OSError(errno.EINVAL, f"the name cannot be looked up: {exc}") from exc
    return [
        (info[0], info[4])  # type: ignore[misc]  # SOCK_STREAM + AF_INET/6: (host, port, ...)
        for info in infos
    ]


def _lookup(ref: weakref.ref[Any], host: str, port: int) -> Optional[list[tuple[int, Sockaddr]]]:
    """`_stream_addresses`, or None (the opening failed) on an error."""
    try:
        return _stream_addresses(host, port)
    except OSError as exc:
        connection = ref()
        if connection is not None:
            connection._on_resolve_failed(exc, host)
        return None


def _plan_proxy(ref: weakref.ref[Any], proxy: ProxyConfig) -> None:
    """DNS worker: settle the destination to ask the proxy for, then resolve the proxy.

    ``socks5://`` resolves the destination here and sends the first address
    ``address_filter`` allows; the other schemes send the name as given.
    """
    connection = ref()
    if connection is None:
        return
    endpoint = connection.endpoint
    address_filter = connection.options.address_filter
    del connection  # Hold no strong reference across the lookups.
    if endpoint.family is None and proxy.resolves_names:
        if address_filter is not None:
            _refuse_unchecked(ref, proxy)
            return
        via = endpoint.host
    else:
        if endpoint.family is None:
            candidates = _lookup(ref, endpoint.host, endpoint.port)
            if candidates is None:
                return
        else:
            candidates = [(endpoint.family, (endpoint.host, endpoint.port))]
        chosen = _first_allowed(ref, candidates if address_filter is not None else candidates[:1])
        if chosen is None:
            return
        via = chosen
    addresses = _lookup(ref, proxy.host, proxy.port)
    connection = ref()
    if connection is not None and addresses is not None:
        connection._via = via
        connection._on_resolved(addresses)


def _first_allowed(ref: weakref.ref[Any], candidates: list[tuple[int, Sockaddr]]) -> Optional[str]:
    """The first candidate ``address_filter`` allows (the filter runs now, in this worker)."""
    connection = ref()
    if connection is None:
        return None
    for _, sockaddr in candidates:
        if connection.options.address_filter is None:
            return str(sockaddr[0])
        admitted = connection.admits(sockaddr)
        if admitted is None:
            return None
        if admitted:
            return str(sockaddr[0]).split("%", 1)[0]
    connection._fail_open_with_attempt_errors()
    return None


def _refuse_unchecked(ref: weakref.ref[Any], proxy: ProxyConfig) -> None:
    connection = ref()
    if connection is None:
        return
    message = (
        f"cannot connect to {connection.endpoint}: address_filter cannot check "
        f"{connection.endpoint.host!r}, since the proxy ({proxy.scheme}://) resolves names; "
        "use a socks5:// proxy (pysock resolves and checks) or an IP literal"
    )
    refusal = OSError(errno.EACCES, "address_filter cannot check a name the proxy resolves")
    connection._fail_open(ConnectError(message, errno.EACCES), refusal)


def reset_dns_after_fork() -> None:
    """In a forked child: the parent's DNS threads and their lookups do not exist here."""
    global _dns_workers, _dns_lock
    _dns_workers = None
    _dns_lock = threading.Lock()
    _waiting.clear()
