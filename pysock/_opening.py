"""The opening's shared, stateless half: DNS lookups, the connect call, interleave, tune.

Each connection's opening state lives in its `pysock._dialer.Dialer`; this
module holds what is shared between connections or has no state: the DNS
workers and the lookups in progress (`resolve`: concurrent connects to one
name share one ``getaddrinfo()``), a proxy's plan (`_plan_proxy`: which
destination to ask the proxy for, checked by ``address_filter`` when pysock
resolves it), the address order of RFC 8305 (`interleave`), the non-blocking
``connect()`` (`_start_connect`) and the TCP options of a connected socket
(`tune`). The DNS workers hold each dialer weakly (`_waiting`), and a
worker holds no strong reference across a lookup: a forgotten socket is
collected while its lookup runs.

Through a proxy, ``address_filter`` checks the destination, not the proxy:
with ``socks5://`` pysock resolves the name itself and checks each address;
with ``socks5h://`` and ``http://`` the proxy resolves names, so only an IP
literal can be checked and a name is refused.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (see _stream_addresses)
import errno
import os
import socket
import threading
import weakref
from typing import TYPE_CHECKING, Final, Optional, Union

from . import _loop
from ._proxy import ProxyConfig
from ._workers import Workers
from .errors import ConnectError

if TYPE_CHECKING:
    from ._dialer import Dialer
    from ._options import Options

__all__ = [
    "Sockaddr",
    "dns_workers",
    "interleave",
    "reset_dns_after_fork",
    "resolve",
    "tune",
    "with_target",
]

# A DNS thread idle this long exits. A lookup that outlives its connect deadline
# is abandoned (its result dropped) but holds its thread until getaddrinfo()
# returns; the threads never bound how many lookups run at once (pysock._workers).
_DNS_IDLE_SECONDS: Final = 10.0
_NOT_TCP: Final = (errno.EOPNOTSUPP, errno.ENOPROTOOPT)  # A Unix socket has no TCP options.

Sockaddr = Union[str, tuple[str, int], tuple[str, int, int, int]]
Addresses = list[tuple[int, Sockaddr]]  # (family, sockaddr) pairs, in the order to try.

# The resolver, looked up at each use: tests give a name both loopback
# addresses through it, since no hosts file here lists one for both families.
getaddrinfo = socket.getaddrinfo

_dns_workers: Optional[Workers] = None
_dns_lock = threading.Lock()
# The lookups in progress, by (host, port): the dialers waiting for each.
# A burst of connects to one name (a pool filling up while DNS is slow) shares
# one getaddrinfo() call and one thread.
_waiting: dict[tuple[str, int], list[weakref.ref[Dialer]]] = {}


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


def with_target(exc: OSError, target: str) -> OSError:
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


def resolve(ref: weakref.ref[Dialer], host: str, port: int) -> None:
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
        dialer = ref()
        if dialer is None:
            continue  # Garbage collected while it waited.
        try:
            if error is not None:
                dialer.on_resolve_failed(error, host)
            else:
                dialer.on_resolved(list(addresses))
        except Exception as exc:  # A pysock bug: the other sockets still get their answer.
            _loop.report_bug(exc, dialer.connection(), "a pysock-dns thread")
        del dialer


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


def _lookup(ref: weakref.ref[Dialer], host: str, port: int) -> Optional[Addresses]:
    """`_stream_addresses`, or None (the opening failed) on an error."""
    try:
        return _stream_addresses(host, port)
    except OSError as exc:
        dialer = ref()
        if dialer is not None:
            dialer.on_resolve_failed(exc, host)
        return None


def _plan_proxy(ref: weakref.ref[Dialer], proxy: ProxyConfig) -> None:
    """DNS worker: settle the destination to ask the proxy for, then resolve the proxy.

    ``socks5://`` resolves the destination here and sends the first address
    ``address_filter`` allows; the other schemes send the name as given.
    """
    dialer = ref()
    if dialer is None:
        return
    endpoint = dialer.endpoint
    address_filter = dialer.options.address_filter
    del dialer  # Hold no strong reference across the lookups.
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
    dialer = ref()
    if dialer is not None and addresses is not None:
        dialer.via = via
        dialer.on_resolved(addresses)


def _first_allowed(ref: weakref.ref[Dialer], candidates: Addresses) -> Optional[str]:
    """The first candidate ``address_filter`` allows (the filter runs now, in this worker)."""
    dialer = ref()
    if dialer is None:
        return None
    for _, sockaddr in candidates:
        if dialer.options.address_filter is None:
            return str(sockaddr[0])
        admitted = dialer.admits(sockaddr)
        if admitted is None:
            return None
        if admitted:
            return str(sockaddr[0]).split("%", 1)[0]
    dialer.fail_with_attempt_errors()
    return None


def _refuse_unchecked(ref: weakref.ref[Dialer], proxy: ProxyConfig) -> None:
    dialer = ref()
    if dialer is None:
        return
    message = (
        f"cannot connect to {dialer.endpoint}: address_filter cannot check "
        f"{dialer.endpoint.host!r}, since the proxy ({proxy.scheme}://) resolves names; "
        "use a socks5:// proxy (pysock resolves and checks) or an IP literal"
    )
    refusal = OSError(errno.EACCES, "address_filter cannot check a name the proxy resolves")
    dialer.fail(ConnectError(message, errno.EACCES), refusal)


def reset_dns_after_fork() -> None:
    """In a forked child: the parent's DNS threads and their lookups do not exist here."""
    global _dns_workers, _dns_lock
    _dns_workers = None
    _dns_lock = threading.Lock()
    _waiting.clear()
