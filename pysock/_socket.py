"""`connect()` and `Socket`: the public face of a connection."""

from __future__ import annotations

import concurrent.futures
import ssl
from types import TracebackType
from typing import Any, Optional, Sequence, Union

from typing_extensions import Self, Unpack

from ._address import SocketAddress, UnixAddress, endpoint_of_peer, parse_address
from ._body import DEFAULT_STREAM_CHUNK, SocketStream
from ._connection import Connection
from ._info import SocketInfo, TLSInfo
from ._options import SocketOptions, check_timeout, check_tls_options, merge_options
from ._rawio import afresh
from ._reader import SocketReader
from ._starttls import start_tls
from ._state import TERMINAL, State
from ._tls import TlsConnection
from ._writer import SocketWriter
from .errors import SocketClosedError, StartTlsError

__all__ = ["Address", "Socket", "connect"]

Address = Union[SocketAddress, UnixAddress, str, "tuple[str, int]"]


def connect(
    address: Optional[Address] = None,
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
            ``"[v6 literal]:port"`` or ``(host, port)``; a Unix socket is
            ``{"path": ...}`` or ``"unix:/path"``. May be left out with
            ``sock=``: the adopted socket's peer is the address then.
        options: a `SocketOptions` dict; the same keys may be given as keywords
            (``secure_transport``, ``timeout``, ``connect_timeout``,
            ``tls_context``, ``proxy``, ``address_filter``... see docs/api.md).

    Returns:
        The new `Socket`, still connecting.

    Raises:
        TypeError: an argument or option of the wrong type, or an unknown option.
        ValueError: a bad hostname, port or option value, or options that
            cannot go together. Nothing was opened.

    Example::

        with connect("example.com:443", secure_transport="on", timeout=10) as sock:
            sock.writable.write(b"HEAD / HTTP/1.1\\r\\nHost: example.com\\r\\n\\r\\n")
            print(sock.readable.readline())
    """
    port: Any = options
    if isinstance(port, int) and not isinstance(port, bool) and isinstance(address, str):
        # connect("localhost", 9001): the socket.create_connection() habit.
        joined = f"{address}:{port}"
        raise TypeError(
            f"connect() takes the port in the address: write connect({joined!r}) "
            f"or connect(({address!r}, {port}))"
        )
    resolved = merge_options(options, kwargs)
    if address is None:
        if resolved.sock is None:
            raise TypeError("connect() needs an address (or an open socket as sock=)")
        endpoint = endpoint_of_peer(resolved.sock)
    else:
        endpoint = parse_address(address)
    if (resolved.proxy is not None or resolved.local_address is not None) and endpoint.is_unix:
        raise ValueError(f"{endpoint} is a Unix socket: proxy and local_address do not apply")
    if resolved.address_filter is not None and (endpoint.is_unix or resolved.sock is not None):
        # Refused, not skipped: code that guards user-given destinations must not
        # reach "unix:/run/docker.sock" or an already connected socket unchecked.
        what = "an adopted socket (sock=)" if resolved.sock is not None else "a Unix socket"
        raise ValueError(f"address_filter cannot check {what}: it has no IP address to judge")
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

    __slots__ = ("__weakref__", "_connection", "_upgraded", "readable", "writable")

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
    def timeout(self) -> Optional[float]:
        """The timeout of each blocking read and write, in seconds; None waits forever.

        Settable, like ``socket.settimeout()``: the next call uses the new
        value, and a call already waiting keeps the deadline it began with.
        A timed-out read loses no data; a timed-out write breaks the socket
        (an unknown amount was sent).

        Raises:
            TypeError: set to something that is not a number or None.
            ValueError: set to a negative number or NaN.
        """
        return self._connection.timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        self._connection.timeout = check_timeout("timeout", value)
        self.readable._timeout_changed()

    @property
    def tls(self) -> Optional[TLSInfo]:
        """The TLS session's details once a handshake completed, else None."""
        return self._connection.tls

    def close(self) -> None:
        """Close both directions now; blocked reads and writes raise `SocketClosedError`.

        A pending connect is abandoned. Idempotent. ``closed`` is done when this returns.
        """
        self._detach_streams()
        self._connection.close()

    def _detach_streams(self) -> None:
        """Drop both streams' hold on the connection: later calls on them raise."""
        self.readable._detach_buffer()
        self.writable._detach_stream()

    def start_tls(
        self,
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
        if connection.inherited:
            raise SocketClosedError(f"{self!r} was inherited from the parent process")
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
        unread = self.readable._unread()
        if unread is None:
            raise StartTlsError("start_tls(): another thread is reading this socket")
        was_open = connection.state is State.OPEN
        try:
            new = start_tls(connection, unread, context, hostname, alpn)
        except StartTlsError:
            if was_open and connection.state in TERMINAL:
                # Refused for injected plaintext, and closed: as after close(),
                # nothing may be read, the injected bytes least of all.
                self.close()
            raise
        self._upgraded = True
        self._detach_streams()  # The connection is the new socket's now.
        return Socket(new)

    def getsockopt(
        self, level: int, option: int, buflen: Optional[int] = None
    ) -> Union[int, bytes]:
        """Read a socket option of the open connection (``socket.getsockopt``).

        Waits for the connection to open, as a read does.

        Raises:
            The opening's error; `SocketClosedError` once the socket is closed;
            `OSError` from the system call.
        """
        connection = self._connection
        if connection.inherited:
            raise SocketClosedError(f"{self!r} was inherited from the parent process")
        if connection.state is State.CONNECTING:
            self.opened.exception(connection.options.connect_timeout)
        sock = connection.sock
        if connection.state is not State.OPEN or sock is None:
            error = self.opened.exception(0)
            if error is not None:  # The opening's error, raised afresh as reads do.
                raise afresh(error)
            raise SocketClosedError(f"{self!r} is not open")
        if buflen is None:
            return sock.getsockopt(level, option)
        return sock.getsockopt(level, option, buflen)

    def stream(self, chunk_size: int = DEFAULT_STREAM_CHUNK) -> SocketStream:
        """Return an iterator over the bytes the peer sends, in chunks, that owns this socket.

        The Workers ``new Response(socket.readable)`` of a web view: hand it to
        Flask's ``Response(...)`` or Django's ``StreamingHttpResponse(...)``.
        Each item is what has arrived, up to `chunk_size` bytes (one
        ``readable.read1()``), so the response streams as the peer sends, in
        binary-safe chunks, however long its lines are. The socket is closed
        when the peer's data ends, when a read fails, and when the framework
        calls ``close()`` on the iterator at the end of the response (a client
        that went away included). A read error in the middle is logged at
        WARNING on the ``pysock`` logger, naming this socket's address, before
        it reaches the server: servers take a `ConnectionError` for a client
        that went away and may drop it unlogged.

        Waits for the connection to open (within the connect timeout), so that
        an opening error is raised here, in the view, where the framework
        answers 500 and logs it, and not later inside the server's iteration.

        Iterating ``readable`` itself yields lines (the io convention).

        Raises:
            TypeError: `chunk_size` is not an int (the socket is left as it was).
            ValueError: `chunk_size` is below 1 (the socket is left as it was).
            ConnectError, TLSError, SocketTimeout: the opening failed (or its
                deadline passed); the socket is closed.
            SocketClosedError: the socket was closed while connecting.
        """
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool):
            raise TypeError(f"chunk_size must be an int, not {type(chunk_size).__name__}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
        return SocketStream(self, chunk_size)

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
        return (
            f"<pysock.Socket {connection.endpoint} {self.secure_transport} "
            f"{connection.shown_state()}>"
        )
