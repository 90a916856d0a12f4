"""`connect()` and `Socket`: the public face of a connection."""

from __future__ import annotations

import concurrent.futures
import ssl
from types import TracebackType
from typing import Optional, Sequence, Union

from typing_extensions import Self, Unpack

from ._address import SocketAddress, parse_address
from ._connection import Connection
from ._info import SocketInfo, TLSInfo
from ._options import SocketOptions, check_tls_options, merge_options
from ._starttls import start_tls
from ._state import State
from ._streams import SocketReader, SocketWriter
from ._tls import TlsConnection
from .errors import StartTlsError

__all__ = ["Address", "Socket", "connect"]

Address = Union[SocketAddress, str, "tuple[str, int]"]


def connect(
    address: Address,
    options: Optional[SocketOptions] = None,
    /,
    **kwargs: Unpack[SocketOptions],
) -> Socket:
    """Open a TCP connection (optionally TLS) and return its `Socket` at once.

    DNS, the TCP handshake and (for ``secure_transport="on"``) the TLS
    handshake run in the background; ``opened`` completes when they are done,
    and reads and writes wait for it.

    Args:
        address: ``{"hostname": ..., "port": ...}``, ``"host:port"``,
            ``"[v6 literal]:port"`` or ``(host, port)``.
        options: a `SocketOptions` dict; the same keys may be given as keywords.

    Returns:
        The new `Socket`, still connecting.

    Raises:
        TypeError: an argument or option of the wrong type, or an unknown option.
        ValueError: a bad hostname, port or option value. Nothing was opened.
    """
    endpoint = parse_address(address)
    resolved = merge_options(options, kwargs)
    if resolved.secure_transport == "on":
        connection: Connection = TlsConnection(endpoint, resolved)
    else:
        connection = Connection(endpoint, resolved)
    sock = Socket(connection)
    connection.start()
    return sock


class Socket:
    """A connection opened by `connect()`; the Workers ``Socket`` in Python.

    Attributes:
        readable: the `SocketReader` (binary, buffered).
        writable: the `SocketWriter`.
    """

    __slots__ = ("_connection", "_upgraded", "readable", "writable")

    def __init__(self, connection: Connection) -> None:
        """Internal: use `connect()`."""
        self._connection = connection
        self._upgraded = False
        self.readable = SocketReader(connection)
        self.writable = SocketWriter(connection)

    @property
    def opened(self) -> concurrent.futures.Future[SocketInfo]:
        """Done when the connection is established; its exception is the opening error."""
        return self._connection.opened

    @property
    def closed(self) -> concurrent.futures.Future[None]:
        """Done when the connection is over: None for a clean end, else the error."""
        return self._connection.closed

    @property
    def secure_transport(self) -> str:
        """``"off"``, ``"on"`` or ``"starttls"``, as given to `connect()`."""
        return self._connection.options.secure_transport

    @property
    def upgraded(self) -> bool:
        """True once `start_tls()` has been called on this socket."""
        return self._upgraded

    @property
    def tls(self) -> Optional[TLSInfo]:
        """The TLS session's details once a handshake completed, else None."""
        return self._connection.tls

    def close(self) -> None:
        """Close both directions now; blocked reads and writes raise `SocketClosedError`.

        A pending connect is abandoned. Idempotent. ``closed`` is done when this returns.
        """
        self.readable._detach_buffer()
        self.writable._detach_stream()
        self._connection.close()

    def start_tls(
        self,
        *,
        expected_server_hostname: Optional[str] = None,
        tls_context: Optional[ssl.SSLContext] = None,
        alpn_protocols: Optional[Sequence[str]] = None,
    ) -> Socket:
        """Upgrade a ``"starttls"`` socket to TLS over the same connection.

        Options not given here come from `connect()`. The handshake runs in the
        background: the new socket's ``opened`` completes after it, and its
        reads and writes wait for it. This socket's ``closed`` completes and its
        streams raise `SocketClosedError` from now on.

        Returns:
            The new `Socket`, with ``secure_transport == "on"``.

        Raises:
            StartTlsError: this socket is not ``"starttls"``, was already
                upgraded, is closed or half-closed, another thread is reading or
                writing it, or the server's plaintext is waiting unread (a
                STARTTLS injection, CVE-2011-0411; the connection is then closed).
            TypeError, ValueError: a bad TLS option (nothing changed).
        """
        connection = self._connection
        if connection.options.secure_transport != "starttls":
            raise StartTlsError(
                "start_tls() needs a socket opened with secure_transport='starttls'; "
                f"this one is {connection.options.secure_transport!r}"
            )
        if self._upgraded:
            raise StartTlsError("start_tls() was already called on this socket")
        context, hostname, alpn = check_tls_options(
            tls_context, expected_server_hostname, alpn_protocols
        )
        unread = self.readable._has_unread()
        new = start_tls(connection, unread, context, hostname, alpn)
        self._upgraded = True
        self.readable._detach_buffer()
        self.writable._detach_stream()
        return Socket(new)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        connection = self._connection
        state = connection.state
        shown = state.value if state in (State.CONNECTING, State.OPEN) else "closed"
        return f"<pysock.Socket {connection.endpoint} {self.secure_transport} {shown}>"
