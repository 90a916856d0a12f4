"""pysock as an httpcore network backend: `Backend`, for `httpcore.ConnectionPool`.

Theory of operation
-------------------
httpcore (the engine under httpx) asks a *network backend* for connections:
``connect_tcp(host, port, timeout, local_address, socket_options)`` and
``connect_unix_socket(path, timeout, socket_options)`` return a
*network stream*, which httpcore reads and writes with a timeout per call and
upgrades with ``start_tls(ssl_context, server_hostname, timeout)`` for
``https://``. `Backend` answers each of these with a pysock `Socket`:

- ``connect_tcp`` opens ``connect((host, port), secure_transport="starttls")``
  with the backend's options (``address_filter``, ``proxy``, Happy Eyeballs...)
  and waits for ``opened``. httpcore gives the *name* from the URL, so pysock
  resolves it once and ``address_filter`` judges each resolved address right
  before its ``connect()``: the guard sees every connection the pool opens,
  redirects and retries included, and DNS rebinding finds no second lookup to
  poison. ``"starttls"`` because httpcore decides about TLS after the connect
  (``https://``, or a CONNECT tunnel through an HTTP proxy first).
- ``start_tls`` is pysock's ``Socket.start_tls(tls_context=ssl_context,
  expected_server_hostname=server_hostname)``: the context is httpcore's (made
  from httpx's ``verify=`` and ``cert=``, with the ALPN list httpcore set on it),
  so verification and client certificates are what httpx configured.
- ``read(max_bytes, timeout)`` and ``write(buffer, timeout)`` set
  ``Socket.timeout`` to the call's timeout, then call ``readable.read1()`` or
  ``writable.write()``. ``read`` returns ``b""`` at EOF, as httpcore expects.
- ``get_extra_info("is_readable")``, which httpcore asks before it reuses an
  idle pooled connection ("is the server hanging up?"), is
  ``Socket.closed.done()``: pysock's selector thread completes ``closed`` when
  an idle peer sends FIN or RST, so the answer costs no system call, and a
  connection the server closed while idle is dropped instead of reused.

Errors are translated at this one boundary (`_translated`): a pysock error
becomes the httpcore error of the phase it happened in (connect, read,
write), with the same message and the pysock error as ``__cause__``.

httpcore's per-call timeouts share one ``Socket.timeout``, as its own
stdlib backend shares one ``socket.settimeout()``: over HTTP/2, where one
thread may read while another writes, a read started right after another
thread set a different write timeout waits by that timeout.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Final, Optional, Union

import httpcore
from typing_extensions import TypedDict, Unpack

from ._info import SocketInfo, TLSInfo
from ._options import merge_options
from ._socket import Socket, connect
from .errors import PysockError, SocketTimeout

__all__ = ["Backend", "BackendOptions", "ConnectionOptions", "Stream", "TLSObject"]

# The extra key that hands out the pysock `Socket` itself (httpcore's "socket" is a
# stdlib socket.socket, which pysock does not lend out).
PYSOCK_SOCKET: Final = "pysock_socket"

# Options httpcore (or the backend) decides per connection, with what to use instead.
_DECIDED_PER_CALL: Final[Mapping[str, str]] = {
    "timeout": "httpcore gives each read and write its timeout: use httpx.Timeout(...)",
    "connect_timeout": "httpcore gives each connect its timeout: use httpx.Timeout(connect=...)",
    "secure_transport": "httpcore asks for TLS itself (start_tls) for https:// URLs",
    "tls_context": "TLS uses httpcore's context: verify=/cert= of pysock.httpx.Transport, "
    "or ssl_context= of httpcore.ConnectionPool",
    "expected_server_hostname": "httpcore sends the URL's host; set the request extension "
    "sni_hostname to send another",
    "alpn_protocols": "httpcore sets ALPN on its context (http2=True offers h2)",
    "allow_half_open": "a pool must see the server's EOF end the connection, so that "
    "it never reuses one the server closed",
    "sock": "a pool opens many connections; one adopted socket cannot serve it",
}


class ConnectionOptions(TypedDict, total=False):
    """The pysock `connect()` options that apply to every connection of a pool."""

    happy_eyeballs_delay: Optional[float]
    address_filter: Optional[Callable[[str, int], bool]]
    no_delay: bool
    keep_alive: Union[bool, tuple[float, float, int]]
    local_address: Union[str, tuple[str, int], None]
    ignore_unexpected_eof: bool


class BackendOptions(ConnectionOptions, total=False):
    """`ConnectionOptions`, and pysock's ``proxy`` URL."""

    proxy: Optional[str]


class Backend(httpcore.NetworkBackend):
    """An ``httpcore.NetworkBackend`` whose connections are pysock sockets.

    Example::

        pool = httpcore.ConnectionPool(network_backend=Backend(address_filter=deny_private))

    Args:
        connect_options: pysock `connect()` options for every connection:
            ``address_filter``, ``proxy``, ``happy_eyeballs_delay``,
            ``no_delay``, ``keep_alive``, ``local_address``.

    Raises:
        TypeError, ValueError: an option pysock refuses, or one httpcore
            decides per call (``timeout``, ``tls_context``...; the message
            says what to use instead).
    """

    def __init__(self, **connect_options: Unpack[BackendOptions]) -> None:
        for key in connect_options:
            if key in _DECIDED_PER_CALL:
                raise TypeError(f"{key!r} is not a Backend option: {_DECIDED_PER_CALL[key]}")
        # Every error now, none per request; checked as connect_tcp() will connect.
        merge_options(None, {**connect_options, "secure_transport": "starttls"})
        self._options: dict[str, Any] = dict(connect_options)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: Optional[Iterable[Any]] = None,
    ) -> Stream:
        """Open a TCP connection (plaintext until `Stream.start_tls`).

        Raises:
            httpcore.ConnectError: pysock could not connect (``__cause__`` is the
                pysock error: `pysock.ConnectError` with ``errno.EACCES`` when
                ``address_filter`` refused every address; httpcore's pool
                re-raises ``from None``, which leaves it as the ``__context__``).
            httpcore.ConnectTimeout: the connect timeout passed.
        """
        _refuse_socket_options(socket_options)
        options = dict(self._options)
        if local_address is not None:
            options["local_address"] = local_address
        try:
            return self._open((host, port), timeout, options)
        except ValueError as exc:  # A host pysock refuses to look up, as a failed lookup.
            raise httpcore.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc

    def connect_unix_socket(
        self,
        path: str,
        timeout: Optional[float] = None,
        socket_options: Optional[Iterable[Any]] = None,
    ) -> Stream:
        """Open a Unix domain socket connection; as `connect_tcp`.

        Raises:
            ValueError: the backend has an ``address_filter`` (a Unix socket has
                no IP address to judge) or a ``proxy``.
        """
        _refuse_socket_options(socket_options)
        return self._open({"path": path}, timeout, dict(self._options))

    def sleep(self, seconds: float) -> None:
        """Wait between connect retries (httpcore's ``retries=``)."""
        time.sleep(seconds)

    def _open(self, address: Any, timeout: Optional[float], options: dict[str, Any]) -> Stream:
        sock = connect(address, secure_transport="starttls", connect_timeout=timeout, **options)
        return Stream(sock, _wait_opened(sock))


class Stream(httpcore.NetworkStream):
    """An ``httpcore.NetworkStream`` over one pysock `Socket`."""

    def __init__(self, sock: Socket, info: SocketInfo) -> None:
        self._sock = sock
        self._info = info
        self._timeout: Optional[float] = sock.timeout

    @property
    def socket(self) -> Socket:
        """The pysock `Socket` (also ``get_extra_info("pysock_socket")``)."""
        return self._sock

    def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        """Read up to `max_bytes` as they arrive; ``b""`` at EOF.

        Raises:
            httpcore.ReadTimeout: nothing arrived in time (no byte is lost).
            httpcore.ReadError: the connection broke or was closed.
        """
        self._set_timeout(timeout)
        try:
            return self._sock.readable.read1(max_bytes)
        except PysockError as exc:
            raise _translated(exc, httpcore.ReadTimeout, httpcore.ReadError) from exc

    def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        """Send all of `buffer`.

        Raises:
            httpcore.WriteTimeout: the peer did not take it in time (the
                connection is then broken: an unknown part was sent).
            httpcore.WriteError: the connection broke or was closed.
        """
        if not buffer:
            return
        self._set_timeout(timeout)
        try:
            self._sock.writable.write(buffer)
        except PysockError as exc:
            raise _translated(exc, httpcore.WriteTimeout, httpcore.WriteError) from exc

    def close(self) -> None:
        """Close the connection now (TLS: close_notify, best effort)."""
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Stream:
        """Run TLS over this connection with httpcore's context; return the TLS stream.

        Raises:
            httpcore.ConnectError: the handshake or verification failed, or TLS
                inside TLS was asked for (an ``https://`` proxy); the connection
                is closed.
            httpcore.ConnectTimeout: the handshake did not finish within the
                connect timeout.
        """
        try:
            sock = self._sock.start_tls(
                expected_server_hostname=server_hostname, tls_context=ssl_context
            )
        except PysockError as exc:
            self._sock.close()
            message = str(exc)
            if self._sock.secure_transport == "on":
                message = f"pysock cannot run TLS inside TLS (an https:// proxy): {exc}"
            raise httpcore.ConnectError(message) from exc
        return Stream(sock, _wait_opened(sock))

    def get_extra_info(self, info: str) -> Any:
        """httpcore's extras: ``ssl_object``, ``client_addr``, ``server_addr``,
        ``is_readable``; ``socket`` is None, ``pysock_socket`` the pysock `Socket`."""
        if info == "is_readable":
            return self._sock.closed.done()  # No system call: see the module docstring.
        if info == "ssl_object":
            tls = self._sock.tls
            return None if tls is None else TLSObject(tls)
        if info == "server_addr":
            return _sockaddr(self._info.remote_address)
        if info == "client_addr":
            return _sockaddr(self._info.local_address)
        if info == PYSOCK_SOCKET:
            return self._sock
        return None

    def _set_timeout(self, timeout: Optional[float]) -> None:
        if timeout != self._timeout:
            self._sock.timeout = timeout
            self._timeout = timeout

    def __repr__(self) -> str:
        return f"<pysock.httpcore.Stream {self._sock!r}>"


class TLSObject:
    """What ``get_extra_info("ssl_object")`` returns: the read-only part of an
    ``ssl.SSLObject`` that pysock's `TLSInfo` can answer.

    pysock keeps its SSLObject to itself: it runs TLS under a per-connection
    lock (OpenSSL forbids concurrent calls on one SSL object), and a caller
    holding the object could call it from another thread.
    """

    __slots__ = ("tls",)

    def __init__(self, tls: TLSInfo) -> None:
        self.tls = tls

    def selected_alpn_protocol(self) -> Optional[str]:
        """The protocol ALPN chose (``"h2"`` selects HTTP/2 in httpcore), or None."""
        return self.tls.alpn

    def version(self) -> str:
        """The TLS version, such as ``"TLSv1.3"``."""
        return self.tls.version

    def getpeercert(self, binary_form: bool = False) -> Union[dict[str, Any], bytes]:
        """The server's certificate: the parsed dict, or DER bytes with `binary_form`."""
        if binary_form:
            return self.tls.peer_certificate_der
        return self.tls.peer_certificate

    def __repr__(self) -> str:
        return f"<pysock.httpcore.TLSObject {self.tls.version} alpn={self.tls.alpn!r}>"


def _refuse_socket_options(socket_options: Optional[Iterable[Any]]) -> None:
    if socket_options:
        raise ValueError(
            "pysock.httpcore.Backend applies no raw socket_options; use the pysock "
            "options no_delay, keep_alive and local_address"
        )


def _wait_opened(sock: Socket) -> SocketInfo:
    """Wait for `sock` to open (pysock's connect deadline bounds the wait); close it on failure."""
    try:
        return sock.opened.result()
    except PysockError as exc:
        sock.close()
        raise _translated(exc, httpcore.ConnectTimeout, httpcore.ConnectError) from exc
    except BaseException:  # Ctrl-C: abandon the attempt, as close() does.
        sock.close()
        raise


def _translated(
    exc: PysockError, on_timeout: type[httpcore.TimeoutException], otherwise: type[Exception]
) -> Exception:
    """The httpcore error for a pysock error, with its message (the caller chains it)."""
    kind = on_timeout if isinstance(exc, SocketTimeout) else otherwise
    return kind(str(exc))


def _sockaddr(address: str) -> Union[tuple[str, int], str]:
    """``"ip:port"`` or ``"[v6]:port"`` as ``(ip, port)``, like ``getpeername()``;
    a Unix socket's path as it is."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or address.startswith(("/", "@")):
        return address
    return host.strip("[]"), int(port)
