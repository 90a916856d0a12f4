"""One connect attempt: its socket, its non-blocking connect, a proxy's tunnel over it.

No state beyond the attempt itself: the `pysock._dialer.Dialer` decides which
attempts run and what their results mean. `connect_now` is also the whole
connect of a connection whose first connect completes at once (`dial`), which
never builds a dialer. The opening's error messages are built here too
(`attempts_failed`, `filter_failed`, `tunnel_failed`): a `ConnectError`'s
cause is always an `OSError`, so code that catches `OSError` sees them all.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import weakref
from typing import TYPE_CHECKING, Any, Final, Optional, Union

from . import _loop, _opening
from ._guard import deny_private, private_reason
from ._info import format_sockaddr
from ._opening import Sockaddr
from ._proxy import Handshake, ProxyConfig, ProxyRefused
from ._state import RegistrationEvent, State
from .errors import ConnectError

if TYPE_CHECKING:
    from ._address import Endpoint
    from ._connection import Connection
    from ._dialer import Dialer

__all__ = [
    "IN_PROGRESS",
    "Attempt",
    "attempts_failed",
    "connect_now",
    "filter_failed",
    "refusal_of",
    "sockaddr_of",
    "tunnel_failed",
]

IN_PROGRESS: Final = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK})
_SOCK_NONBLOCK: Final = getattr(socket, "SOCK_NONBLOCK", 0)
_PROXY_READ: Final = 16 * 1024  # Bytes peeked per read of a proxy's reply.

_log = logging.getLogger("pysock")


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

    def tunnel_step_in_loop(
        self, dialer: Dialer, connection: Connection, tunnel: Handshake, events: int
    ) -> None:
        """Selector thread: one step of the proxy's handshake; open once it is done."""
        proxy = dialer.options.proxy
        try:
            self._exchange(tunnel, events)
        except BlockingIOError:
            pass
        except (ProxyRefused, OSError) as exc:
            dialer.fail(*tunnel_failed(dialer.endpoint, proxy, exc))
            return
        loop = _loop.get_loop()
        with connection._lock:
            if connection.state is not State.CONNECTING:
                return
            if not (tunnel.done and not self.pending):
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.pending else 0)
                loop.watch(self.sock, events, self)
                return
            loop.unwatch(self.sock)
            connection._watched(RegistrationEvent.LEAVE_SELECTOR)
        _log.debug("%s: tunnel open through proxy %s", dialer.endpoint, proxy)
        connection._connected(self.sock)

    def _exchange(self, tunnel: Handshake, events: int) -> None:
        """Take the proxy's reply (if readable), then send what the handshake has to say."""
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


def connect_now(
    endpoint: Endpoint,
    family: int,
    sockaddr: Sockaddr,
    local: Optional[tuple[int, tuple[str, int]]] = None,
) -> tuple[socket.socket, int, Optional[Sockaddr]]:
    """Create a non-blocking socket (bound to `local`) and start its connect to `sockaddr`.

    Returns:
        The socket; 0, an `IN_PROGRESS` code or the connect's error; and the
        peer's address when the connect is complete already.

    Raises:
        OSError: from ``socket()`` or ``bind()`` (nothing is left open).
    """
    # Non-blocking from birth: one fcntl() less than setblocking(False).
    sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)
    if not _SOCK_NONBLOCK:
        sock.setblocking(False)
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("%s: connecting to %s", endpoint, format_sockaddr(sockaddr))
    if local is not None:
        try:
            sock.bind(local[1])
        except OSError:
            sock.close()
            raise
    code = _opening._start_connect(sock, sockaddr)
    if code == 0 or code in IN_PROGRESS:
        # Loopback and LAN connects are often done already: finishing here
        # saves a trip through the selector thread. getpeername() tells, and
        # its answer is needed anyway.
        try:
            return sock, 0, sock.getpeername()
        except OSError:  # ENOTCONN: still connecting, or failed.
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or code
    return sock, code, None


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


def attempts_failed(
    endpoint: Endpoint, errors: list[OSError], proxy: Optional[ProxyConfig]
) -> tuple[ConnectError, OSError]:
    """The opening's error when every attempt failed (through `proxy`, if given), and its cause."""
    last = errors[-1] if errors else OSError(errno.EHOSTUNREACH, "no address to connect to")
    if len(errors) > 1:
        tried = "; ".join(f"{e.filename}: {e.strerror or e}" for e in errors)
        reason = f"{len(errors)} addresses failed ({tried})"
    else:
        reason = last.strerror or str(last)
    if proxy is not None:
        reason = f"the proxy {proxy} failed: {reason}"
    message = f"cannot connect to {endpoint}: {reason}"
    return ConnectError(message, last.errno, errors), last


def filter_failed(endpoint: Endpoint, exc: Exception) -> tuple[ConnectError, OSError]:
    """The opening's error when ``address_filter`` raised `exc`, and its cause."""
    message = f"address_filter failed for {endpoint}: {exc!r}"
    # A ConnectError's cause is always an OSError (code catching OSError sees
    # every opening failure); the filter's exception is behind it.
    refusal = OSError(errno.EACCES, f"address_filter raised {exc!r}")
    refusal.__cause__ = exc
    return ConnectError(message, errno.EACCES), refusal


def tunnel_failed(
    endpoint: Endpoint, proxy: Optional[ProxyConfig], exc: Union[ProxyRefused, OSError]
) -> tuple[ConnectError, OSError]:
    """The opening's error when the proxy's handshake failed with `exc`, and its cause."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    message = f"cannot connect to {endpoint} through proxy {proxy}: {reason}"
    # The cause is an OSError, as for a direct connect: a ConnectError's always is.
    cause = exc if isinstance(exc, OSError) else OSError(exc.errno, reason)
    return ConnectError(message, exc.errno), cause


def sockaddr_of(endpoint: Endpoint) -> Sockaddr:
    """The address to connect to for an IP literal, or a Unix socket's path."""
    # A Unix socket's endpoint has port 0 and its path as host.
    return (endpoint.host, endpoint.port) if endpoint.port else endpoint.host
