"""Every argument is checked at the call, before any I/O.

A mistake raises a TypeError or ValueError where it was made, with a message
that names the fix, never later from the background thread, and nothing is
opened.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Callable, Literal

import pytest

import pysock
from pysock import connect

from .peers.tcp import Server

TIMEOUT = 10

BAD_TYPES: list[tuple[Any, dict[str, Any], str]] = [
    (80, {}, "address must be"),
    (["localhost", 80], {}, "address must be"),
    ({"hostname": "localhost", "port": "80"}, {}, "port must be an int"),
    (("localhost", 80.0), {}, "port must be an int"),
    (("localhost", None), {}, "port must be an int"),
    (("localhost", True), {}, "port must be an int"),
    ({"hostname": 1, "port": 80}, {}, "hostname must be a str"),
    ("localhost:80", {"timeout": "5"}, "timeout must be a number"),
    ("localhost:80", {"timeout": True}, "timeout must be a number"),
    ("localhost:80", {"allow_half_open": 1}, "allow_half_open must be a bool"),
    ("localhost:80", {"secure_transport": True}, "secure_transport must be a str"),
    ("localhost:80", {"tls_context": object()}, "tls_context must be an ssl.SSLContext"),
    ("localhost:80", {"alpn_protocols": "h2"}, "alpn_protocols must be a sequence"),
    ("localhost:80", {"alpn_protocols": [b"h2"]}, "alpn_protocols items must be str"),
    ("localhost:80", {"expected_server_hostname": 5}, "expected_server_hostname must be"),
    ("localhost:80", {"nodelay": True}, "unknown option 'nodelay'"),
    ("localhost:80", {"secureTransport": "on"}, "pysock spells it 'secure_transport'"),
    ("localhost:80", {"allowHalfOpen": True}, "pysock spells it 'allow_half_open'"),
]

BAD_VALUES: list[tuple[Any, dict[str, Any], str]] = [
    ({"port": 80}, {}, "missing 'hostname'"),
    ({"hostname": "localhost"}, {}, "missing 'port'"),
    ({"hostname": "", "port": 80}, {}, "hostname is empty"),
    ("localhost", {}, "missing its port"),
    (":80", {}, "hostname is empty"),
    ("localhost:", {}, "malformed port"),
    ("localhost:http", {}, "malformed port"),
    ("localhost:0", {}, "outside 1..65535"),
    ("localhost:65536", {}, "outside 1..65535"),
    (("localhost", -1), {}, "outside 1..65535"),
    ("a" * 254 + ":80", {}, "longer than 253"),
    ("exa mple.com:80", {}, "forbidden character"),
    ("example.com/x:80", {}, "forbidden character"),
    ("user@example.com:80", {}, "forbidden character"),
    ("exa\x00mple.com:80", {}, "forbidden character"),
    ("exa\tmple.com:80", {}, "forbidden character"),
    ("::1:80", {}, "must be bracketed"),
    ("[::1:80", {}, "malformed address"),
    ("[::1]80", {}, "malformed address"),
    ("[example.com]:80", {}, "not an IPv6 literal"),
    (("a", 1, 2), {}, "must be (host, port)"),
    (("example.com:80", 80), {}, "holds ':' but is not an IPv6 address"),
    ({"hostname": "a" * 64 + ":x", "port": 80}, {}, "holds ':' but is not an IPv6 address"),
    ({"hostname": ":::", "port": 80}, {}, "holds ':' but is not an IPv6 address"),
    (("::1%", 80), {}, "holds ':' but is not an IPv6 address"),
    (("[::1]", 80), {}, "without brackets"),
    ({"hostname": "[example.com]", "port": 80}, {}, "brackets hold an IPv6 literal"),
    ("localhost:80", {"timeout": -1}, "timeout must be >= 0"),
    ("localhost:80", {"connect_timeout": -0.5}, "connect_timeout must be >= 0"),
    ("localhost:80", {"timeout": float("nan")}, "timeout must be >= 0"),
    ("localhost:80", {"secure_transport": "yes"}, "secure_transport must be one of"),
    ("localhost:80", {"expected_server_hostname": ""}, "expected_server_hostname is empty"),
    ("localhost:80", {"alpn_protocols": [""]}, "must be 1..255 bytes"),
]


@pytest.mark.parametrize(("address", "options", "message"), BAD_TYPES)
def test_wrong_types_are_type_errors(address: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        connect(address, **options)


@pytest.mark.parametrize(("address", "options", "message"), BAD_VALUES)
def test_bad_values_are_value_errors(address: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        connect(address, **options)
    assert message in str(info.value)
    assert not isinstance(info.value, pysock.PysockError)


def test_a_key_given_both_ways_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="given both"):
        connect("localhost:80", {"timeout": 1}, timeout=2)


def test_options_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="options must be a SocketOptions dict"):
        connect("localhost:80", ["timeout"])  # type: ignore[arg-type]


def test_alpn_with_own_context_is_a_value_error() -> None:
    context = ssl.create_default_context()
    with pytest.raises(ValueError, match="set_alpn_protocols"):
        connect("localhost:80", tls_context=context, alpn_protocols=["h2"])
    assert context.get_ca_certs() == context.get_ca_certs()  # untouched and still usable


@pytest.mark.parametrize("secure_transport", ["on", "starttls"])
def test_a_server_context_is_a_value_error(secure_transport: Literal["on", "starttls"]) -> None:
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ValueError, match="server context"):
        connect("localhost:80", secure_transport=secure_transport, tls_context=server_side)


def test_argument_errors_open_nothing(echo_server: Server) -> None:
    # The leak fixture checks no descriptor or thread was created; also no connection:
    with pytest.raises(ValueError):
        connect(("127.0.0.1", echo_server.port), timeout=-1)
    assert echo_server.accepted == []


def test_options_dict_and_keywords_combine(echo_server: Server) -> None:
    with connect(echo_server.address, {"timeout": 5}, allow_half_open=True) as sock:
        assert sock.opened.result(5).remote_address == echo_server.address


# -- errors that point at the fix -------------------------------------------------------

# The calls below are the mistakes themselves: untyped, as a script's would be.
uc: Any = connect


@pytest.mark.parametrize(
    ("call", "error", "suggestion"),
    [
        (lambda: uc("localhost", 9001), TypeError, "connect('localhost:9001')"),
        (lambda: uc("localhost", 9001), TypeError, "connect(('localhost', 9001))"),
        (lambda: uc("http://localhost:9001"), ValueError, "connect('localhost:9001')"),
        (lambda: uc("http://example.com/x"), ValueError, "connect('example.com:80')"),
        (
            lambda: uc("https://example.com/x"),
            ValueError,
            "connect('example.com:443', secure_transport='on')",
        ),
        (lambda: uc({"host": "localhost", "port": 1}), TypeError, "'hostname'"),
        (lambda: uc("localhost:1", tls=True), TypeError, "secure_transport='on'"),
        (lambda: uc("localhost:1", ssl=True), TypeError, "secure_transport='on'"),
        (lambda: uc("localhost:1", ssl_context=None), TypeError, "tls_context"),
        (lambda: uc("localhost:1", server_hostname="x"), TypeError, "expected_server_host"),
        (lambda: uc("localhost:1", secureTransport="on"), TypeError, "'secure_transport'"),
    ],
)
def test_a_usual_mistake_is_answered_with_what_to_write(
    call: Callable[[], object], error: type[Exception], suggestion: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert suggestion in str(info.value)
    assert "IPv6" not in str(info.value)  # A URL used to be blamed on brackets.


def test_the_workers_spelling_of_an_ipv6_hostname_connects() -> None:
    """Workers code must write {"hostname": "[2001:db8::1]"}; it means the bare literal."""
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        with connect({"hostname": "[::1]", "port": port}) as sock:
            conn, _ = server.accept()
            with conn:
                info = sock.opened.result(TIMEOUT)
                assert info.remote_address == f"[::1]:{port}"
                assert repr(sock).startswith(f"<pysock.Socket [::1]:{port} ")


def test_ignore_unexpected_eof_needs_tls() -> None:
    with pytest.raises(ValueError, match="secure_transport"):
        connect("localhost:1", ignore_unexpected_eof=True)
    with pytest.raises(TypeError, match="ignore_unexpected_eof must be a bool"):
        uc("localhost:1", secure_transport="on", ignore_unexpected_eof=1)
