"""Frozen records describing an open connection."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Optional

from ._address import format_endpoint

__all__ = ["SocketInfo", "TLSInfo", "format_sockaddr"]


@dataclass(frozen=True)
class SocketInfo:
    """The result of ``Socket.opened``.

    Attributes:
        remote_address: the peer's real endpoint, ``"ip:port"`` or ``"[v6]:port"``.
        local_address: the local endpoint, in the same form.
        alpn: the negotiated ALPN protocol, or None.
    """

    remote_address: str
    local_address: str
    alpn: Optional[str] = None


@dataclass(frozen=True)
class TLSInfo:
    """What a completed TLS handshake established (``Socket.tls``).

    Attributes:
        version: the protocol version, such as ``"TLSv1.3"``.
        cipher: the cipher suite name.
        alpn: the negotiated ALPN protocol, or None.
        peer_certificate: the parsed certificate (``SSLObject.getpeercert()``).
        peer_certificate_der: the certificate in DER form.
    """

    version: str
    cipher: str
    alpn: Optional[str]
    peer_certificate: dict[str, Any] = field(repr=False)
    peer_certificate_der: bytes = field(repr=False)


def format_sockaddr(sockaddr: Any) -> str:
    """Format an address from ``getpeername()``/``getsockname()`` as ``ip:port``.

    A Unix socket's is its path; a Linux abstract name (a leading NUL, which
    Python gives as bytes) is shown as ``@name``, as ``ss`` does.
    """
    if isinstance(sockaddr, tuple):
        return format_endpoint(str(sockaddr[0]), int(sockaddr[1]))
    if isinstance(sockaddr, bytes):
        sockaddr = sockaddr.decode("utf-8", "backslashreplace")
    if isinstance(sockaddr, str) and sockaddr.startswith("\0"):
        return "@" + sockaddr[1:]
    return str(sockaddr)


def socket_info(sock: socket.socket, peer: Any = None) -> SocketInfo:
    """Read both endpoints of a connected socket (`peer`: its ``getpeername()``, if known)."""
    if peer is None:
        peer = sock.getpeername()
    local = sock.getsockname()
    if type(peer) is not tuple or type(local) is not tuple:
        return SocketInfo(format_sockaddr(peer), format_sockaddr(local), None)
    # TCP, formatted here as format_endpoint() would: once per connection, four calls less.
    host, port = peer[0], peer[1]
    remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    host, port = local[0], local[1]
    return SocketInfo(remote, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", None)
