"""The `Dialer`: one connection's opening state, dropped once the opening is over.

The first connect to an IP literal runs in the caller's thread (`dial`): a
loopback or LAN connect is usually complete at once, and the connection then
opens without a dialer. Otherwise it keeps one in ``_dialer`` until it opens,
fails or is closed (its release closes the attempts' descriptors first). A
DNS worker resolves a name (`pysock._opening.resolve`), then starts the
attempts; the selector thread finishes an attempt in progress when its socket
turns writable. One deadline, ``connect_timeout``, covers the lookup, every
attempt, a proxy's handshake (`Attempt.tunnel_step_in_loop`) and the TLS
handshake: the dialer lives until that is over, or is built for the deadline
alone (`start_tls()`, or TLS after a connect that completed at once).

Happy Eyeballs v2 (RFC 8305): the addresses of one lookup are interleaved by
family, first family first (section 4); while an attempt is in progress the
next starts ``happy_eyeballs_delay`` seconds later, or at once when one fails
(section 5). The first connect to succeed wins and the others are closed;
every failure is kept for `ConnectError.errors`. With the delay None, attempts
run one at a time. ``address_filter`` runs on each address immediately before
its ``connect()``, so the checked address is the connected one: a DNS answer
that changes between a check and a connect (DNS rebinding) cannot slip past.

It holds its connection weakly, and the loop, the timers and the DNS workers
hold it weakly (`Attempt.dialer`, `_call_if_alive`, `resolve`), so none keeps
a forgotten socket alive. It uses the connection's ``_lock`` and ``state``
(attempts join and leave under the lock, only while CONNECTING),
``in_selector``, ``_watched``, ``_connected`` and ``_fail_open``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any, Optional

from . import _loop
from ._attempt import (
    IN_PROGRESS,
    Attempt,
    attempts_failed,
    connect_now,
    filter_failed,
    refusal_of,
    sockaddr_of,
)
from ._info import format_sockaddr
from ._opening import Sockaddr, _plan_proxy, dns_workers, interleave, resolve, with_target
from ._proxy import handshake_for
from ._state import RegistrationEvent, State
from .errors import ConnectError, SocketTimeout

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Dialer", "dial"]

_log = logging.getLogger("pysock")


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
        endpoint, sock, proxy = self.endpoint, self.options.sock, self.options.proxy
        if sock is not None:
            self.adopt(sock)
        elif proxy is not None:
            dns_workers().submit(_plan_proxy, weakref.ref(self), proxy)
        elif endpoint.family is not None:
            self.addresses = [(endpoint.family, sockaddr_of(endpoint))]
            self.start_next(in_loop=False)
        else:
            resolve(weakref.ref(self), endpoint.host, endpoint.port)

    def fail(self, error: BaseException, cause: Optional[BaseException] = None) -> None:
        """Fail the opening (OPEN_FAILED), if the connection still exists."""
        connection = self.connection()
        if connection is not None:
            connection._fail_open(error, cause)

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
        for timer in (self.deadline_timer, self.stagger_timer):
            if timer is not None:
                timer.cancel()

    def adopt(self, sock: socket.socket) -> None:
        """``connect(sock=...)``: the connection is up already."""
        attempt = Attempt(self, sock, "")
        connection = self.connection()
        assert connection is not None  # Called by dial(), from the connection.
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

        In the caller or a DNS worker (`in_loop` False: none is in progress
        yet), or in the selector thread (a stagger timer, a failure).
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
            self.fail(*filter_failed(self.endpoint, exc))
            return None
        if refusal is None:
            return True
        _log.debug("%s: %s", self.endpoint, refusal.strerror)
        self.errors.append(refusal)
        return False

    def _begin_attempt(
        self, connection: Connection, family: int, sockaddr: Sockaddr
    ) -> Optional[tuple[Attempt, Optional[Sockaddr]]]:
        """Start a connect: None if it failed at once (kept), else the attempt and its peer."""
        local = self.options.local_address
        if local is not None and local[0] != family:
            reason = f"local_address {local[1][0]} cannot reach it"
            self.errors.append(OSError(errno.EAFNOSUPPORT, reason, format_sockaddr(sockaddr)))
            return None
        try:
            sock, code, peer = connect_now(self.endpoint, family, sockaddr, local)
        except OSError as exc:  # socket() or bind()
            self._attempt_error(format_sockaddr(sockaddr), exc)
            return None
        attempt = self.join(connection, sock, sockaddr, code)
        return None if attempt is None else (attempt, peer)

    def join(
        self, connection: Connection, sock: socket.socket, sockaddr: Sockaddr, code: int
    ) -> Optional[Attempt]:
        """Keep the attempt whose connect() gave `code`; None if it failed (the error is kept).

        Until now `sock` was this thread's alone: close() in another thread closes
        what ``attempts`` holds, never a descriptor under a connect() here.
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
            connection._watched(RegistrationEvent.ENTER_SELECTOR)
        if in_loop:
            self._watch_attempt_in_loop(attempt)
        else:
            _loop.get_loop().call_soon_threadsafe(self._watch_attempt_in_loop, attempt)

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

    def _on_stagger(self) -> None:  # The previous attempt had its head start.
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
            attempt.tunnel_step_in_loop(self, connection, attempt.tunnel, events)
            return
        code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._won(attempt, in_loop=True, peer=None)
            return
        self._attempt_failed(attempt, OSError(code, os.strerror(code)))
        self._cancel_stagger()  # RFC 8305 section 5: a failure starts the next at once.
        self.start_next(in_loop=True)

    def _attempt_failed(self, attempt: Attempt, exc: OSError) -> None:
        connection = self.connection()
        if connection is not None:
            with connection._lock:
                self.attempts = tuple(a for a in self.attempts if a is not attempt)
                if connection.in_selector:
                    _loop.get_loop().unwatch(attempt.sock)  # Only the loop thread watches.
        attempt.sock.close()
        sockaddr = attempt.sockaddr
        self._attempt_error(format_sockaddr(sockaddr) if sockaddr else str(self.endpoint), exc)

    def _attempt_error(self, target: str, exc: OSError) -> None:
        _log.debug("%s: connect attempt to %s failed: %s", self.endpoint, target, exc)
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
                connection._watched(RegistrationEvent.LEAVE_SELECTOR)
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
        proxy = self.options.proxy if self.via is not None else None
        self.fail(*attempts_failed(self.endpoint, self.errors, proxy))


def dial(connection: Connection) -> None:
    """Begin `connection`'s opening (`Connection.start`), in the caller's thread.

    A first connect to an IP literal (no proxy, filter, local address or
    ``sock=``) that completes at once opens the connection with no dialer.
    """
    options, endpoint = connection.options, connection.endpoint
    family = endpoint.family
    if (
        family is None
        or options.sock is not None
        or options.proxy is not None
        or options.address_filter is not None
        or options.local_address is not None
    ):
        dialer = connection._dialer = Dialer(connection)
        dialer.start()
        return
    sockaddr = (endpoint.host, endpoint.port) if endpoint.port else endpoint.host  # sockaddr_of
    try:
        sock, code, peer = connect_now(endpoint, family, sockaddr)
    except OSError as exc:
        dialer = connection._dialer = Dialer(connection)
        dialer._attempt_error(format_sockaddr(sockaddr), exc)
        dialer.fail_with_attempt_errors()
        return
    if peer is not None:
        connection._connected(sock, peer)  # Nobody else knows the connection yet.
        return
    dialer = connection._dialer = Dialer(connection)  # In progress, or failed: it goes on.
    attempt = dialer.join(connection, sock, sockaddr, code)
    if attempt is None:
        dialer.fail_with_attempt_errors()
    else:
        dialer._hand_to_loop(connection, attempt, in_loop=False)


def _call_if_alive(ref: weakref.ref[Any], method: str) -> None:
    dialer = ref()
    if dialer is not None:
        getattr(dialer, method)()
