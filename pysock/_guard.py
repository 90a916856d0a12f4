"""The destination guard: refuse non-public addresses for code that dials where users point it.

Theory of operation
-------------------
A server that connects to a host its users name (webhooks, URL previews,
"import from URL", mail relays) can be turned against its own network: a user
names ``localhost``, ``10.0.0.5`` or the cloud metadata service at
``169.254.169.254`` (``100.100.100.200`` on Alibaba Cloud, inside the CGNAT
block) and the server fetches it for them. This is server-side request forgery
(SSRF, CWE-918). Checking the *hostname* first and connecting later leaves a
DNS-rebinding gap: the name may resolve to a public address for the check and
to ``127.0.0.1`` for the connection. So `deny_private` is an ``address_filter``:
pysock calls it with each resolved numeric address just before connecting to
that very address, and the checked address is the connected address.

An address is refused if it lies in a block of the IANA special-purpose
registries that is not plain public unicast (RFC 6890 and its updates):
unspecified, "this network", loopback, private (RFC 1918, unique local
RFC 4193), shared address space / CGNAT (RFC 6598), link-local (RFC 3927,
RFC 4291), multicast, documentation (RFC 5737, RFC 3849, RFC 9637),
benchmarking (RFC 2544, RFC 5180), discard-only (RFC 6666), the IETF protocol
assignment blocks ``192.0.0.0/24`` and ``2001::/23``, the deprecated 6to4
relay anycast (RFC 7526) and site-local (RFC 3879) blocks, the reserved
``240.0.0.0/4`` and broadcast, and every IPv6 address outside ``2000::/3``,
the only block IANA allocates for global unicast. Where the registry is
unsure the guard refuses: ``192.0.0.9`` (PCP anycast) is globally reachable
but refused with the rest of its block.

Some IPv6 addresses carry an IPv4 address that a kernel, translator or tunnel
may deliver to, so the guard unwraps them and judges the inner IPv4 address:

- IPv4-mapped ``::ffff:a.b.c.d`` (RFC 4291 section 2.5.5.2): a dual-stack
  socket connects to ``a.b.c.d`` itself.
- IPv4-compatible ``::a.b.c.d`` (RFC 4291 section 2.5.5.1, deprecated): the
  whole ``::/96`` except ``::`` and ``::1``.
- NAT64 well-known prefix ``64:ff9b::/96`` (RFC 6052): the translator connects
  to the last 32 bits. The local-use prefix ``64:ff9b:1::/48`` (RFC 8215) may
  embed IPv4 anywhere, so it is refused outright.
- 6to4 ``2002:AABB:CCDD::/48`` (RFC 3056): bits 16..47 are the IPv4 relay.
- Teredo ``2001::/32`` (RFC 4380) embeds an obfuscated IPv4 address; it is
  refused outright.

The tables below are written out instead of using ``ipaddress``'s
``is_private`` / ``is_global`` flags because those flags differ between the
interpreters pysock supports: CVE-2024-4032 rewrote them in 2024 maintenance
releases, and whether ``::ffff:127.0.0.1`` counts as loopback depends on the
version (False on 3.12.1, True on 3.13.0). A security check must not depend on
the interpreter, and the tables are also where the guard's judgement shows.
"""

from __future__ import annotations

import functools
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final, Optional, Union

__all__ = ["deny_private", "private_reason"]

_Network = Union[IPv4Network, IPv6Network]
# One bucket per prefix length, longest first: (bits to shift away, {prefix: reason}).
_Buckets = tuple[tuple[int, dict[int, str]], ...]

_MASK32: Final = 0xFFFFFFFF
_MAPPED_PREFIX: Final = 0xFFFF  # ::ffff:0:0/96 shifted right by 32 bits.
_NAT64_PREFIX: Final = int(IPv6Address("64:ff9b::")) >> 32  # 64:ff9b::/96, RFC 6052.
_SIX_TO_FOUR_PREFIX: Final = 0x2002  # 2002::/16, RFC 3056.
_GLOBAL_UNICAST_V6: Final = 0b001  # 2000::/3: the top three bits, RFC 4291 section 2.4.

_PRIVATE: Final = "a private address"
_RESERVED: Final = "a reserved address"
_DOCUMENTATION: Final = "a documentation address"
_PROTOCOL_ASSIGNMENTS: Final = "a reserved address (IETF protocol assignments)"

_V4_TABLE: Final[tuple[tuple[IPv4Network, str], ...]] = tuple(
    (IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/32", "an unspecified address"),
        ("0.0.0.0/8", "a 'this network' address"),  # RFC 791, RFC 6890.
        ("10.0.0.0/8", _PRIVATE),  # RFC 1918.
        ("100.64.0.0/10", "a shared address (carrier-grade NAT)"),  # RFC 6598.
        ("100.100.100.200/32", "a shared address used for cloud metadata"),  # Alibaba Cloud.
        ("127.0.0.0/8", "a loopback address"),  # RFC 1122.
        ("169.254.169.254/32", "a link-local address used for cloud metadata"),  # AWS, GCP, Azure.
        ("169.254.0.0/16", "a link-local address"),  # RFC 3927.
        ("172.16.0.0/12", _PRIVATE),  # RFC 1918.
        ("192.0.0.0/24", _PROTOCOL_ASSIGNMENTS),  # RFC 6890.
        ("192.0.2.0/24", _DOCUMENTATION),  # RFC 5737, TEST-NET-1.
        ("192.88.99.0/24", "a reserved address (deprecated 6to4 relay anycast)"),  # RFC 7526.
        ("192.168.0.0/16", _PRIVATE),  # RFC 1918.
        ("198.18.0.0/15", "a benchmarking address"),  # RFC 2544.
        ("198.51.100.0/24", _DOCUMENTATION),  # RFC 5737, TEST-NET-2.
        ("203.0.113.0/24", _DOCUMENTATION),  # RFC 5737, TEST-NET-3.
        ("224.0.0.0/4", "a multicast address"),  # RFC 5771.
        ("240.0.0.0/4", _RESERVED),  # RFC 1112 section 4.
        ("255.255.255.255/32", "the broadcast address"),  # RFC 919.
    )
)

_V6_TABLE: Final[tuple[tuple[IPv6Network, str], ...]] = tuple(
    (IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "an unspecified address"),  # RFC 4291 section 2.5.2.
        ("::1/128", "a loopback address"),  # RFC 4291 section 2.5.3.
        ("64:ff9b:1::/48", "a reserved address (local-use NAT64)"),  # RFC 8215.
        ("100::/64", "a discard-only address"),  # RFC 6666.
        ("2001::/32", "a Teredo address"),  # RFC 4380.
        ("2001::/23", _PROTOCOL_ASSIGNMENTS),  # RFC 2928.
        ("2001:db8::/32", _DOCUMENTATION),  # RFC 3849.
        ("3fff::/20", _DOCUMENTATION),  # RFC 9637.
        ("fc00::/7", _PRIVATE),  # RFC 4193, unique local.
        ("fd00:ec2::254/128", "a private address used for cloud metadata"),  # AWS IMDS.
        ("fe80::/10", "a link-local address"),  # RFC 4291 section 2.5.6.
        ("fec0::/10", "a deprecated site-local address"),  # RFC 3879.
        ("ff00::/8", "a multicast address"),  # RFC 4291 section 2.7.
    )
)


def _buckets(table: tuple[tuple[_Network, str], ...]) -> _Buckets:
    """Index `table` by prefix length so a lookup is a few dict probes, longest match first."""
    by_length: dict[int, dict[int, str]] = {}
    for network, reason in table:
        shift = network.max_prefixlen - network.prefixlen
        by_length.setdefault(shift, {})[int(network.network_address) >> shift] = reason
    return tuple(sorted(by_length.items()))


_V4_BUCKETS: Final = _buckets(_V4_TABLE)
_V6_BUCKETS: Final = _buckets(_V6_TABLE)


def _lookup(buckets: _Buckets, value: int) -> Optional[str]:
    for shift, prefixes in buckets:
        reason = prefixes.get(value >> shift)
        if reason is not None:
            return reason
    return None


def _embedded_ipv4(value: int) -> Optional[tuple[str, int]]:
    """Return ``(form, inner IPv4 as int)`` if the IPv6 address `value` wraps an IPv4 one."""
    upper = value >> 32
    if upper == _MAPPED_PREFIX:
        return "IPv4-mapped", value & _MASK32
    if upper == 0 and value > 1:  # :: and ::1 are IPv6's own unspecified and loopback.
        return "IPv4-compatible", value
    if upper == _NAT64_PREFIX:
        return "NAT64", value & _MASK32
    if value >> 112 == _SIX_TO_FOUR_PREFIX:
        return "6to4", (value >> 80) & _MASK32
    return None


def _ipv6_reason(ip: str) -> Optional[str]:
    value = int(IPv6Address(ip))  # A zone id ("fe80::1%eth0") is parsed and ignored.
    embedded = _embedded_ipv4(value)
    if embedded is not None:
        form, inner = embedded
        reason = _lookup(_V4_BUCKETS, inner)
        if reason is None:
            return None
        return f"{reason} ({form} {ip} -> {IPv4Address(inner)})"
    reason = _lookup(_V6_BUCKETS, value)
    if reason is None and value >> 125 != _GLOBAL_UNICAST_V6:
        return _RESERVED  # Not yet allocated for global unicast (RFC 4291 section 2.4).
    return reason


def private_reason(ip: str) -> Optional[str]:
    """Say why `ip` is not a public unicast address, or return None if it is.

    IPv4 addresses embedded in IPv6 ones (IPv4-mapped, IPv4-compatible, NAT64
    ``64:ff9b::/96``, 6to4) are unwrapped and the inner address is judged; the
    reason then names both, e.g.
    ``"a loopback address (IPv4-mapped ::ffff:127.0.0.1 -> 127.0.0.1)"``.

    Args:
        ip: a numeric IPv4 or IPv6 address; an IPv6 zone id (``fe80::1%eth0``)
            is accepted and ignored.

    Returns:
        None for a public unicast address, else a short reason starting with
        an article, such as ``"a link-local address"``.

    Raises:
        ValueError: `ip` is not a numeric IP address (``ipaddress``'s
            ``AddressValueError`` is a subclass).
    """
    return _cached_reason(ip)


# Parsing with ipaddress is most of the cost (about 2 us for IPv4, 3 us for IPv6)
# and servers connect to the same few addresses again and again; a hit is ~0.1 us.
# The verdict is a pure function of the text, and the size bounds the memory an
# attacker choosing addresses can pin. Exceptions (ValueError) are not cached.
@functools.lru_cache(maxsize=1024)
def _cached_reason(ip: str) -> Optional[str]:
    if ":" in ip:
        return _ipv6_reason(ip)
    return _lookup(_V4_BUCKETS, int(IPv4Address(ip)))


def deny_private(ip: str, port: int) -> bool:
    """Allow only public unicast destinations: the ready-made ``address_filter``.

    Use it as ``connect(address, address_filter=deny_private)`` in code that
    connects where its users point it. pysock calls the filter with each
    resolved address just before connecting to it, so the checked address is
    the connected address and DNS rebinding cannot slip a private address in
    between. See `private_reason` for what is refused and why.

    Args:
        ip: the numeric address about to be connected to.
        port: the destination port; ignored, since a private host is off
            limits on every port.

    Returns:
        True if `ip` is a public unicast address (the connection may proceed),
        False if it is refused.

    Raises:
        ValueError: `ip` is not a numeric IP address.
    """
    del port  # Deliberately unused; the address_filter signature includes it.
    return private_reason(ip) is None
