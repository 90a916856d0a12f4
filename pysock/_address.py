"""Parse and validate the address given to `connect()`. No I/O happens here.

Three forms are accepted: a `SocketAddress` mapping ``{"hostname", "port"}``,
a string ``"host:port"`` / ``"[v6 literal]:port"``, and a tuple
``(host, port)``. In the string form an IPv6 literal must be bracketed, since
``"::1:80"`` is ambiguous; in the mapping and tuple forms it may be bare.
Beyond Workers, a Unix domain socket is ``{"path": "/run/x.sock"}`` or
``"unix:/run/x.sock"`` (a leading NUL names a Linux abstract socket).
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from typing import Any, Final, Optional

from typing_extensions import TypedDict

__all__ = [
    "Endpoint",
    "SocketAddress",
    "UnixAddress",
    "endpoint_of_peer",
    "format_endpoint",
    "parse_address",
    "parse_local_address",
]

MAX_HOSTNAME_LENGTH = 253  # RFC 1035 section 2.3.4: 255 octets on the wire, 253 as text.
_MAX_LABEL_LENGTH: Final = 63  # RFC 1035 section 2.3.4.
_FORBIDDEN_CHARACTERS = frozenset("/@") | frozenset(chr(c) for c in range(0x21)) | {"\x7f"}
_AF_UNIX: Final = getattr(socket, "AF_UNIX", None)
_MAX_UNIX_PATH: Final = 107  # sizeof(sun_path) on Linux, less the terminating NUL.


class SocketAddress(TypedDict):
    """The address mapping of Cloudflare Workers' ``connect()``."""

    hostname: str
    port: int


class UnixAddress(TypedDict):
    """A Unix domain socket's address (beyond Workers): ``{"path": "/run/x.sock"}``."""

    path: str


@dataclass(frozen=True)
class Endpoint:
    """A validated destination.

    Attributes:
        host: the hostname or IP literal as given, without brackets.
        port: 1..65535.
        family: ``AF_INET``/``AF_INET6`` when `host` is an IP literal,
            ``AF_UNIX`` when it is a Unix socket's path (`port` is then 0),
            else None (a name that needs DNS).
    """

    host: str
    port: int
    family: Optional[int]

    @property
    def is_unix(self) -> bool:
        return self.family is not None and self.family == _AF_UNIX

    def __str__(self) -> str:
        if self.is_unix:
            name = "@" + self.host[1:] if self.host.startswith("\0") else self.host
            return f"unix:{name}"
        return format_endpoint(self.host, self.port)


def format_endpoint(host: str, port: int) -> str:
    """Return ``host:port``, bracketing IPv6 literals (``[::1]:80``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(address: Any) -> Endpoint:
    """Validate `address` in any accepted form and return an `Endpoint`.

    Raises:
        TypeError: `address`, its hostname or its port has the wrong type.
        ValueError: a missing, empty or malformed part, or a port outside 1..65535.
    """
    # Programs connect to the same few addresses again and again: the usual
    # forms are checked once each (an Endpoint is immutable).
    kind = type(address)
    if kind is str or (
        kind is tuple and len(address) == 2 and type(address[0]) is str and type(address[1]) is int
    ):
        return _parse_cached(address)
    return _parse(address)


@functools.lru_cache(maxsize=256)
def _parse_cached(address: Any) -> Endpoint:
    return _parse(address)


def _parse(address: Any) -> Endpoint:
    if isinstance(address, str) and address.startswith("unix:"):
        return _unix_endpoint(address[len("unix:") :])
    if isinstance(address, dict) and "path" in address:
        unknown = set(address) - {"path"}
        if unknown:
            raise TypeError(
                "a Unix socket address is {'path': ...} alone; "
                f"unexpected key {sorted(unknown)[0]!r}"
            )
        return _unix_endpoint(address["path"])
    if isinstance(address, str):
        host, port = _split_host_port(address)
    elif isinstance(address, tuple):
        if len(address) != 2:
            raise ValueError(f"address tuple must be (host, port), got {len(address)} items")
        host, port = address
    elif isinstance(address, dict):
        unknown = set(address) - {"hostname", "port"}
        if unknown:
            key = sorted(unknown, key=str)[0]
            hint = _KEY_HINTS.get(key.lower() if isinstance(key, str) else key)
            raise TypeError(
                f"unknown SocketAddress key {key!r}" + (f": write {hint!r}" if hint else "")
            )
        if "hostname" not in address:
            raise ValueError("SocketAddress is missing 'hostname'")
        if "port" not in address:
            raise ValueError("SocketAddress is missing 'port'")
        host, port = _unbracket(address["hostname"]), address["port"]
    else:
        raise TypeError(
            "address must be a SocketAddress dict, a 'host:port' string or a (host, port) "
            f"tuple, not {type(address).__name__}"
        )
    return Endpoint(_check_host(host), _check_port(port), _ip_family(host))


# Keys of other address mappings, and the Workers key that means the same.
_KEY_HINTS: Final = {"host": "hostname", "hostName": "hostname", "name": "hostname"}


def _unbracket(host: Any) -> Any:
    """Accept the Workers spelling of an IPv6 hostname: ``"[2001:db8::1]"``.

    Workers code must bracket an IPv6 literal in ``hostname``; the same
    mapping means the same destination here.
    """
    if isinstance(host, str) and host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        if _ip_family(inner.partition("%")[0]) == socket.AF_INET6:
            return inner
        raise ValueError(f"hostname {host!r}: brackets hold an IPv6 literal, and this is not one")
    return host


def _unix_endpoint(path: Any) -> Endpoint:
    if _AF_UNIX is None:
        raise ValueError("Unix domain sockets are not available on this platform")
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(
            f"a Unix socket path must be a str or os.PathLike, not {type(path).__name__}"
        )
    if not path:
        raise ValueError("the Unix socket path is empty")
    if "\0" in path[1:]:
        raise ValueError(f"the Unix socket path {path!r} holds a NUL character")
    if len(os.fsencode(path)) > _MAX_UNIX_PATH + (path[0] == "\0"):
        raise ValueError(f"the Unix socket path is longer than {_MAX_UNIX_PATH} bytes")
    return Endpoint(path, 0, _AF_UNIX)


def endpoint_of_peer(sock: socket.socket) -> Endpoint:
    """The `Endpoint` an adopted, connected socket (``connect(sock=...)``) talks to."""
    peer = sock.getpeername()
    if _AF_UNIX is not None and sock.family == _AF_UNIX:
        name = peer if isinstance(peer, str) else peer.decode("utf-8", "backslashreplace")
        return Endpoint(name or "(unnamed)", 0, _AF_UNIX)
    return Endpoint(str(peer[0]), int(peer[1]), int(sock.family))


def parse_local_address(value: Any) -> tuple[int, tuple[str, int]]:
    """Validate ``local_address``: an IP literal, ``"ip:port"``, ``"[v6]:port"`` or ``(ip, port)``.

    Returns:
        ``(family, (ip, port))`` ready for ``bind()``; port 0 lets the OS choose.
    """
    if isinstance(value, str):
        if _ip_family(value) is not None:
            host, port = value, 0
        elif value.startswith("[") and value.endswith("]"):
            host, port = value[1:-1], 0
        else:
            host, port = _split_host_port(value)
    elif isinstance(value, tuple) and len(value) == 2:
        host, port = value
        if not isinstance(host, str):
            raise TypeError(f"local_address host must be a str, not {type(host).__name__}")
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"local_address port must be an int, not {type(port).__name__}")
    else:
        raise TypeError(
            "local_address must be an IP literal str, 'ip:port', '[v6]:port' or an (ip, port) "
            f"tuple, not {type(value).__name__}"
        )
    family = _ip_family(host)
    if family is None:
        raise ValueError(f"local_address {host!r} is not an IP literal")
    if not 0 <= port <= 65535:
        raise ValueError(f"local_address port {port} is outside 0..65535")
    return family, (host, port)


def _split_host_port(text: str) -> tuple[str, int]:
    if "://" in text:
        raise ValueError(_not_a_url(text))
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"malformed address {text!r}: expected '[v6 literal]:port'")
        host, port_text = text[1:end], text[end + 2 :]
        if _ip_family(host) != socket.AF_INET6:
            raise ValueError(f"malformed address {text!r}: {host!r} is not an IPv6 literal")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"address {text!r} is missing its port ('host:port')")
        if ":" in host:
            raise ValueError(
                f"malformed address {text!r}: an IPv6 literal must be bracketed, as in '[::1]:80'"
            )
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"malformed port {port_text!r} in address {text!r}")
    return host, int(port_text)


def _not_a_url(text: str) -> str:
    """The message for a URL given as an address, with the address to write instead."""
    scheme, _, rest = text.partition("://")
    authority = rest.split("/", 1)[0].rpartition("@")[2]
    default = _DEFAULT_PORTS.get(scheme.lower())
    if authority and not authority.endswith("]") and ":" in authority:
        address = authority
    elif authority and default is not None:
        address = f"{authority}:{default}"
    else:
        return f"{text!r} is a URL: pysock connects to a 'host:port' address"
    tls = ", secure_transport='on'" if scheme.lower() in _TLS_SCHEMES else ""
    return f"{text!r} is a URL: pysock connects to 'host:port'; write connect({address!r}{tls})"


_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "smtp": 25}
_TLS_SCHEMES: Final = frozenset({"https", "wss"})


def _check_host(host: Any) -> str:
    return check_name(host, "hostname")


def check_name(host: Any, what: str) -> str:
    """Check a host name or IP literal (an address's, or ``expected_server_hostname``).

    Beyond the rules every address follows (no whitespace, ``/``, ``@`` or
    control characters, which no host name holds and which would let a name
    smuggle a path, credentials or a header; at most 253 characters), a name
    must be one DNS and TLS can carry: no empty label and none over 63
    characters (RFC 1035 section 2.3.4), no leading dot, and IDNA-encodable
    when not ASCII. Otherwise the failure would come later, from
    ``getaddrinfo()`` or the ssl module, in another thread.
    """
    if not isinstance(host, str):
        raise TypeError(f"{what} must be a str, not {type(host).__name__}")
    if not host:
        raise ValueError(f"{what} is empty")
    if len(host) > MAX_HOSTNAME_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_HOSTNAME_LENGTH} characters")
    bad = next((c for c in host if c in _FORBIDDEN_CHARACTERS or not c.isprintable()), None)
    if bad is not None:
        raise ValueError(f"{what} {host!r} holds a forbidden character {bad!r}")
    if ":" in host:  # Only an IPv6 literal holds one, with a zone ("fe80::1%eth0") or not.
        address, percent, zone = host.partition("%")
        if host.startswith("[") and host.endswith("]"):
            raise ValueError(f"{what} {host!r}: give an IPv6 literal without brackets here")
        if _ip_family(address) != socket.AF_INET6 or (percent and not zone):
            raise ValueError(
                f"{what} {host!r} holds ':' but is not an IPv6 address "
                "(a name cannot hold one; give the port apart)"
            )
    elif _ip_family(host) is None:
        _check_labels(host, what)
    return host


def _check_labels(host: str, what: str) -> None:
    name = host[:-1] if host.endswith(".") else host  # One trailing dot: the DNS root.
    if host.isascii():
        if any(not 0 < len(label) <= _MAX_LABEL_LENGTH for label in name.split(".")):
            raise ValueError(f"{what} {host!r} has an empty label or one over 63 characters")
        return
    try:
        name.encode("idna")
    except UnicodeError as exc:
        raise ValueError(f"{what} {host!r} is not a valid internationalized name: {exc}") from None


def _check_port(port: Any) -> int:
    # bool is an int subclass, but True is not a port.
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return port


def _ip_family(host: Any) -> Optional[int]:
    if not isinstance(host, str):
        return None
    # inet_pton is strict ("1.2.3" is not an address) and much faster than ipaddress.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None
