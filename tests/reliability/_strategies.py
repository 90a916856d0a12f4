"""Hypothesis strategies and reference models for the property tests (test_properties.py).

The models restate pysock's argument checks (docs/api.md, "connect()" and
"SocketOptions") and its read semantics (io's, plus readexactly() and
readuntil() as in asyncio) in their own code, so that a bug in pysock's
checks shows up as a disagreement: a `Verdict` lists the argument errors
allowed for an input (when several checks fail, pysock reports whichever it
meets first, so any of them may be), and `ReadModel` says what each read
must return from the bytes the peer sent. Where the model and pysock
disagree, either one may be wrong: read pysock/_address.py and
pysock/_options.py before widening or narrowing the model.

Two rules keep every example on loopback: a hostname that is valid but not
one of `SAFE_HOSTS` (it would go to DNS) is filtered out, and a valid port
is only ever the port of one of the test's own peers. A few inputs are
excluded here because they exposed pysock bugs that a regression test now
pins down; each exclusion names its test (widening them again is open work).
"""

from __future__ import annotations

import array
import collections
import ctypes
import ipaddress
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Final, Optional

from hypothesis import strategies as st

from pysock import IncompleteReadError

KEYS: Final = (
    "secure_transport",
    "allow_half_open",
    "timeout",
    "connect_timeout",
    "tls_context",
    "expected_server_hostname",
    "alpn_protocols",
)
# pysock's other options, most beyond Workers. The model does not cover their values
# (each has its own tests: test_tcp_knobs.py, test_proxies.py, test_address_filter.py,
# test_happy_eyeballs.py, test_unix_and_adopt.py, test_tls.py), so an "unknown key" is
# never one of them.
BEYOND_KEYS: Final = (
    "ignore_unexpected_eof",
    "happy_eyeballs_delay",
    "address_filter",
    "proxy",
    "sock",
    "no_delay",
    "keep_alive",
    "local_address",
)
CAMEL_KEYS: Final = {
    "secureTransport": "secure_transport",
    "allowHalfOpen": "allow_half_open",
    "connectTimeout": "connect_timeout",
    "tlsContext": "tls_context",
    "expectedServerHostname": "expected_server_hostname",
    "alpnProtocols": "alpn_protocols",
    "Timeout": "timeout",
}
# Names that resolve on loopback without DNS ("localhost" is in /etc/hosts).
SAFE_HOSTS: Final = ("127.0.0.1", "localhost", "::1")
# Timeouts past ~24.8 days once overflowed poll() and killed the selector thread
# (fixed in ff7ae7c; test_huge_timeout_* in test_properties.py): they are drawn too.
HUGE_TIMEOUTS: Final = (2.2e6, 1e8, 1e300, float("inf"), 10**30)
# An int too big for a float (test_a_timeout_too_big_for_a_float_is_an_argument_error
# pins it down): ints stay below.
_INTS: Final = st.integers(-(10**300), 10**300)
# Below this a connect or read deadline may pass on a loaded machine: a
# SocketTimeout is then an allowed outcome too.
SHORT_TIMEOUT: Final = 2.0

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


# -- the options model -----------------------------------------------------------------


def _timeout_errors(value: Any) -> set[type[Exception]]:
    if value is None:
        return set()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {TypeError}
    return {ValueError} if value != value or value < 0 else set()


def _alpn_errors(value: Any) -> set[type[Exception]]:
    if value is None:
        return set()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return {TypeError}
    errors: set[type[Exception]] = set()
    for item in value:
        if not isinstance(item, str):
            errors.add(TypeError)
            continue
        try:
            size = len(item.encode())
        except UnicodeEncodeError:  # a lone surrogate
            errors.add(ValueError)
            continue
        if not 0 < size <= 255 or not item.isascii():  # RFC 7301 section 3.1; ssl sends ASCII
            errors.add(ValueError)
    return errors


def _value_errors(key: str, value: Any) -> set[type[Exception]]:
    if key == "secure_transport":
        if not isinstance(value, str):
            return {TypeError}
        return set() if value in ("off", "on", "starttls") else {ValueError}
    if key == "allow_half_open":
        return set() if isinstance(value, bool) else {TypeError}
    if key in ("timeout", "connect_timeout"):
        return _timeout_errors(value)
    if key == "tls_context":
        return set() if value is None or isinstance(value, ssl.SSLContext) else {TypeError}
    if key == "expected_server_hostname":
        return set() if value is None else host_errors(value)
    return _alpn_errors(value)


def options_verdict(options: Any, kwargs: dict[str, Any]) -> Verdict:
    """The argument errors `options` (or `OMITTED`) plus `kwargs` allow."""
    verdict = Verdict()
    if options is OMITTED or options is None:
        merged: dict[Any, Any] = {}
    elif isinstance(options, Mapping):
        merged = dict(options)
    else:
        verdict.errors.add(TypeError)
        merged = {}
    for key, value in kwargs.items():
        if key in merged:
            verdict.errors.add(TypeError)  # given both ways
        merged[key] = value
    for key, value in merged.items():
        if not isinstance(key, str) or key not in KEYS:
            assert key not in BEYOND_KEYS, f"the model does not cover {key!r}"
            verdict.errors.add(TypeError)  # unknown, camelCase or not a str
        else:
            verdict.errors |= _value_errors(key, value)
    if merged.get("alpn_protocols") is not None and merged.get("tls_context") is not None:
        verdict.errors.add(ValueError)  # pysock never modifies a context it was given
    verdict.merged = merged
    return verdict


def connect_verdict(address: Verdict, options: Verdict) -> Verdict:
    """What ``connect(address, options)`` allows: either part's errors, and the pair's."""
    errors = address.errors | options.errors
    merged = options.merged
    on = merged.get("secure_transport") == "on"
    if address.unix and on and not merged.get("expected_server_hostname"):
        errors.add(ValueError)  # a path is no name to check a certificate against
    return Verdict(errors, address.host, address.port, merged, address.unix)


def tls_verdict(merged: dict[str, Any], host: str, trusted: ssl.SSLContext) -> str:
    """``"ok"``, ``"fail"`` or ``"either"`` for a handshake with the test's TLS peer.

    The peer's certificate names localhost, 127.0.0.1 and ::1 and is issued by
    the CA `trusted` trusts. Anything else must fail: never a success against a
    certificate that does not match.
    """
    if merged.get("tls_context") is not trusted:
        return "fail"  # the default context or a stranger's does not trust the test CA
    name = merged.get("expected_server_hostname") or host
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        loopbacks = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
        return "ok" if address in loopbacks else "fail"
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return "fail"
    if ascii_name == "localhost":
        return "ok"
    if ascii_name == "localhost.":
        return "either"  # the same DNS name; OpenSSL happens to refuse it
    return "fail"


def ssl_rejects_name(name: Any) -> bool:
    """True if the ssl module refuses `name` as server_hostname.

    pysock refuses such names at the call (regression tests
    test_names_ssl_rejects_*); the properties leave them out.
    """
    if not isinstance(name, str):
        return False
    if "\0" in name or name.startswith("."):
        return True
    try:
        name.encode("idna")
    except UnicodeError:
        return True
    return False


class _Omitted:
    def __repr__(self) -> str:
        return "OMITTED"


OMITTED: Final = _Omitted()

# -- strategies: junk of every type ----------------------------------------------------------


def junk() -> st.SearchStrategy[Any]:
    """Values of many types."""
    return st.one_of(
        st.none(),
        st.booleans(),
        _INTS,
        st.floats(),
        st.sampled_from([float("nan"), float("-inf"), -0.0, Decimal("1.5"), Fraction(1, 3)]),
        st.text(max_size=6),
        st.binary(max_size=6),
        st.lists(st.integers(0, 3), max_size=2),
        st.tuples(st.text(max_size=2)),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
        st.builds(object),
        st.just(ssl.PROTOCOL_TLS_CLIENT),
    )


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


# -- strategies: options ----------------------------------------------------------------


def valid_timeouts() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.sampled_from([0, 0.0, 1e-9, 0.001, 0.5, 5, 10.0, 60, 3600.0, *HUGE_TIMEOUTS]),
        st.floats(min_value=0),
        st.integers(0, 10**300),
    )


def timeouts() -> st.SearchStrategy[Any]:
    bad = st.sampled_from([-1, -0.001, float("nan"), float("-inf"), True, "5", Decimal(5)])
    return st.one_of(valid_timeouts(), bad)


SERVER_NAMES: Final = (
    "localhost",
    "LOCALHOST",
    "127.0.0.1",
    "::1",
    "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1",
    "127.0.0.2",
    "wrong.example",
    "*.localhost",
    "*",
    "localhost.",
    "local*",
    "::1%lo",  # an IPv6 literal with a zone: valid, and not the certificate's ::1
)


def valid_server_names() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.sampled_from(SERVER_NAMES),
        st.text(min_size=1, max_size=12).map(_accepted_by_ssl),
    )


def _accepted_by_ssl(name: str) -> str:
    """Valid names only: a name pysock refuses is drawn by `server_names()`."""
    return name if not host_errors(name) and not ssl_rejects_name(name) else "other.example"


def server_names() -> st.SearchStrategy[Any]:
    bad = st.one_of(
        st.sampled_from(["", b"localhost", 127, ["localhost"], ".localhost", "a..b", " "]),
        st.sampled_from([":", "a:b", "localhost:443", "[::1]", "::1%", "::g"]),  # ':' but no IPv6
        st.text(min_size=1, max_size=12),  # any text: the model says which pysock refuses
    )
    return st.one_of(valid_server_names(), bad)


def alpn_lists() -> st.SearchStrategy[Any]:
    # Non-ASCII names are a ValueError at the call
    # (test_names_ssl_rejects_fail_at_the_call_without_a_leak): ASCII only here.
    name = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)
    return st.one_of(
        st.none(),
        st.lists(name, max_size=3),
        st.lists(name, max_size=2).map(tuple),
        st.sampled_from(
            ["h2", b"h2", [b"h2"], [""], ["x" * 256], [1], {"h2": 1}, {"h2"}, bytearray(b"h2")]
        ),
    )


def option_values(contexts: Sequence[ssl.SSLContext]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "secure_transport": st.one_of(
            st.sampled_from(["off", "on", "starttls"]),
            st.sampled_from(["ON", "tls", "", " on", "start_tls", True, None, 1]),
        ),
        "allow_half_open": st.one_of(st.booleans(), st.sampled_from([0, 1, None, "true"])),
        "timeout": timeouts(),
        "connect_timeout": timeouts(),
        "tls_context": st.one_of(st.none(), st.sampled_from(list(contexts)), junk()),
        "expected_server_hostname": server_names(),
        "alpn_protocols": alpn_lists(),
    }


@st.composite
def option_arguments(draw: Any, contexts: Sequence[ssl.SSLContext]) -> tuple[Any, dict[str, Any]]:
    """``(options, kwargs)``: any mix of keys and values, some keys given both ways."""
    values = option_values(contexts)
    chosen: dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS))):
        chosen[key] = draw(st.one_of(values[key], values[key], values[key], junk()))
    if draw(st.integers(0, 6)) == 0:
        unknown = st.one_of(
            st.sampled_from(sorted(CAMEL_KEYS)),
            st.text(max_size=10).filter(lambda key: key not in (*KEYS, *BEYOND_KEYS)),
        )
        chosen[draw(unknown)] = draw(junk())
    in_options = {key: draw(st.booleans()) for key in chosen}
    options: dict[Any, Any] = {key: v for key, v in chosen.items() if in_options[key]}
    kwargs = {key: v for key, v in chosen.items() if not in_options[key]}
    if kwargs and draw(st.integers(0, 8)) == 0:
        duplicate = draw(st.sampled_from(sorted(kwargs)))
        options[duplicate] = draw(values.get(duplicate, junk()))
    if draw(st.integers(0, 10)) == 0:
        options[draw(st.one_of(st.integers(), st.none(), st.binary(max_size=3)))] = 1
    shape = draw(st.sampled_from(["dict", "dict", "ordered", "mapping", "omitted", "junk"]))
    if shape == "junk" and not options:
        return draw(st.one_of(st.lists(st.text()), st.text(), st.integers(), st.tuples())), kwargs
    if shape == "omitted" and not options:
        return OMITTED, kwargs
    if shape == "ordered":
        return collections.OrderedDict(options), kwargs
    if shape == "mapping":
        return _ReadOnlyMapping(options), kwargs
    return options, kwargs


class _ReadOnlyMapping(Mapping[Any, Any]):
    """A Mapping that is not a dict (options accepts any Mapping)."""

    def __init__(self, items: dict[Any, Any]) -> None:
        self._items = items

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"_ReadOnlyMapping({self._items!r})"


# -- strategies: valid arguments only -------------------------------------------------------


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


@st.composite
def valid_option_arguments(
    draw: Any, contexts: Sequence[ssl.SSLContext]
) -> tuple[Any, dict[str, Any]]:
    valid = {
        "secure_transport": st.sampled_from(["off", "on", "starttls"]),
        "allow_half_open": st.booleans(),
        "timeout": valid_timeouts(),
        "connect_timeout": valid_timeouts(),
        "tls_context": st.one_of(st.none(), st.sampled_from(list(contexts))),
        "expected_server_hostname": valid_server_names(),
        "alpn_protocols": st.one_of(st.none(), st.sampled_from([["h2"], ("http/1.1", "h2")])),
    }
    chosen = {key: draw(valid[key]) for key in draw(st.lists(st.sampled_from(KEYS), unique=True))}
    if draw(st.integers(0, 3)) == 0:  # a handshake that must succeed: contexts[0] is trusted
        chosen["secure_transport"] = "on"
        chosen["tls_context"] = contexts[0]
        names = [None, "localhost", "LOCALHOST", "127.0.0.1", "::1", "0:0:0:0:0:0:0:1"]
        chosen["expected_server_hostname"] = draw(st.sampled_from(names))
    if chosen.get("alpn_protocols") is not None and chosen.get("tls_context") is not None:
        del chosen["alpn_protocols"]
    split = {key: draw(st.booleans()) for key in chosen}
    options = {key: value for key, value in chosen.items() if split[key]}
    kwargs = {key: value for key, value in chosen.items() if not split[key]}
    return (options if options or draw(st.booleans()) else OMITTED), kwargs


# -- the read model (docs/api.md, "SocketReader") ------------------------------------------

# Sizes below sys.maxsize only, -1 as the only negative read() size, no bool
# sizes and no None for read1(): each of those is pinned by a regression test
# (test_reader_size_arguments_*, test_huge_sizes_*).
_SIZES = st.one_of(
    st.integers(0, 64),
    st.integers(0, 300_000),
    st.sampled_from([1, 65535, 65536, 65537, 131072]),
)
_BAD_SIZES = st.sampled_from([1.5, "3", b"3", [1], 2.0])


def read_ops() -> st.SearchStrategy[tuple[Any, ...]]:
    separators = st.one_of(
        st.sampled_from([b"\n", b"\r\n", b"--", b"x", b"\n\n"]),
        st.binary(min_size=1, max_size=4),
        st.binary(min_size=1, max_size=4).map(bytearray),
    )
    bad_separators = st.sampled_from([b"", "\n", memoryview(b"\n"), None, 10, [b"\n"]])
    limits = st.one_of(_SIZES, st.sampled_from([-1, 0, True, 1.5, None, "8"]))
    return st.one_of(
        st.tuples(st.just("read"), st.one_of(st.none(), st.just(-1), _SIZES, _BAD_SIZES)),
        st.tuples(st.just("read1"), st.one_of(st.just(-1), _SIZES, _BAD_SIZES)),
        st.tuples(st.just("readline"), st.one_of(st.none(), st.integers(-3, -1), _SIZES)),
        st.tuples(st.just("readline"), _BAD_SIZES),
        st.tuples(
            st.just("readexactly"),
            st.one_of(_SIZES, st.integers(-5, -1), st.sampled_from([True, None, 1.5, "2"])),
        ),
        st.tuples(st.just("readuntil"), separators, st.one_of(st.just(OMITTED), limits)),
        st.tuples(st.just("readuntil"), bad_separators, st.just(OMITTED)),
        st.tuples(st.sampled_from(["readinto", "readinto1"]), buffers()),
        # peek(1.5) with bytes stashed: pinned by test_peek_checks_...
        st.tuples(st.just("peek"), st.integers(0, 10)),
        st.tuples(st.just("next")),
        st.tuples(st.just("readlines"), st.one_of(st.none(), st.integers(-1, 200))),
    )


@dataclass(frozen=True)
class BufferSpec:
    """A target for readinto(), built fresh in each run (hypothesis may replay an example)."""

    kind: str
    size: int

    def build(self) -> Any:
        size = self.size
        if self.kind == "bytearray":
            return bytearray(size)
        if self.kind == "memoryview":
            return memoryview(bytearray(size))
        if self.kind == "array":
            return array.array("i", [0] * size)
        if self.kind == "matrix":  # C-contiguous, two dimensions
            return memoryview(bytearray(max(size, 1) * 4)).cast("B", (max(size, 1), 4))
        if self.kind == "ctypes":
            return (ctypes.c_char * size)()
        if self.kind == "strided":  # not contiguous: not a writable bytes-like object
            return memoryview(bytearray(size * 2))[::2]
        if self.kind == "bytes":  # read-only
            return bytes(size)
        if self.kind == "str":
            return "x" * size
        return None

    @property
    def writable(self) -> bool:
        if self.kind == "strided":  # one element is contiguous after all
            return bool(self.build().c_contiguous)
        return self.kind in ("bytearray", "memoryview", "array", "matrix", "ctypes")


def buffers() -> st.SearchStrategy[BufferSpec]:
    # A read-only buffer (bytes) is left out: pinned by
    # test_readinto_a_read_only_buffer_loses_nothing.
    kinds = ["bytearray", "memoryview", "array", "matrix", "ctypes", "strided", "str"]
    return st.builds(
        BufferSpec,
        st.sampled_from([*kinds, "none"]),
        st.one_of(st.integers(0, 64), st.integers(0, 100_000)),
    )


class Blob(bytes):
    """Bytes with a short repr: a failing example prints its length and first bytes."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes: {bytes(self[:24])!r}...>"


def payloads() -> st.SearchStrategy[bytes]:
    piece = st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\n", b"\r\n", b"--", b"\n\n", b"x"]),
        st.builds(
            lambda unit, count: unit * count,
            st.binary(min_size=1, max_size=2),
            st.integers(1, 70_000),
        ),
    )
    joined = st.lists(piece, max_size=8).map(lambda pieces: Blob(b"".join(pieces)))
    return joined.filter(lambda data: len(data) <= 300_000)


class ReadModel:
    """What the peer sent and what is left; checks each read against io's rules.

    A read returns the next bytes in order, never drops or repeats one, and at
    EOF returns b"" every time; readexactly() and readuntil() raise
    IncompleteReadError with every byte left in `.partial`, as in asyncio.
    """

    def __init__(self, sent: bytes) -> None:
        self.sent = sent
        self.left = sent
        self.taken: list[bytes] = []

    def take(self, data: bytes) -> None:
        assert self.left.startswith(data), (data[:40], self.left[:40])
        self.left = self.left[len(data) :]
        self.taken.append(data)

    def check(self, reader: Any, op: tuple[Any, ...]) -> None:
        name, *args = op
        getattr(self, f"_{name}")(reader, *args)

    def _read(self, reader: Any, size: Any) -> None:
        if _bad_size(size):
            _raises(TypeError, reader.read, size)
            return
        want = self.left if size is None or size < 0 else self.left[:size]
        self._expect(reader.read(size), want)

    def _read1(self, reader: Any, size: Any) -> None:
        if _bad_size(size):
            _raises(TypeError, reader.read1, size)
            return
        data = reader.read1(size)
        if size == 0 or not self.left:
            assert data == b""
        else:
            assert data, "read1() returned b'' before EOF"
            assert size < 0 or len(data) <= size
        self.take(data)

    def _readline(self, reader: Any, limit: Any) -> None:
        if _bad_size(limit):
            _raises(TypeError, reader.readline, limit)
            return
        end = self.left.find(b"\n")
        line = self.left if end < 0 else self.left[: end + 1]
        if limit is not None and limit >= 0:
            line = line[:limit]
        self._expect(reader.readline(limit), line)

    def _readexactly(self, reader: Any, n: Any) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            _raises(TypeError, reader.readexactly, n)
        elif n < 0:
            _raises(ValueError, reader.readexactly, n)
        elif n <= len(self.left):
            self._expect(reader.readexactly(n), self.left[:n])
        else:
            error = _raises(IncompleteReadError, reader.readexactly, n)
            assert isinstance(error, IncompleteReadError)
            assert error.partial == self.left and error.expected == n
            self.take(error.partial)

    def _readuntil(self, reader: Any, separator: Any, limit: Any) -> None:
        args = (separator,) if limit is OMITTED else (separator, limit)
        bound = 65536 if limit is OMITTED else limit
        if not isinstance(separator, (bytes, bytearray)):
            _raises(TypeError, reader.readuntil, *args)
            return
        if isinstance(bound, bool) or not isinstance(bound, int):
            _raises(TypeError, reader.readuntil, *args)
            return
        if not separator or bound < len(separator):
            _raises(ValueError, reader.readuntil, *args)
            return
        start = self.left.find(separator)
        if 0 <= start <= bound:
            self._expect(reader.readuntil(*args), self.left[: start + len(separator)])
        elif start > bound or len(self.left) >= bound + len(separator):
            error = _raises(ValueError, reader.readuntil, *args)  # the limit: nothing consumed
            assert not isinstance(error, IncompleteReadError)
        else:
            error = _raises(IncompleteReadError, reader.readuntil, *args)
            assert isinstance(error, IncompleteReadError) and error.partial == self.left
            self.take(error.partial)

    def _readinto(self, reader: Any, spec: BufferSpec, one: bool = False) -> None:
        target = spec.build()
        method = reader.readinto1 if one else reader.readinto
        if not spec.writable:
            _raises(TypeError, method, target)
            return
        nbytes = memoryview(target).nbytes
        count = method(target)
        most = min(nbytes, len(self.left))
        if one:
            assert (count > 0) == (most > 0) and count <= most
        else:
            assert count == most, (count, most)
        self.take(memoryview(target).tobytes()[:count])

    def _readinto1(self, reader: Any, spec: BufferSpec) -> None:
        self._readinto(reader, spec, one=True)

    def _peek(self, reader: Any, size: Any) -> None:
        if not isinstance(size, int):
            _raises(TypeError, reader.peek, size)
            return
        data = reader.peek(size)
        assert self.left.startswith(data) and bool(data) == bool(self.left)

    def _next(self, reader: Any) -> None:
        if not self.left:
            _raises(StopIteration, next, iter(reader))
            return
        end = self.left.find(b"\n")
        self._expect(next(iter(reader)), self.left if end < 0 else self.left[: end + 1])

    def _readlines(self, reader: Any, hint: Any) -> None:
        want: list[bytes] = []
        rest, total = self.left, 0
        while rest:
            end = rest.find(b"\n")
            line = rest if end < 0 else rest[: end + 1]
            want.append(line)
            rest = rest[len(line) :]
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        lines = reader.readlines(hint)
        assert lines == want
        for line in lines:
            self.take(line)

    def _expect(self, data: bytes, want: bytes) -> None:
        assert type(data) is bytes, type(data)
        assert data == want, (len(data), len(want), data[:40], want[:40])
        self.take(data)


def _bad_size(size: Any) -> bool:
    return size is not None and (isinstance(size, bool) or not isinstance(size, int))


def _raises(kind: type[BaseException], call: Callable[..., Any], *args: Any) -> BaseException:
    try:
        result = call(*args)
    except kind as exc:
        return exc
    raise AssertionError(f"{call.__name__}{args!r} returned {result!r:.60}, not {kind.__name__}")


# -- write arguments --------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteArg:
    """An argument for write(), built fresh each run; `data` is what must reach the peer."""

    kind: str
    raw: bytes

    def build(self) -> Any:
        raw = self.raw
        if self.kind == "bytes":
            return raw
        if self.kind == "bytearray":
            return bytearray(raw)
        if self.kind == "memoryview":
            return memoryview(raw)
        if self.kind == "slice":
            return memoryview(raw)[1:-1]
        if self.kind == "matrix" and len(raw) >= 2:  # two dimensions, C-contiguous
            return memoryview(bytearray(raw)).cast("B", (len(raw) // 2, 2))
        if self.kind == "matrix":
            return memoryview(bytearray(raw))
        if self.kind == "array":
            return array.array("h", raw[: len(raw) // 2 * 2])
        if self.kind == "ctypes":
            return (ctypes.c_char * len(raw)).from_buffer_copy(raw)
        if self.kind == "bytes_subclass":
            return _Bytes(raw)
        if self.kind == "str":
            return raw.decode("latin-1")
        if self.kind == "int":
            return len(raw)
        if self.kind == "list":
            return list(raw)
        if self.kind == "iterator":
            return iter(raw)
        if self.kind == "float":
            return float(len(raw))
        if self.kind == "object":
            return object()
        return None

    @property
    def data(self) -> Optional[bytes]:
        """The bytes the peer must receive, or None for a TypeError."""
        built = self.build()
        try:
            with memoryview(built) as view:
                return view.tobytes()
        except TypeError:
            return None


class _Bytes(bytes):
    pass


def write_args() -> st.SearchStrategy[WriteArg]:
    # A strided (non-contiguous) memoryview is left out: pinned by
    # test_a_strided_memoryview_is_a_type_error_...
    kinds = ["bytes", "bytearray", "memoryview", "slice", "matrix", "array", "ctypes"]
    kinds += ["bytes_subclass", "str", "int", "list", "iterator", "float", "object", "none"]
    raw = st.one_of(
        st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2]),
        st.integers(0, 70_000).map(lambda n: bytes(range(256)) * (n // 256)),
    )
    return st.builds(WriteArg, st.sampled_from(kinds), raw)
