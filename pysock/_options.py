"""`SocketOptions`: the keys `connect()` accepts, their defaults and their validation.

Everything is checked at the call, before any I/O, so a typo never turns into
a half-open connection. Unknown keys are a `TypeError` naming the key, and a
camelCase key from the Workers API is answered with its snake_case name.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any, Final, Mapping, Optional, Sequence

from typing_extensions import Literal, TypedDict

from ._address import check_name

__all__ = ["Options", "SecureTransport", "SocketOptions", "merge_options"]

SecureTransport = Literal["off", "on", "starttls"]
_SECURE_TRANSPORTS: tuple[str, ...] = ("off", "on", "starttls")


class SocketOptions(TypedDict, total=False):
    """Options of `connect()`; every key is optional."""

    secure_transport: SecureTransport
    allow_half_open: bool
    timeout: Optional[float]
    connect_timeout: Optional[float]
    tls_context: Optional[ssl.SSLContext]
    expected_server_hostname: Optional[str]
    alpn_protocols: Optional[Sequence[str]]


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
    raise TypeError(f"unknown option {key!r}")


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
    timeout = check_timeout("timeout", raw.get("timeout"))
    connect_timeout = check_timeout("connect_timeout", raw.get("connect_timeout", timeout))
    context, hostname, alpn = check_tls_options(
        raw.get("tls_context"), raw.get("expected_server_hostname"), raw.get("alpn_protocols")
    )
    return Options(transport, half_open, timeout, connect_timeout, context, hostname, alpn)  # type: ignore[arg-type]


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
