"""`SocketOptions`: the keys `connect()` accepts, their defaults and their validation.

Everything is checked at the call, before any I/O, so a typo never turns into
a half-open connection. Unknown keys are a `TypeError` naming the key, and a
camelCase key from the Workers API is answered with its snake_case name.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Callable, Final, Mapping, Optional, Sequence, Union

from typing_extensions import Literal, TypedDict

from ._address import check_name, parse_local_address
from ._proxy import ProxyConfig, parse_proxy

__all__ = ["Options", "SecureTransport", "SocketOptions", "merge_options"]

SecureTransport = Literal["off", "on", "starttls"]
_SECURE_TRANSPORTS: tuple[str, ...] = ("off", "on", "starttls")


class SocketOptions(TypedDict, total=False):
    """Options of `connect()`; every key is optional (docs/api.md has the table).

    The Workers options: ``secure_transport`` ("off", "on", "starttls") and
    ``allow_half_open``. Python's own: ``timeout`` (each blocking read or
    write), ``connect_timeout`` (one deadline for DNS, every attempt, a
    proxy's handshake and TLS), ``tls_context``, ``expected_server_hostname``,
    ``alpn_protocols``, ``ignore_unexpected_eof`` (take a TLS stream that
    ends without close_notify as a clean end: off by default, since a
    truncation attack looks the same; docs/tls.md).

    Beyond Workers (docs/beyond.md):

    - ``happy_eyeballs_delay``: seconds before the next address is tried while
      one attempt is in progress (RFC 8305; default 0.25); None: one at a time.
    - ``address_filter``: ``callable(ip, port) -> bool`` called for each
      address just before its connect; False refuses it (`pysock.deny_private`).
    - ``proxy``: ``"socks5h://[user:pass@]host:port"``, ``"socks5://..."``
      (pysock resolves the name) or ``"http://..."`` (HTTP CONNECT).
    - ``sock``: adopt this connected `socket.socket` instead of connecting.
    - ``no_delay``: TCP_NODELAY (default True).
    - ``keep_alive``: False (default), True (the OS's timing) or
      ``(idle, interval, count)``.
    - ``local_address``: bind to ``"ip"``, ``"ip:port"`` or ``(ip, port)`` first.
    """

    secure_transport: SecureTransport
    allow_half_open: bool
    timeout: Optional[float]
    connect_timeout: Optional[float]
    tls_context: Optional[ssl.SSLContext]
    expected_server_hostname: Optional[str]
    alpn_protocols: Optional[Sequence[str]]
    ignore_unexpected_eof: bool
    # Beyond Workers (docs/beyond.md):
    happy_eyeballs_delay: Optional[float]
    address_filter: Optional[Callable[[str, int], bool]]
    proxy: Optional[str]
    sock: Optional[socket.socket]
    no_delay: bool
    keep_alive: Union[bool, tuple[float, float, int]]
    local_address: Union[str, tuple[str, int], None]


# RFC 8305 section 5: the recommended Connection Attempt Delay.
DEFAULT_HAPPY_EYEBALLS_DELAY: Final = 0.25

_KEYS = frozenset(SocketOptions.__annotations__)


@dataclass(frozen=True)
class Options:
    """Validated options with defaults filled in. `connect_timeout` is resolved."""

    secure_transport: SecureTransport = "off"
    allow_half_open: bool = False
    timeout: Optional[float] = None
    connect_timeout: Optional[float] = None
    tls_context: Optional[ssl.SSLContext] = None
    expected_server_hostname: Optional[str] = None
    alpn_protocols: Optional[tuple[str, ...]] = None
    ignore_unexpected_eof: bool = False
    happy_eyeballs_delay: Optional[float] = DEFAULT_HAPPY_EYEBALLS_DELAY
    address_filter: Optional[Callable[[str, int], bool]] = None
    proxy: Optional[ProxyConfig] = None
    sock: Optional[socket.socket] = None
    no_delay: bool = True
    keep_alive: Optional[tuple[Optional[float], Optional[float], Optional[int]]] = None
    # (family, sockaddr) to bind() before connecting.
    local_address: Optional[tuple[int, tuple[str, int]]] = None


DEFAULT_OPTIONS: Final = Options()


def merge_options(options: Optional[Mapping[str, Any]], kwargs: Mapping[str, Any]) -> Options:
    """Combine the positional options mapping and keyword options, then validate.

    Raises:
        TypeError: a wrong type, an unknown key, or a key given both ways.
        ValueError: a bad value (negative timeout, unknown secure_transport...).
    """
    if options is None and not kwargs:
        return DEFAULT_OPTIONS  # The common case, and the cheapest: nothing to check.
    if options is None:
        merged: dict[str, Any] = {}
    elif isinstance(options, Mapping):
        merged = dict(options)
    else:
        raise TypeError(f"options must be a SocketOptions dict, not {type(options).__name__}")
    for key, value in kwargs.items():
        if key in merged:
            raise TypeError(f"option {key!r} given both in options and as a keyword argument")
        merged[key] = value
    for key in merged:
        _check_key(key)
    return _validate(merged)


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"option names must be str, not {type(key).__name__}")
    if key in _KEYS:
        return
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
    if snake in _KEYS:
        raise TypeError(f"unknown option {key!r}: pysock spells it {snake!r}")
    hint = _HINTS.get(snake)
    if hint is not None:
        raise TypeError(f"unknown option {key!r}: {hint}")
    raise TypeError(f"unknown option {key!r}")


# Options of other libraries (ssl, asyncio, httpx, requests...) a user may
# reach for, and what pysock calls them.
_TLS_ON: Final = "for TLS write secure_transport='on' (or 'starttls' to upgrade later)"
_HINTS: Final = {
    "tls": _TLS_ON,
    "ssl": _TLS_ON,
    "use_tls": _TLS_ON,
    "use_ssl": _TLS_ON,
    "secure": _TLS_ON,
    "https": _TLS_ON,
    "starttls": "write secure_transport='starttls', then call start_tls()",
    "ssl_context": "pysock calls it tls_context",
    "context": "pysock calls it tls_context",
    "server_hostname": "pysock calls it expected_server_hostname",
    "sni": "pysock calls it expected_server_hostname",
    "alpn": "pysock calls it alpn_protocols",
    "read_timeout": "pysock calls it timeout (each blocking read or write)",
    "write_timeout": "pysock calls it timeout (each blocking read or write)",
    "half_open": "pysock calls it allow_half_open",
    "host": "the host goes in the address: connect('host:port') or connect((host, port))",
    "hostname": "the host goes in the address: connect('host:port') or connect((host, port))",
    "port": "the port goes in the address: connect('host:port') or connect((host, port))",
}


def _validate(raw: dict[str, Any]) -> Options:
    transport = raw.get("secure_transport", "off")
    if not isinstance(transport, str):
        raise TypeError(f"secure_transport must be a str, not {type(transport).__name__}")
    if transport not in _SECURE_TRANSPORTS:
        raise ValueError(
            f"secure_transport must be one of 'off', 'on', 'starttls', not {transport!r}"
        )
    half_open = raw.get("allow_half_open", False)
    if not isinstance(half_open, bool):
        raise TypeError(f"allow_half_open must be a bool, not {type(half_open).__name__}")
    ragged = raw.get("ignore_unexpected_eof", False)
    if not isinstance(ragged, bool):
        raise TypeError(f"ignore_unexpected_eof must be a bool, not {type(ragged).__name__}")
    if ragged and transport == "off":
        raise ValueError(
            "ignore_unexpected_eof is about TLS endings: it needs secure_transport='on' "
            "or 'starttls'"
        )
    timeout = check_timeout("timeout", raw.get("timeout"))
    connect_timeout = check_timeout("connect_timeout", raw.get("connect_timeout", timeout))
    context, hostname, alpn = check_tls_options(
        raw.get("tls_context"), raw.get("expected_server_hostname"), raw.get("alpn_protocols")
    )
    delay = raw.get("happy_eyeballs_delay", DEFAULT_HAPPY_EYEBALLS_DELAY)
    address_filter = raw.get("address_filter")
    if address_filter is not None and not callable(address_filter):
        raise TypeError(
            "address_filter must be a callable(ip, port) -> bool such as pysock.deny_private, "
            f"not {type(address_filter).__name__}"
        )
    proxy = raw.get("proxy")
    sock = raw.get("sock")
    if sock is not None:
        check_adoptable(sock)
        if proxy is not None:
            raise ValueError("sock= is already connected: it cannot also go through a proxy")
        if raw.get("local_address") is not None:
            raise ValueError("sock= is already connected: local_address cannot apply to it")
    no_delay = raw.get("no_delay", True)
    if not isinstance(no_delay, bool):
        raise TypeError(f"no_delay must be a bool, not {type(no_delay).__name__}")
    local = raw.get("local_address")
    return Options(
        secure_transport=transport,  # type: ignore[arg-type]
        allow_half_open=half_open,
        timeout=timeout,
        connect_timeout=connect_timeout,
        tls_context=context,
        expected_server_hostname=hostname,
        alpn_protocols=alpn,
        ignore_unexpected_eof=ragged,
        happy_eyeballs_delay=check_timeout("happy_eyeballs_delay", delay),
        address_filter=address_filter,
        proxy=None if proxy is None else parse_proxy(proxy),
        sock=sock,
        no_delay=no_delay,
        keep_alive=_check_keep_alive(raw.get("keep_alive", False)),
        local_address=None if local is None else parse_local_address(local),
    )


def _check_keep_alive(
    value: Any,
) -> Optional[tuple[Optional[float], Optional[float], Optional[int]]]:
    """``False`` -> None; ``True`` -> the OS's timing; ``(idle, interval, count)`` -> those."""
    if isinstance(value, bool):
        return (None, None, None) if value else None
    if not isinstance(value, tuple) or len(value) != 3:
        raise TypeError(
            "keep_alive must be a bool or an (idle seconds, interval seconds, count) tuple, "
            f"not {type(value).__name__}"
        )
    idle, interval, count = value
    for name, number in (("idle", idle), ("interval", interval)):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(f"keep_alive {name} must be a number of seconds")
        if not 1 <= number <= 32767:  # Linux: TCP_KEEPIDLE/TCP_KEEPINTVL are 1..32767 s.
            raise ValueError(f"keep_alive {name} must be 1..32767 seconds, not {number!r}")
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError("keep_alive count must be an int")
    if not 1 <= count <= 127:  # Linux: TCP_KEEPCNT is 1..127.
        raise ValueError(f"keep_alive count must be 1..127, not {count!r}")
    return (float(idle), float(interval), count)


def check_adoptable(sock: Any) -> None:
    """Check the ``sock`` option: a connected stream socket pysock can take over.

    Raises:
        TypeError: not a `socket.socket`, or an `ssl.SSLSocket` (pysock does TLS itself).
        ValueError: closed, not a stream socket, an unsupported family, or not connected.
    """
    if isinstance(sock, ssl.SSLSocket):
        raise TypeError(
            "sock must be a plain socket.socket, not an ssl.SSLSocket: pass the TCP socket "
            "and secure_transport='on' (or 'starttls'); pysock does TLS itself"
        )
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    if sock.fileno() < 0:
        raise ValueError("sock is closed")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"sock must be a SOCK_STREAM socket, not {sock.type!r}")
    if sock.family not in _ADOPTABLE_FAMILIES:
        raise ValueError(
            f"sock must be an AF_INET, AF_INET6 or AF_UNIX socket, not {sock.family!r}"
        )
    try:
        sock.getpeername()
    except OSError as exc:
        raise ValueError(f"sock is not connected: {exc.strerror or exc}") from None


_ADOPTABLE_FAMILIES: Final = frozenset(
    family
    for family in (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", None))
    if family is not None
)


def check_timeout(name: str, value: Any) -> Optional[float]:
    """Return `value` as a float, or None for "no timeout"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if value != value or value < 0:  # NaN compares unequal to itself.
        raise ValueError(f"{name} must be >= 0, not {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # An int beyond any float: as long as forever.
        return None
    if seconds == float("inf"):
        return None  # Waiting forever is what None means.
    return seconds


def check_tls_options(
    context: Any, hostname: Any, alpn: Any
) -> tuple[Optional[ssl.SSLContext], Optional[str], Optional[tuple[str, ...]]]:
    """Validate the TLS keys shared by `connect()` and `Socket.start_tls()`."""
    if context is not None and not isinstance(context, ssl.SSLContext):
        raise TypeError(f"tls_context must be an ssl.SSLContext, not {type(context).__name__}")
    if context is not None and context.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise ValueError(
            "tls_context is a server context (PROTOCOL_TLS_SERVER); a client needs "
            "ssl.create_default_context() or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)"
        )
    if hostname is not None:
        check_name(hostname, "expected_server_hostname")
    if alpn is None:
        return context, hostname, None
    if isinstance(alpn, (str, bytes)) or not isinstance(alpn, Sequence):
        raise TypeError("alpn_protocols must be a sequence of str, such as ['h2', 'http/1.1']")
    protocols = tuple(alpn)
    for protocol in protocols:
        if not isinstance(protocol, str):
            raise TypeError(f"alpn_protocols items must be str, not {type(protocol).__name__}")
        if not 0 < len(protocol.encode()) <= 255:  # RFC 7301 section 3.1
            raise ValueError(f"ALPN protocol name {protocol!r} must be 1..255 bytes")
        if not protocol.isascii():  # The ssl module sends ALPN names as ASCII.
            raise ValueError(f"ALPN protocol name {protocol!r} must be ASCII")
    if context is not None:
        raise ValueError(
            "alpn_protocols cannot be combined with tls_context: pysock never modifies a "
            "context it was given; call tls_context.set_alpn_protocols() instead"
        )
    return context, hostname, protocols
