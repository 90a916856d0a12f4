"""The address model (docs/api.md, "connect()") and the strategies that draw addresses.

`address_verdict` says which argument errors an address allows; a valid address
is only ever one of `SAFE_HOSTS` at the port of one of the test's own peers.
"""

from __future__ import annotations

import collections
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Optional

from hypothesis import strategies as st

# Names that resolve on loopback without DNS ("localhost" is in /etc/hosts).
SAFE_HOSTS: Final = ("127.0.0.1", "localhost", "::1")


# -- the address model (docs/api.md, "connect()") -------------------------------------------


@dataclass
class Verdict:
    """The argument errors pysock may raise for one `connect()` call (any one of them)."""

    errors: set[type[Exception]] = field(default_factory=set)
    host: Optional[str] = None
    port: Optional[int] = None
    merged: dict[str, Any] = field(default_factory=dict)
    unix: bool = False  # the address is a Unix socket's path

    @property
    def valid(self) -> bool:
        return not self.errors

    def allows(self, exc: BaseException) -> bool:
        return any(isinstance(exc, kind) for kind in self.errors)


def host_errors(host: Any) -> set[type[Exception]]:
    """The errors for a hostname, also for expected_server_hostname (pysock's check_name)."""
    if not isinstance(host, str):
        return {TypeError}
    if not host or len(host) > 253:
        return {ValueError}
    for char in host:
        if char in "/@" or ord(char) <= 0x20 or char == "\x7f" or not char.isprintable():
            return {ValueError}  # whitespace, '/', '@' or a control character
    if ":" in host:
        # No DNS name holds a ':', so only an IPv6 literal may, bare and with an optional
        # non-empty zone ("fe80::1%eth0"); anything else (":", "a:b", "[::1]", "::1%") is
        # refused at the call, not left to getaddrinfo() in the background.
        literal, percent, zone = host.partition("%")
        return set() if _is_ipv6(literal) and (zone or not percent) else {ValueError}
    if _is_ipv4(host):
        return set()
    name = host[:-1] if host.endswith(".") else host  # one trailing dot: the DNS root
    if host.isascii():
        ok = all(0 < len(label) <= 63 for label in name.split("."))  # RFC 1035 2.3.4
        return set() if ok else {ValueError}
    try:
        name.encode("idna")
    except UnicodeError:
        return {ValueError}
    return set()


def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def port_errors(port: Any) -> set[type[Exception]]:
    if isinstance(port, bool) or not isinstance(port, int):
        return {TypeError}
    return set() if 1 <= port <= 65535 else {ValueError}


def _is_ipv6(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return False
    return True


def _string_verdict(text: str) -> Verdict:
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            return Verdict({ValueError})
        host, port_text = text[1:end], text[end + 2 :]
        if not _is_ipv6(host):
            return Verdict({ValueError})  # in a string only an IPv6 literal is bracketed
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            return Verdict({ValueError})  # no port, or an unbracketed IPv6 literal
    if not (port_text.isascii() and port_text.isdigit()):
        return Verdict({ValueError})
    try:
        port = int(port_text)
    except ValueError:  # Python 3.11+: more than 4300 digits
        return Verdict({ValueError})
    return Verdict(host_errors(host) | port_errors(port), host, port)


def _unix_verdict(path: Any) -> Verdict:
    """A Unix socket's path ("unix:/run/x.sock" or {"path": ...}).

    A valid one has no `host`, so the test's assume() leaves it out: the
    properties never connect to a path they did not create.
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        return Verdict({TypeError}, unix=True)
    if not hasattr(socket, "AF_UNIX") or not path or "\0" in path[1:]:
        return Verdict({ValueError}, unix=True)  # only an abstract name starts with a NUL
    try:
        size = len(os.fsencode(path))
    except UnicodeEncodeError:  # a lone surrogate the file system encoding cannot carry
        return Verdict({ValueError}, unix=True)
    # sizeof(sun_path) is 108 on Linux: 107 bytes and a NUL, or 108 for an abstract name.
    too_long = size > 107 + (path[0] == "\0")
    return Verdict({ValueError} if too_long else set(), unix=True)


def _workers_ipv6(host: Any) -> Any:
    """A SocketAddress hostname "[2001:db8::1]" (how Workers code must spell an IPv6
    literal) is checked as the bare literal. The verdict keeps the bracketed host,
    which is not one of SAFE_HOSTS, so the test never connects to it."""
    if isinstance(host, str) and host[:1] == "[" and host[-1:] == "]":
        inner = host[1:-1]
        if _is_ipv6(inner.partition("%")[0]):  # a zone may follow: "[fe80::1%eth0]"
            return inner
    return host


def address_verdict(address: Any) -> Verdict:
    if isinstance(address, str) and address.startswith("unix:"):
        return _unix_verdict(address[len("unix:") :])
    if isinstance(address, dict) and "path" in address:
        if set(address) != {"path"}:
            return Verdict({TypeError}, unix=True)  # a Unix socket address is {"path": ...} alone
        return _unix_verdict(address["path"])
    if isinstance(address, str):
        return _string_verdict(address)
    if isinstance(address, tuple):
        if len(address) != 2:
            return Verdict({ValueError})
        host, port = address
    elif isinstance(address, dict):
        errors: set[type[Exception]] = set()
        if set(address) - {"hostname", "port"}:
            errors.add(TypeError)  # an unknown SocketAddress key
        if "hostname" not in address or "port" not in address:
            errors.add(ValueError)
        host, port = address.get("hostname"), address.get("port")
        if "hostname" in address:
            errors |= host_errors(_workers_ipv6(host))
        if "port" in address:
            errors |= port_errors(port)
        return Verdict(errors, host, port)
    else:
        return Verdict({TypeError})
    return Verdict(host_errors(host) | port_errors(port), host, port)


# -- strategies: addresses --------------------------------------------------------------


def _with_forbidden(text: str, char: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + char + text[at:]


def invalid_hosts() -> st.SearchStrategy[Any]:
    forbidden = st.sampled_from(
        [" ", "\t", "\n", "\r", "\x00", "\x1b", "\x7f", "/", "@", "\u200b", "\u2028", "\u3000"]
    )
    return st.one_of(
        st.just(""),
        st.integers(254, 400).map(lambda n: "a" * n),
        st.builds(_with_forbidden, st.sampled_from(SAFE_HOSTS), forbidden, st.integers(0, 20)),
        st.builds(_with_forbidden, st.text(max_size=10), forbidden, st.integers(0, 20)),
        st.text(max_size=12).map(lambda host: host if host_errors(host) else host + " "),
        st.none(),
        st.integers(-5, 70000),
        st.floats(allow_nan=False, allow_infinity=False),
        st.binary(max_size=10),
        st.just(b"localhost"),
        st.lists(st.text(max_size=3), max_size=2),
        st.tuples(st.just("127.0.0.1")),
    )


def invalid_ports() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=65536),
        st.sampled_from([0, -1, 65536, 2**31, 2**64, 10**30, True, False]),
        st.floats(),
        st.none(),
        st.text(st.characters(whitelist_categories=["Nd"]), min_size=1, max_size=6),
        st.binary(max_size=4),
        st.lists(st.integers(), max_size=2),
    )


def _port_text(port: int) -> st.SearchStrategy[str]:
    good = st.sampled_from([str(port), f"0{port}", f"00{port}"])
    bad = st.one_of(
        st.sampled_from(
            ["", "0", "65536", "99999999999", "http", f"+{port}", f" {port}", f"{port} ", "٣"]
        ),
        st.sampled_from([f"-{port}", f"{port}.0", f"{port}:{port}", "9" * 5000]),
        st.text(max_size=6),
    )
    return st.one_of(good, good, bad)


@st.composite
def addresses(draw: Any, port_of: Callable[[str], int]) -> Any:
    """Any `connect()` address; a valid one is safe and points at the test's peer."""
    host = draw(
        st.one_of(st.sampled_from(SAFE_HOSTS), st.sampled_from(SAFE_HOSTS), invalid_hosts())
    )
    safe = host in SAFE_HOSTS
    port = draw(st.one_of(st.just(port_of(host)), invalid_ports()) if safe else st.integers())
    form = draw(st.sampled_from(["dict", "tuple", "string", "string", "odd"]))
    if form == "dict":
        address: dict[Any, Any] = {"hostname": host, "port": port}
        if draw(st.integers(0, 5)) == 0:
            del address[draw(st.sampled_from(["hostname", "port"]))]
        if draw(st.integers(0, 5)) == 0:
            address[draw(st.one_of(st.text(max_size=8), st.integers(), st.none()))] = 1
        if draw(st.booleans()):
            return collections.OrderedDict(address)
        return address
    if form == "tuple" or (form == "string" and not isinstance(host, str)):
        extra = draw(st.lists(st.integers(), max_size=2)) if draw(st.integers(0, 5)) == 0 else []
        return (host, port, *extra)
    if form == "string":
        host_text = str(host)
        port_text = draw(_port_text(port)) if isinstance(port, int) else str(port)
        bracket = ":" in host_text and draw(st.integers(0, 3)) > 0
        host_text = f"[{host_text}]" if bracket else host_text
        return f"{host_text}:{port_text}"
    return draw(
        st.one_of(
            st.just([host, port]),
            st.just(f"[{host}]:{port}"),
            st.just(f"[{host}]{port}"),
            st.just(f"{host}"),
            st.text(max_size=20),
            st.binary(max_size=10).map(lambda raw: raw + b":80"),
            st.integers(),
            st.none(),
            st.builds(object),
            st.just(frozenset({repr(host)})),
            st.tuples(),
            st.just(f"unix:{host}"),  # beyond Workers: a Unix socket's path
            st.just({"path": host}),
        )
    )


# -- strategies: valid addresses only ------------------------------------------------------


@st.composite
def valid_addresses(draw: Any, port_of: Callable[[str], int]) -> Any:
    host = draw(st.sampled_from(SAFE_HOSTS))
    port = port_of(host)
    bracketed = f"[{host}]" if ":" in host else host
    return draw(
        st.sampled_from(
            [
                {"hostname": host, "port": port},
                collections.OrderedDict(hostname=host, port=port),
                (host, port),
                f"{bracketed}:{port}",
                f"{bracketed}:0{port}",
            ]
        )
    )
