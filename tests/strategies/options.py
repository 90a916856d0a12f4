"""The options model (docs/api.md, "SocketOptions") and the strategies that draw options.

`options_verdict` says which argument errors options allow, `connect_verdict`
which a whole `connect()` call allows, and `tls_verdict` whether a handshake
with the test's TLS peer must succeed.
"""

from __future__ import annotations

import collections
import ipaddress
import ssl
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

from hypothesis import strategies as st

from .addresses import Verdict, host_errors

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

# Timeouts past ~24.8 days once overflowed poll() and killed the selector thread
# (fixed in ff7ae7c; test_huge_timeout_* in test_property_regressions.py): they are drawn too.
HUGE_TIMEOUTS: Final = (2.2e6, 1e8, 1e300, float("inf"), 10**30)

# An int too big for a float (test_a_timeout_too_big_for_a_float_is_an_argument_error
# pins it down): ints stay below.
_INTS: Final = st.integers(-(10**300), 10**300)

# Below this a connect or read deadline may pass on a loaded machine: a
# SocketTimeout is then an allowed outcome too.
SHORT_TIMEOUT: Final = 2.0


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


# -- strategies: valid options only --------------------------------------------------------


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
