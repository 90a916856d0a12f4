"""The `Dialer`: the state of one connection's opening, dropped once it is over.

A `Connection` creates its dialer only when it cannot open at once: the first
connect to an IP literal runs in the caller's thread inside `connect()`
(`Connection.start`), and a loopback or LAN connect is usually complete by
the time ``getpeername()`` looks, so most such connections never build one.
Otherwise the dialer holds the addresses not tried yet, the attempts in
progress, the errors so far, the timers and the proxy's destination; the
connection keeps it in ``_dialer`` until it opens, fails or is closed (its
release closes the attempts' descriptors first), so an idle socket holds
none of it. A name is resolved by a DNS worker (`pysock._opening.resolve`),
which then starts the attempts; an attempt still in progress is handed to
the selector thread, which finishes it when the socket turns writable. One
deadline (``connect_timeout``) covers the lookup, every attempt, a proxy's
handshake and the TLS handshake: the dialer lives until the TLS handshake
is over, or is created for its deadline alone (`start_tls()`).

Happy Eyeballs v2 (RFC 8305): the addresses of one lookup are interleaved by
family, first family first (section 4); while an attempt is in progress the
next one starts ``happy_eyeballs_delay`` seconds later, or at once when an
attempt fails (section 5). The first connect to succeed wins and the others
are closed; every failure is kept for `ConnectError.errors`. With the delay
None, attempts run one at a time.

``address_filter`` is called for each address immediately before its
``connect()``, so the checked address is the connected address: a DNS answer
that changes between a check and a connect (DNS rebinding) cannot slip past.
Through a proxy it checks the destination, not the proxy (`_plan_proxy`).
A proxy's handshake (`pysock._proxy`) runs on the selector thread once the TCP
connection to the proxy is up; then the connection goes on as a direct one
would (TLS, if asked, is negotiated with the destination through the tunnel).

The dialer holds its connection weakly, and the loop, the timers and the DNS
workers hold the dialer weakly (`Attempt.dialer`, `_call_if_alive`,
`resolve`): none of them keeps a forgotten socket alive. It reaches the
connection through a narrow interface: its ``_lock`` and ``state`` (the
attempts join and leave under the lock, only while CONNECTING),
``_in_selector``, ``_connected`` (the TCP connection or tunnel is up) and
``_fail_open``.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any, Final, Optional

from . import _loop, _opening
from ._guard import deny_private, private_reason
from ._info import format_sockaddr
from ._opening import Sockaddr, _plan_proxy, dns_workers, interleave, resolve, with_target
from ._proxy import Handshake, ProxyRefused, handshake_for
from ._state import State
from .errors import ConnectError, SocketTimeout

if TYPE_CHECKING:
    from ._address import Endpoint
    from ._connection import Connection

__all__ = ["IN_PROGRESS", "SOCK_NONBLOCK", "Attempt", "Dialer", "refusal_of", "sockaddr_of"]

_log = logging.getLogger("pysock")

IN_PROGRESS: Final = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK})
SOCK_NONBLOCK: Final = getattr(socket, "SOCK_NONBLOCK", 0)
_PROXY_READ: Final = 16 * 1024  # Bytes peeked per read of a proxy's reply.


class Attempt:
    """One connect attempt, or the tunnel through a proxy, watched by the selector thread."""

    __slots__ = ("__weakref__", "dialer", "pending", "received", "sock", "sockaddr", "tunnel")

    def __init__(self, dialer: Dialer, sock: socket.socket, sockaddr: Sockaddr) -> None:
        self.dialer = weakref.ref(dialer)
        self.sock = sock
        self.sockaddr = sockaddr
        self.tunnel: Optional[Handshake] = None
        self.pending = b""  # Handshake bytes the proxy's socket did not take yet.
        self.received = b""  # The start of the proxy's message, taken off the socket.

    def on_ready_in_loop(self, events: int) -> None:
        dialer = self.dialer()
        if dialer is not None:
            dialer.attempt_ready_in_loop(self, events)

    def on_hangup_in_loop(self, error: Optional[OSError] = None) -> None:  # Never watched.
        pass

    def tunnel_step(self, tunnel: Handshake, events: int) -> None:
        """Take the proxy's reply (if readable) and send what the handshake has to say."""
        if events & selectors.EVENT_READ:
            self.receive_from_proxy(tunnel)
        self.pending += tunnel.data_to_send()
        while self.pending:
            sent = self.sock.send(self.pending)
            self.pending = self.pending[sent:]

    def receive_from_proxy(self, tunnel: Handshake) -> None:
        """Take the proxy's next message off the socket, and not one byte more.

        The bytes are peeked first: what follows the proxy's last reply is the
        destination's. An incomplete message is taken whole (all of it is the
        proxy's), so the level-triggered selector waits for more, never spins.
        """
        data = self.sock.recv(_PROXY_READ, socket.MSG_PEEK)
        if not data:
            raise ProxyRefused("it closed the connection during the handshake", errno.ECONNRESET)
        message = self.received + data
        length = tunnel.receive(message)
        if length == 0:
            self.sock.recv(len(data))
            self.received = message
            return
        self.sock.recv(length - len(self.received))
        self.received = b""


class Dialer:
    """Opens one `Connection`: DNS, attempts, a proxy's tunnel, the deadline."""

    __slots__ = (
        "__weakref__",
        "addresses",
        "attempts",
        "connection",
        "deadline",
        "deadline_timer",
        "endpoint",
        "errors",
        "options",
        "stagger_timer",
        "via",
    )

    def __init__(self, connection: Connection) -> None:
        self.connection = weakref.ref(connection)
        self.endpoint = connection.endpoint
        self.options = connection.options
        timeout = self.options.connect_timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.attempts: tuple[Attempt, ...] = ()  # Joined and left under the connection's lock.
        self.addresses: list[tuple[int, Sockaddr]] = []  # Not tried yet.
        self.errors: list[OSError] = []  # Every failed or refused attempt, in order.
        self.stagger_timer: Optional[_loop.Timer] = None
        self.deadline_timer: Optional[_loop.Timer] = None
        self.via: Optional[str] = None  # The destination a proxy is asked for.

    def start(self) -> None:
        """Adopt ``sock=``, plan a proxy, connect to an IP literal, or hand the name to DNS."""
        endpoint = self.endpoint
        options = self.options
        if options.sock is not None:
            self.adopt(options.sock)
        elif options.proxy is not None:
            dns_workers().submit(_plan_proxy, weakref.ref(self), options.proxy)
        elif endpoint.family is not None:
            self.addresses = [(endpoint.family, sockaddr_of(endpoint))]
            self.start_next(in_loop=False)
        else:
            resolve(weakref.ref(self), endpoint.host, endpoint.port)

    def fail(self, error: BaseException, cause: Optional[BaseException] = None) -> None:
        """Fail the opening (the connection's OPEN_FAILED), if the connection still exists."""
        connection = self.connection()
        if connection is not None:
            connection._fail_open(error, cause)

    # -- the deadline --------------------------------------------------------------

    def schedule_deadline(self) -> None:
        """Fail the opening with `SocketTimeout` at ``deadline`` (if there is one)."""
        if self.deadline is not None:
            ref = weakref.ref(self)
            self.deadline_timer = _loop.get_loop().call_at_threadsafe(
                self.deadline, lambda: _call_if_alive(ref, "on_deadline")
            )

    def on_deadline(self) -> None:
        timeout = self.options.connect_timeout
        self.fail(SocketTimeout(f"connecting to {self.endpoint} timed out after {timeout}s"))

    def cancel_timers(self) -> None:
        timer = self.deadline_timer
        if timer is not None:
            timer.cancel()
        if self.stagger_timer is not None:
            self._cancel_stagger()

    # -- attempts ---------------------------------------------------------------

    def adopt(self, sock: socket.socket) -> None:
        """``connect(sock=...)``: the connection is up already."""
        attempt = Attempt(self, sock, "")
        connection = self.connection()
        if connection is None:
            return
        with connection._lock:
            self.attempts = (attempt,)
        try:
            sock.setblocking(False)
        except OSError as exc:
            self._attempt_failed(attempt, exc)
            self.fail_with_attempt_errors()
            return
        connection._connected(sock)

    def on_resolved(self, addresses: list[tuple[int, Sockaddr]]) -> None:
        """DNS worker: start the attempts, interleaved by family (RFC 8305 section 4)."""
        connection = self.connection()
        if connection is None:
            return
        with connection._lock:
            if connection.state is not State.CONNECTING:
                return
            self.addresses = interleave(addresses)
        self.start_next(in_loop=False)

    def on_resolve_failed(self, exc: OSError, host: Optional[str] = None) -> None:
        name = host or self.endpoint.host
        message = f"cannot resolve {name!r} for {self.endpoint}: {exc.strerror or exc}"
        self.fail(ConnectError(message, exc.errno), exc)

    def start_next(self, in_loop: bool) -> None:
        """Start the next connect attempt; fail the opening when none is left.

        Runs in the caller or a DNS worker (`in_loop` False: no attempt is in
        progress yet) or in the selector thread (a stagger timer, a failure).
        """
        connection = self.connection()
        if connection is None:
            return
        while True:
            with connection._lock:
                if connection.state is not State.CONNECTING:
                    return
                if not self.addresses:
                    if self.attempts:
                        return  # The attempts in progress decide.
                    break
                family, sockaddr = self.addresses.pop(0)
            if self.options.address_filter is not None and self.options.proxy is None:
                admitted = self.admits(sockaddr)
                if admitted is None:
                    return
                if not admitted:
                    continue
            started = self._begin_attempt(connection, family, sockaddr)
            if started is None:
                continue  # Failed at once: RFC 8305 starts the next one at once.
            attempt, peer = started
            if peer is None:
                self._hand_to_loop(connection, attempt, in_loop)
            else:
                self._won(attempt, in_loop, peer)
            return
        self.fail_with_attempt_errors()

    def admits(self, sockaddr: Sockaddr) -> Optional[bool]:
        """Run ``address_filter`` on `sockaddr`.

        Returns:
            True to connect; False when refused (the refusal is kept in
            ``errors``); None when the filter raised (the opening has failed).
        """
        try:
            refusal = refusal_of(self.options.address_filter, sockaddr)
        except Exception as exc:  # The user's filter failed: nothing is opened.
            message = f"address_filter failed for {self.endpoint}: {exc!r}"
            # A ConnectError's cause is always an OSError (code catching OSError
            # sees every opening failure); the filter's exception is behind it.
            refusal = OSError(errno.EACCES, f"address_filter raised {exc!r}")
            refusal.__cause__ = exc
            self.fail(ConnectError(message, errno.EACCES), refusal)
            return None
        if refusal is None:
            return True
        _log.debug("%s: %s", self.endpoint, refusal.strerror)
        self.errors.append(refusal)
        return False

    def _begin_attempt(
        self, connection: Connection, family: int, sockaddr: Sockaddr
    ) -> Optional[tuple[Attempt, Optional[Sockaddr]]]:
        """Create a socket and start its connect.

        Returns:
            None if it failed at once (the error is kept); else the attempt and,
            when the connect is complete already, the peer's address.
        """
        local = self.options.local_address
        if local is not None and local[0] != family:
            reason = f"local_address {local[1][0]} cannot reach it"
            self.errors.append(OSError(errno.EAFNOSUPPORT, reason, format_sockaddr(sockaddr)))
            return None
        try:
            # Non-blocking from birth: one fcntl() less than setblocking(False).
            sock = socket.socket(family, socket.SOCK_STREAM | SOCK_NONBLOCK)
        except OSError as exc:
            self.errors.append(with_target(exc, format_sockaddr(sockaddr)))
            return None
        if not SOCK_NONBLOCK:
            sock.setblocking(False)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: connecting to %s", self.endpoint, format_sockaddr(sockaddr))
        if local is not None:
            try:
                sock.bind(local[1])
            except OSError as exc:
                self._attempt_failed(Attempt(self, sock, sockaddr), exc)
                return None
        code = _opening._start_connect(sock, sockaddr)
        peer: Optional[Sockaddr] = None
        if code in IN_PROGRESS:
            # Loopback and LAN connects are often done already: finishing here
            # saves a trip through the selector thread. getpeername() tells,
            # and its answer is needed anyway.
            try:
                peer = sock.getpeername()
                code = 0
            except OSError:  # ENOTCONN: still connecting, or failed.
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or code
        attempt = self.join(connection, sock, sockaddr, code)
        return None if attempt is None else (attempt, peer)

    def join(
        self, connection: Connection, sock: socket.socket, sockaddr: Sockaddr, code: int
    ) -> Optional[Attempt]:
        """Keep the attempt whose connect() gave `code`; None if it failed (the error is kept).

        The socket is this thread's alone until it is in ``attempts``: close()
        in another thread closes what is there, and must not close a descriptor
        under a connect() or getsockopt() in progress here.
        """
        attempt = Attempt(self, sock, sockaddr)
        if code not in IN_PROGRESS and code != 0:
            self._attempt_failed(attempt, OSError(code, os.strerror(code)))
            return None
        with connection._lock:
            if connection.state is not State.CONNECTING:
                sock.close()  # close() or the deadline came first: nobody else knows it.
                return None
            self.attempts += (attempt,)
        return attempt

    def _hand_to_loop(self, connection: Connection, attempt: Attempt, in_loop: bool) -> None:
        with connection._lock:  # From now on close() releases the descriptors on the loop.
            connection._in_selector = True
        if in_loop:
            self._watch_attempt_in_loop(attempt)
        else:
            _loop.get_loop().call_soon_threadsafe(self._watch_attempt_in_loop, attempt)

    def hand_to_loop(self, attempt: Attempt) -> None:
        """An attempt the caller's thread started, still in progress: the loop finishes it."""
        connection = self.connection()
        if connection is not None:
            self._hand_to_loop(connection, attempt, in_loop=False)

    def _watch_attempt_in_loop(self, attempt: Attempt) -> None:
        connection = self.connection()
        if connection is None:
            return
        loop = _loop.get_loop()
        with connection._lock:  # close() decides under this lock who releases the descriptor.
            if attempt not in self.attempts or connection.state is not State.CONNECTING:
                return
            loop.watch_writable(attempt.sock, attempt)
            delay = self.options.happy_eyeballs_delay
            stagger = delay is not None and bool(self.addresses) and self.stagger_timer is None
        if stagger:
            assert delay is not None
            ref = weakref.ref(self)
            self.stagger_timer = loop.call_at_threadsafe(
                time.monotonic() + delay, lambda: _call_if_alive(ref, "_on_stagger")
            )

    def _on_stagger(self) -> None:
        """Selector thread: the previous attempt had its head start; start the next."""
        self.stagger_timer = None
        self.start_next(in_loop=True)

    def _cancel_stagger(self) -> None:
        timer = self.stagger_timer
        if timer is not None:
            timer.cancel()
            self.stagger_timer = None

    def attempt_ready_in_loop(self, attempt: Attempt, events: int) -> None:
        """Selector thread: an attempt's connect ended, or its proxy sent or took bytes."""
        connection = self.connection()
        if connection is None or connection.state is not State.CONNECTING:
            return
        if attempt not in self.attempts:
            return
        if attempt.tunnel is not None:
            self._tunnel_step_in_loop(connection, attempt, attempt.tunnel, events)
            return
        code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._won(attempt, in_loop=True, peer=None)
            return
        self._attempt_failed(attempt, OSError(code, os.strerror(code)))
        self._cancel_stagger()  # RFC 8305 section 5: a failure starts the next at once.
        self.start_next(in_loop=True)

    def _attempt_failed(self, attempt: Attempt, exc: OSError) -> None:
        target = format_sockaddr(attempt.sockaddr) if attempt.sockaddr else str(self.endpoint)
        _log.debug("%s: connect attempt to %s failed: %s", self.endpoint, target, exc)
        connection = self.connection()
        if connection is not None:
            with connection._lock:
                self.attempts = tuple(a for a in self.attempts if a is not attempt)
                if connection._in_selector:
                    _loop.get_loop().unwatch(attempt.sock)  # Only the loop thread watches.
        attempt.sock.close()
        self.errors.append(with_target(exc, target))

    def connected_failed(self, sock: socket.socket, exc: OSError, in_loop: bool) -> None:
        """Setting the connected `sock` up failed: it counts as its attempt's failure."""
        attempt = next((a for a in self.attempts if a.sock is sock), None)
        # A socket the connection connected itself, before it had a dialer.
        self._attempt_failed(attempt or Attempt(self, sock, sockaddr_of(self.endpoint)), exc)
        self.start_next(in_loop)

    def _won(self, attempt: Attempt, in_loop: bool, peer: Optional[Sockaddr]) -> None:
        """`attempt` connected (to `peer`, if known): close the others, then tunnel or open."""
        connection = self.connection()
        if connection is None:
            return
        with connection._lock:
            if connection.state is not State.CONNECTING:
                return  # close() or the deadline came first; the release closes it.
            losers = [a for a in self.attempts if a is not attempt]
            self.attempts = (attempt,)
            self.addresses = []
            if in_loop:
                loop = _loop.get_loop()
                for other in (attempt, *losers):
                    loop.unwatch(other.sock)
                connection._in_selector = False
        if self.stagger_timer is not None:
            self._cancel_stagger()
        for loser in losers:  # Only a loop thread's attempts have rivals.
            _log.debug("%s: closing the slower attempt to %s", self.endpoint, loser.sockaddr)
            loser.sock.close()
        proxy = self.options.proxy
        if proxy is not None:
            assert self.via is not None
            attempt.tunnel = handshake_for(proxy, self.via, self.endpoint.port)
            self._hand_to_loop(connection, attempt, in_loop)
            return
        connection._connected(attempt.sock, peer)

    def fail_with_attempt_errors(self) -> None:
        errors = self.errors
        last = errors[-1] if errors else OSError(errno.EHOSTUNREACH, "no address to connect to")
        if len(errors) > 1:
            tried = "; ".join(f"{e.filename}: {e.strerror or e}" for e in errors)
            reason = f"{len(errors)} addresses failed ({tried})"
        else:
            reason = last.strerror or str(last)
        proxy = self.options.proxy
        if proxy is not None and self.via is not None:
            reason = f"the proxy {proxy} failed: {reason}"
        message = f"cannot connect to {self.endpoint}: {reason}"
        self.fail(ConnectError(message, last.errno, errors), last)

    def _tunnel_step_in_loop(
        self, connection: Connection, attempt: Attempt, tunnel: Handshake, events: int
    ) -> None:
        """Selector thread: one step of the proxy's handshake; open once it is done."""
        proxy = self.options.proxy
        try:
            attempt.tunnel_step(tunnel, events)
        except BlockingIOError:
            pass
        except (ProxyRefused, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"cannot connect to {self.endpoint} through proxy {proxy}: {reason}"
            # The cause is an OSError, as for a direct connect: a ConnectError's always is.
            cause = exc if isinstance(exc, OSError) else OSError(exc.errno, reason)
            self.fail(ConnectError(message, exc.errno), cause)
            return
        loop = _loop.get_loop()
        sock = attempt.sock
        with connection._lock:
            if connection.state is not State.CONNECTING:
                return
            if not (tunnel.done and not attempt.pending):
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if attempt.pending else 0)
                loop.watch(sock, events, attempt)
                return
            loop.unwatch(sock)
            connection._in_selector = False
        _log.debug("%s: tunnel open through proxy %s", self.endpoint, proxy)
        connection._connected(sock)


def refusal_of(address_filter: Any, sockaddr: Sockaddr) -> Optional[OSError]:
    """Ask `address_filter` about `sockaddr`; return the refusal, or None to go on."""
    if isinstance(sockaddr, str):
        return None  # A Unix socket's path: no address to judge.
    ip, port = sockaddr[0], sockaddr[1]
    if address_filter(ip, port):
        return None
    if address_filter is deny_private:
        reason = f"{ip} is {private_reason(ip)}"
    else:
        reason = f"{ip} is refused by address_filter"
    return OSError(errno.EACCES, f"destination refused: {reason}", format_sockaddr(sockaddr))


def sockaddr_of(endpoint: Endpoint) -> Sockaddr:
    """The address to connect to for an IP literal or a Unix socket's path."""
    # A Unix socket's endpoint has port 0 and its path as host.
    return (endpoint.host, endpoint.port) if endpoint.port else endpoint.host


def _call_if_alive(ref: weakref.ref[Any], method: str) -> None:
    dialer = ref()
    if dialer is not None:
        getattr(dialer, method)()
