"""Proxies: the ``proxy`` option's URL and the SOCKS5 and HTTP CONNECT handshakes.

The handshakes are sans-I/O: each is fed the bytes the proxy sent and says how
many it consumed and what to send next, so the selector thread drives them
without blocking, under the one ``connect_timeout`` deadline. A handshake never
consumes a byte past the proxy's reply: what follows belongs to the
destination (an SMTP greeting may arrive in the same segment as the reply).

- ``socks5h://`` (RFC 1928): the proxy resolves the destination's name.
- ``socks5://``: pysock resolves the name and sends the address, so
  ``address_filter`` checks the address the proxy will connect to.
- ``http://``: an HTTP/1.1 ``CONNECT`` request (RFC 9110 section 9.3.6).

Credentials in the URL (``user:pass@``, percent-encoded) are sent with the
SOCKS5 username/password method (RFC 1929) or as ``Proxy-Authorization:
Basic``. They never appear in a repr, a message or a log line.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import urllib.parse
from dataclasses import dataclass, field
from typing import Final, Optional, Union

from ._address import check_name, format_endpoint

__all__ = [
    "Handshake",
    "HttpConnect",
    "ProxyConfig",
    "ProxyRefused",
    "Socks5",
    "handshake_for",
    "parse_proxy",
]

_SCHEMES: Final = ("socks5", "socks5h", "http")
_MAX_HTTP_REPLY: Final = 16 * 1024  # A CONNECT reply's head; a longer one is not a proxy.

# RFC 1928 section 6: reply codes, with the errno the same failure gives a direct connect.
_SOCKS_REPLIES: Final = {
    1: ("general SOCKS server failure", errno.ECONNREFUSED),
    2: ("connection not allowed by ruleset", errno.EACCES),
    3: ("network unreachable", errno.ENETUNREACH),
    4: ("host unreachable", errno.EHOSTUNREACH),
    5: ("connection refused", errno.ECONNREFUSED),
    6: ("TTL expired", errno.ETIMEDOUT),
    7: ("command not supported", errno.EPROTO),
    8: ("address type not supported", errno.EAFNOSUPPORT),
}


class ProxyRefused(Exception):
    """The proxy answered, but not with a tunnel (or not as a proxy would).

    The message is the reason alone; the caller names the proxy and the destination.

    Attributes:
        errno: the errno a direct connect would give for the same failure.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.errno = code


@dataclass(frozen=True)
class ProxyConfig:
    """A parsed ``proxy`` URL.

    Attributes:
        scheme: ``"socks5"``, ``"socks5h"`` or ``"http"``.
        host: the proxy's host name or IP literal (no brackets).
        port: the proxy's port.
        username, password: the credentials, or None.
    """

    scheme: str
    host: str
    port: int
    username: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)

    @property
    def resolves_names(self) -> bool:
        """True when the proxy, not pysock, resolves the destination's name."""
        return self.scheme != "socks5"

    def __str__(self) -> str:
        return f"{self.scheme}://{format_endpoint(self.host, self.port)}"  # No credentials.


def parse_proxy(url: object) -> ProxyConfig:
    """Validate a ``proxy`` option.

    Raises:
        TypeError: `url` is not a str.
        ValueError: an unknown scheme, a missing host or port, a path, or
            credentials SOCKS5 cannot carry (over 255 bytes).
    """
    if not isinstance(url, str):
        raise TypeError(
            f"proxy must be a URL str such as 'socks5h://host:1080', not {type(url).__name__}"
        )
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            f"proxy URL {_redact(url)!r}: the scheme must be socks5h://, socks5:// or http://"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"proxy URL {_redact(url)!r} has a malformed port") from None
    if not parts.hostname or port is None:
        raise ValueError(
            f"proxy URL {_redact(url)!r} needs a host and a port ('{scheme}://host:port')"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"proxy URL {_redact(url)!r} must not have a path, query or fragment")
    if not 1 <= port <= 65535:
        raise ValueError(f"proxy port {port} is outside 1..65535")
    host = check_name(parts.hostname, "proxy host")
    username = password = None
    if parts.username is not None:
        username = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        if scheme != "http" and (
            not 0 < len(username.encode()) <= 255 or len(password.encode()) > 255
        ):
            raise ValueError("SOCKS5 credentials must be 1..255 bytes each (RFC 1929)")
    return ProxyConfig(scheme, host, port, username, password)


def _redact(url: str) -> str:
    """`url` without its password, for messages."""
    scheme, at, rest = url.rpartition("@")
    if not at:
        return url
    return f"{scheme.split('://', 1)[0]}://***@{rest}" if "://" in scheme else f"***@{rest}"


class Socks5:
    """A SOCKS5 CONNECT handshake (RFC 1928, RFC 1929 for credentials).

    `host` is an IP literal or, for ``socks5h``, a name the proxy resolves.
    """

    def __init__(self, config: ProxyConfig, host: str, port: int) -> None:
        self._config = config
        self._request = b"\x05\x01\x00" + _socks_address(host) + port.to_bytes(2, "big")
        methods = b"\x00\x02" if config.username is not None else b"\x00"
        self._out = b"\x05" + bytes([len(methods)]) + methods
        self._step = "method"
        self.done = False

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def receive(self, data: bytes) -> int:
        """Judge the proxy's bytes `data`; return the length of the message they start with.

        0 means the message is incomplete: `data` is all part of it, and the
        caller passes it again with what follows.

        Raises:
            ProxyRefused: the proxy refused, or did not speak SOCKS5.
        """
        if self._step == "method":
            if len(data) < 2:
                return 0
            if data[0] != 5:
                raise self._refused("it does not speak SOCKS5", errno.EPROTO)
            method = data[1]
            if method == 0x02 and self._config.username is not None:
                self._out = _socks_credentials(self._config)
                self._step = "auth"
            elif method == 0x00:
                self._out = self._request
                self._step = "reply"
            elif method == 0xFF and self._config.username is None:
                raise self._refused("it requires credentials", errno.EACCES)
            else:
                raise self._refused("it accepts none of our authentication methods", errno.EACCES)
            return 2
        if self._step == "auth":
            if len(data) < 2:
                return 0
            if data[1] != 0:
                raise self._refused("it rejected the username or password", errno.EACCES)
            self._out = self._request
            self._step = "reply"
            return 2
        return self._receive_reply(data)

    def _receive_reply(self, data: bytes) -> int:
        if len(data) < 5:
            return 0
        if data[0] != 5:
            raise self._refused("its reply is not SOCKS5", errno.EPROTO)
        if data[1] != 0:
            reason, code = _SOCKS_REPLIES.get(data[1], (f"reply code {data[1]}", errno.EPROTO))
            raise self._refused(f"{reason} (SOCKS5 reply {data[1]})", code)
        atyp = data[3]
        if atyp == 1:
            length = 4 + 4 + 2
        elif atyp == 4:
            length = 4 + 16 + 2
        elif atyp == 3:
            length = 4 + 1 + data[4] + 2
        else:
            raise self._refused(f"its reply has an unknown address type {atyp}", errno.EPROTO)
        if len(data) < length:
            return 0
        self.done = True
        return length

    def _refused(self, reason: str, code: int) -> ProxyRefused:
        return ProxyRefused(f"refused: {reason}", code)


def _socks_address(host: str) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        return b"\x03" + bytes([len(name)]) + name
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


def _socks_credentials(config: ProxyConfig) -> bytes:
    user = (config.username or "").encode()
    password = (config.password or "").encode()
    return b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password


class HttpConnect:
    """An HTTP/1.1 CONNECT handshake; any 2xx status opens the tunnel."""

    def __init__(self, config: ProxyConfig, host: str, port: int) -> None:
        self._config = config
        authority = format_endpoint(_ascii_host(host), port)
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if config.username is not None:
            token = f"{config.username}:{config.password or ''}".encode()
            lines.append(f"Proxy-Authorization: Basic {base64.b64encode(token).decode()}")
        self._out = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.done = False

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def receive(self, data: bytes) -> int:
        """The length of the reply's head once `data` holds all of it; see `Socks5.receive`."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_HTTP_REPLY:
                raise self._refused("its reply head is too long", errno.EPROTO)
            return 0
        status_line = data[: data.find(b"\r\n")].decode("latin-1")
        version, _, rest = status_line.partition(" ")
        status, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not (status.isdigit() and len(status) == 3):
            raise self._refused(f"its reply is not HTTP: {status_line[:80]!r}", errno.EPROTO)
        code = int(status)
        if not 200 <= code < 300:
            raise self._refused(f"HTTP {code} {reason}".rstrip(), _http_errno(code))
        self.done = True
        return end + 4

    def _refused(self, reason: str, code: int) -> ProxyRefused:
        return ProxyRefused(f"refused CONNECT: {reason}", code)


def _ascii_host(host: str) -> str:
    return host if host.isascii() else host.encode("idna").decode("ascii")


def _http_errno(status: int) -> int:
    if status in (401, 403, 407):
        return errno.EACCES
    if status == 504:
        return errno.ETIMEDOUT
    if status in (502, 503):
        return errno.ECONNREFUSED
    return errno.EPROTO


Handshake = Union[Socks5, HttpConnect]


def handshake_for(config: ProxyConfig, host: str, port: int) -> Handshake:
    """The handshake that asks the proxy in `config` for a tunnel to `host`:`port`."""
    if config.scheme == "http":
        return HttpConnect(config, host, port)
    return Socks5(config, host, port)
