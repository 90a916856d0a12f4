"""The destination guard: `private_reason` and the `deny_private` address filter.

Pure functions of the address text, so no sockets are needed here.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pysock._guard import deny_private, private_reason

# (address, a word the reason must contain)
REFUSED: list[tuple[str, str]] = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fd00:ec2::254", "cloud metadata"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("100.64.0.1", "shared"),
    ("100.100.100.200", "shared address used for cloud metadata"),
    ("100.127.255.254", "shared"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("0.1.2.3", "this network"),
    ("192.0.0.9", "reserved"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "reserved"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.7", "documentation"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "discard"),
    ("2001:2::1", "reserved"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("::ffff:0:7f00:1", "reserved"),  # SIIT "IPv4-translated": not unwrapped, refused.
    ("4000::1", "reserved"),  # Outside 2000::/3, not allocated for global unicast.
    ("5f00::1", "reserved"),
]

# (address, a word the reason must contain, the embedded IPv4 address)
REFUSED_WRAPPED: list[tuple[str, str, str]] = [
    ("::ffff:127.0.0.1", "IPv4-mapped", "127.0.0.1"),
    ("::ffff:7f00:1", "IPv4-mapped", "127.0.0.1"),
    ("::ffff:10.0.0.1", "IPv4-mapped", "10.0.0.1"),
    ("::ffff:169.254.169.254", "IPv4-mapped", "169.254.169.254"),
    ("::ffff:100.100.100.200", "IPv4-mapped", "100.100.100.200"),
    ("::127.0.0.1", "IPv4-compatible", "127.0.0.1"),
    ("::a9fe:a9fe", "IPv4-compatible", "169.254.169.254"),
    ("64:ff9b::7f00:1", "NAT64", "127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64", "169.254.169.254"),
    ("64:ff9b::192.168.0.1", "NAT64", "192.168.0.1"),
    ("2002:7f00:1::1", "6to4", "127.0.0.1"),
    ("2002:a9fe:a9fe::1", "6to4", "169.254.169.254"),
    ("2002:c0a8:101:1::1", "6to4", "192.168.1.1"),
]

ALLOWED: list[str] = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.167.255.255",
    "192.169.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2001:200::1",  # Just past 2001::/23: an ordinary allocation.
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8.
    "2002:808:808::1",  # 6to4 of 8.8.8.8.
]

INVALID: list[str] = [
    "not-an-ip",
    "",
    " 8.8.8.8",
    "8.8.8",
    "256.0.0.1",
    "1.2.3.4%eth0",
    "fe80::1%",
    "::ffff:127.0.0.1/128",
    "[::1]",
    "localhost",
]

ALL_VALID = [ip for ip, _ in REFUSED] + [ip for ip, _, _ in REFUSED_WRAPPED] + ALLOWED

_NAT64_WELL_KNOWN = int(IPv6Address("64:ff9b::"))


@pytest.fixture(autouse=True)
def no_leaks() -> None:
    """Override conftest's descriptor and thread leak check: these tests open neither.

    The check costs a gc.collect() and a loop round trip per test, about 50 ms,
    which would dominate this module's hundreds of parametrized cases.
    """


@pytest.mark.parametrize(("ip", "word"), REFUSED)
def test_refused_with_reason(ip: str, word: str) -> None:
    reason = private_reason(ip)
    assert isinstance(reason, str)
    assert reason
    assert word in reason


@pytest.mark.parametrize(("ip", "form", "inner"), REFUSED_WRAPPED)
def test_refused_wrapped_names_inner_address(ip: str, form: str, inner: str) -> None:
    reason = private_reason(ip)
    assert reason is not None
    assert reason.startswith(private_reason(inner) or "<inner allowed>")
    assert f"({form} {ip} -> {inner})" in reason


def test_reason_example_from_docstring() -> None:
    assert private_reason("::ffff:127.0.0.1") == (
        "a loopback address (IPv4-mapped ::ffff:127.0.0.1 -> 127.0.0.1)"
    )


@pytest.mark.parametrize("ip", ALLOWED)
def test_public_allowed(ip: str) -> None:
    assert private_reason(ip) is None


@pytest.mark.parametrize("ip", INVALID)
def test_unparsable_raises_value_error(ip: str) -> None:
    with pytest.raises(ValueError):
        private_reason(ip)
    with pytest.raises(ValueError):
        deny_private(ip, 80)


@pytest.mark.parametrize("ip", ALL_VALID)
def test_deny_private_agrees_and_ignores_port(ip: str) -> None:
    expected = private_reason(ip) is None
    for port in (0, 1, 80, 443, 65535):
        assert deny_private(ip, port) is expected


def _wrapped_forms(address: IPv4Address) -> list[str]:
    value = int(address)
    return [
        f"::ffff:{address}",
        str(IPv6Address(_NAT64_WELL_KNOWN | value)),
        str(IPv6Address((0x2002 << 112) | (value << 80) | 1)),
    ]


@given(st.ip_addresses(v=4))
def test_wrapping_never_changes_the_verdict(address: IPv4Address) -> None:
    expected = deny_private(str(address), 443)
    for wrapped in _wrapped_forms(address):
        assert deny_private(wrapped, 443) is expected, wrapped


@given(st.ip_addresses(v=4))
def test_ipv4_compatible_form_judged_by_inner_address(address: IPv4Address) -> None:
    # :: and ::1 are IPv6's own unspecified and loopback; both are refused anyway.
    assert deny_private(f"::{address}", 443) is deny_private(str(address), 443)


@given(st.ip_addresses(v=6))
def test_any_ipv6_address_gets_a_verdict(address: IPv6Address) -> None:
    reason = private_reason(str(address))
    assert reason is None or (isinstance(reason, str) and reason)
    if reason is None:  # Only global unicast, or a wrapper around a public IPv4 address.
        upper = int(address) >> 32
        assert int(address) >> 125 == 0b001 or upper in (0, 0xFFFF, _NAT64_WELL_KNOWN >> 32)
