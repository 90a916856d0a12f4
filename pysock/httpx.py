"""pysock under httpx: `Transport`, an ``httpx.BaseTransport`` whose connections are pysock's.

Usage::

    client = httpx.Client(transport=pysock.httpx.Transport(address_filter=pysock.deny_private))

`Transport` is ``httpx.HTTPTransport`` with one change: its
``httpcore.ConnectionPool`` opens connections through `pysock.httpcore.Backend`,
so pysock's ``address_filter`` judges every address the client connects to
(redirects and retries included), Happy Eyeballs races IPv6 and IPv4, pysock's
``proxy`` tunnels every connection, and a pooled connection the server closed
while idle is never reused. httpx's own options keep their meaning: ``verify``,
``cert``, ``trust_env`` (for ``SSL_CERT_FILE``/``SSL_CERT_DIR``), ``http1``,
``http2``, ``limits``, ``proxy``, ``uds``, ``local_address`` and ``retries``.

The request and response conversions and the error translation are the ones of
``httpx.HTTPTransport``, written against the public httpx and httpcore API;
errors keep the pysock error as ``__cause__`` (httpcore's is their
``__context__``).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import Final, Optional, Union
from urllib.parse import quote

import httpcore
import httpx
from typing_extensions import Unpack

from .errors import PysockError
from .httpcore import Backend, ConnectionOptions

__all__ = ["DEFAULT_LIMITS", "Transport"]

# httpx.HTTPTransport's defaults: 100 connections, 20 kept alive, each for 5 s.
DEFAULT_LIMITS: Final = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0
)

CertTypes = Union[str, tuple[str, str], tuple[str, str, str]]
ProxyTypes = Union[str, httpx.URL, httpx.Proxy]

# The proxy schemes pysock speaks, with the port a URL without one means.
_PROXY_PORTS: Final = {"http": 80, "socks5": 1080, "socks5h": 1080}

# httpcore's errors and httpx's, most specific first (the order of isinstance tests).
_ERRORS: Final[tuple[tuple[type[Exception], type[httpx.HTTPError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


class Transport(httpx.BaseTransport):
    """An httpx transport that connects with pysock; ``httpx.HTTPTransport``'s options.

    Args:
        verify, cert, trust_env: the TLS context, as ``httpx.HTTPTransport``
            makes it (``httpx.create_ssl_context``).
        http1, http2, limits, retries: as for ``httpx.HTTPTransport``;
            ``http2=True`` offers h2 by ALPN (needs ``h2``: ``pip install
            pysock[httpx]``).
        proxy: a proxy for every connection, tunnelled by pysock: an
            ``http://`` (CONNECT), ``socks5://`` or ``socks5h://`` URL, as a
            str, ``httpx.URL`` or ``httpx.Proxy`` (credentials included).
        uds: connect to this Unix domain socket instead of the URL's host.
        connect_options: pysock `connect()` options for every connection:
            ``address_filter``, ``happy_eyeballs_delay``, ``no_delay``,
            ``keep_alive``, ``local_address``.

    Raises:
        TypeError, ValueError: an option pysock refuses or cannot honour (an
            ``https://`` proxy, proxy headers, ``address_filter`` with
            ``uds``); nothing was opened.
    """

    def __init__(
        self,
        *,
        verify: Union[ssl.SSLContext, str, bool] = True,
        cert: Optional[CertTypes] = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        proxy: Optional[ProxyTypes] = None,
        uds: Optional[str] = None,
        retries: int = 0,
        **connect_options: Unpack[ConnectionOptions],
    ) -> None:
        if uds is not None:
            _check_unix(connect_options, proxy)
        if proxy is None:
            backend = Backend(**connect_options)
        else:
            backend = Backend(**connect_options, proxy=proxy_url(proxy))
        ssl_context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=http2,
            uds=uds,
            retries=retries,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` over a pooled connection (opened by pysock when none is idle).

        Raises:
            httpx.ConnectError: pysock could not connect; ``__cause__`` is the
                pysock error (``errno.EACCES``: ``address_filter`` refused).
            httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout,
            httpx.PoolTimeout, httpx.ReadError, httpx.WriteError,
            httpx.RemoteProtocolError...: as ``httpx.HTTPTransport``.
        """
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _translated_errors():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()


class _ResponseStream(httpx.SyncByteStream):
    """httpcore's response body, with its errors translated as the request's are."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _translated_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """Raise httpcore's errors as httpx's, with the pysock error (if any) as the cause."""
    try:
        yield
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from _pysock_error(exc) or exc
        raise


def _pysock_error(exc: BaseException) -> Optional[PysockError]:
    """The pysock error behind an httpcore error: its cause, or its context once
    httpcore's pool re-raised it ``from None`` (which clears the cause only)."""
    for behind in (exc.__cause__, exc.__context__):
        if isinstance(behind, PysockError):
            return behind
    return None


def proxy_url(proxy: ProxyTypes) -> str:
    """httpx's forms of a proxy as pysock's ``proxy`` URL.

    Raises:
        TypeError: not a str, ``httpx.URL`` or ``httpx.Proxy``.
        ValueError: what pysock cannot do: an ``https://`` proxy, extra proxy
            headers, a proxy ``ssl_context``, a path in the URL.
    """
    if not isinstance(proxy, (str, httpx.URL, httpx.Proxy)):
        raise TypeError(f"proxy must be a URL str, httpx.URL or httpx.Proxy, not {proxy!r}")
    if not isinstance(proxy, httpx.Proxy):
        proxy = httpx.Proxy(url=proxy)  # Checks the scheme; credentials move to `auth`.
    url = proxy.url
    if url.scheme not in _PROXY_PORTS:
        raise ValueError(
            f"pysock cannot use the proxy {url.scheme}://{url.host}: it speaks to a proxy "
            "in plaintext (HTTP CONNECT, SOCKS5) and does not run TLS to the proxy itself; "
            "use an http://, socks5:// or socks5h:// proxy"
        )
    if proxy.headers or proxy.ssl_context is not None:
        raise ValueError("pysock sends no proxy headers and takes no proxy ssl_context")
    if url.raw_path not in (b"", b"/") or url.fragment:
        raise ValueError(f"a proxy URL has no path, query or fragment: {url.raw_path!r}")
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    userinfo = ""
    if proxy.auth is not None:
        username, password = proxy.auth
        userinfo = f"{quote(username, safe='')}:{quote(password, safe='')}@"
    return f"{url.scheme}://{userinfo}{host}:{url.port or _PROXY_PORTS[url.scheme]}"


def _check_unix(options: ConnectionOptions, proxy: Optional[ProxyTypes]) -> None:
    """Refuse what cannot apply to a Unix socket, before any request."""
    if options.get("address_filter") is not None:
        raise ValueError(
            "address_filter cannot check a Unix socket (uds=): it has no IP address to judge"
        )
    if proxy is not None or options.get("local_address") is not None:
        raise ValueError("uds= is a Unix socket: proxy and local_address do not apply")
