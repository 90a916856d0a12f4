"""Security promises under attack: the certificate and the hostname are checked by
default, IP literals against IP SANs only, and no forged expected_server_hostname
disables the check (the hostile peers: tests/peers/hostile.py).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Final

import pytest
import trustme

from pysock import TLSError, connect

from .helpers import finalizer_problems
from .helpers import raised_by as _raised_by
from .helpers import recv_all_or_reset as _recv_all_or_reset
from .peers.hostile import WAIT, assert_clean_message
from .peers.hostile import negotiate as _negotiate
from .peers.hostile import preamble as _preamble
from .peers.tcp import Server
from .peers.tls import custom_leaf as _custom_leaf
from .peers.tls import issued_context as _issued_context
from .peers.tls import quiet_tls_echo as _quiet_tls_echo

REPO: Final = Path(__file__).resolve().parents[1]


# -- certificates and hostnames, IP literals included ---------------------------------------


# (host connected to, the certificate: identities or a custom kind, handshake must succeed)
IP_CASES: Final = [
    ("127.0.0.1", ("127.0.0.1",), True),
    ("127.0.0.1", ("localhost",), False),
    ("127.0.0.1", ("localhost", "::1"), False),
    ("127.0.0.1", "dns-san:127.0.0.1", False),
    ("127.0.0.1", "cn-only:127.0.0.1", False),
    ("::1", ("::1",), True),
    ("::1", ("localhost", "127.0.0.1"), False),
    ("::1", "dns-san:::1", False),
]


def _leaf_context(ca: trustme.CA, certificate: Any, directory: Path) -> ssl.SSLContext:
    if isinstance(certificate, tuple):
        return _issued_context(ca, certificate)
    kind, _, name = certificate.partition(":")
    if kind == "dns-san":
        return _custom_leaf(ca, directory, dns=name)
    return _custom_leaf(ca, directory, common_name=name)


@pytest.mark.parametrize(("host", "certificate", "succeeds"), IP_CASES)
def test_an_ip_literal_is_checked_against_ip_sans_only(
    serve: Callable[..., Server],
    ca: trustme.CA,
    client_ctx: ssl.SSLContext,
    tmp_path: Path,
    host: str,
    certificate: Any,
    succeeds: bool,
) -> None:
    server = serve(_quiet_tls_echo(_leaf_context(ca, certificate, tmp_path)), host=host)
    with connect(
        server.address, secure_transport="on", tls_context=client_ctx, connect_timeout=WAIT
    ) as sock:
        error = sock.opened.exception(WAIT)
        if succeeds:
            assert error is None, error
            sock.writable.write(b"ping")
            assert sock.readable.readexactly(4) == b"ping"
        else:
            assert isinstance(error, TLSError), repr(error)
            assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
            assert_clean_message(error, server.address)


_DEFAULTS_CHILD = """
    import json, sys
    from pysock import TLSError, connect
    outcomes = []
    for address in json.loads(sys.argv[1]):
        with connect(address, secure_transport="on", connect_timeout=10) as sock:
            error = sock.opened.exception(10)
            outcomes.append(type(error).__name__ if error else "ok")
            if error is None:
                sock.writable.write(b"ping")
                assert sock.readable.readexactly(4) == b"ping"
    print(json.dumps(outcomes))
"""


def test_the_default_context_checks_ip_literals_too(
    serve: Callable[..., Server], ca: trustme.CA, tmp_path: Path
) -> None:
    """With tls_context left out, a trusted CA (SSL_CERT_FILE) is not enough: the IP
    must be in an IP SAN. Runs in a child: pysock's default context is per process."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    servers = []
    for index, (host, certificate, _) in enumerate(IP_CASES):
        directory = tmp_path / str(index)
        directory.mkdir()
        servers.append(
            serve(_quiet_tls_echo(_leaf_context(ca, certificate, directory)), host=host)
        )
    env = {**os.environ, "SSL_CERT_FILE": str(ca_file), "SSL_CERT_DIR": str(tmp_path)}
    addresses = json.dumps([server.address for server in servers])
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_DEFAULTS_CHILD), addresses],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = ["ok" if succeeds else "TLSError" for _, _, succeeds in IP_CASES]
    assert json.loads(result.stdout) == expected


# -- a forged expected_server_hostname never disables checking ------------------------------

# (certificate identities, the forged name, must the handshake succeed)
FORGED: Final = [
    (("localhost",), "other.example", False),
    (("localhost",), "127.0.0.1", False),
    (("localhost",), "::1", False),
    (("localhost",), "*", False),
    (("localhost",), "*.localhost", False),
    (("localhost",), "local*", False),
    (("localhost",), "localhost.evil.example", False),
    (("localhost",), "evil-localhost", False),
    (("localhost",), "LOCALHOST", True),  # names are case-insensitive: the control case
    (("a.example.org",), "*.example.org", False),
    (("a.example.org",), "*.*.org", False),
    (("*.example.org",), "example.org", False),
    (("*.example.org",), "a.b.example.org", False),
    (("*.example.org",), "a.example.org", True),
    (("127.0.0.1",), "127.0.0.2", False),
    (("127.0.0.1",), "::ffff:127.0.0.1", False),
    (("127.0.0.1",), "127.1", False),
    (("127.0.0.1",), "2130706433", False),
    (("127.0.0.1",), "0x7f.0.0.1", False),
    (("127.0.0.1",), "localhost", False),
]


@pytest.mark.parametrize("mode", ["on", "starttls"])
@pytest.mark.parametrize(("identities", "forged", "succeeds"), FORGED)
def test_a_forged_expected_server_hostname_never_passes(
    serve: Callable[..., Server],
    ca: trustme.CA,
    client_ctx: ssl.SSLContext,
    identities: tuple[str, ...],
    forged: str,
    succeeds: bool,
    mode: str,
) -> None:
    tls_echo = _quiet_tls_echo(_issued_context(ca, identities))

    def handler(conn: socket.socket) -> None:
        if mode == "starttls":
            _preamble(conn)
        tls_echo(conn)

    server = serve(handler)
    if mode == "on":
        sock = connect(
            server.address,
            secure_transport="on",
            tls_context=client_ctx,
            expected_server_hostname=forged,
        )
    else:
        plain = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
        _negotiate(plain)
        sock = plain.start_tls(expected_server_hostname=forged)
        plain.close()
    with sock:
        error = sock.opened.exception(WAIT)
        if succeeds:
            assert error is None, error
        else:
            assert isinstance(error, TLSError), f"{forged!r} against {identities}: {error!r}"
            assert_clean_message(error, server.address)


@pytest.mark.parametrize("mode", ["on", "starttls"])
def test_an_empty_expected_server_hostname_is_a_value_error(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext, mode: str
) -> None:
    if mode == "on":
        with pytest.raises(ValueError, match="expected_server_hostname"):
            connect("127.0.0.1:1", secure_transport="on", expected_server_hostname="")
        return

    def handler(conn: socket.socket) -> None:
        _preamble(conn)
        _recv_all_or_reset(conn)

    server = serve(handler)
    with connect(server.address, secure_transport="starttls", tls_context=client_ctx) as plain:
        _negotiate(plain)
        with pytest.raises(ValueError, match="expected_server_hostname"):
            plain.start_tls(expected_server_hostname="")
        assert not plain.upgraded
        plain.writable.write(b"still plaintext, still ours\r\n")  # nothing was taken over


@pytest.mark.parametrize("forged", ["localhost\x00.evil.example", ".localhost", "ä..example"])
def test_start_tls_with_a_name_ssl_refuses_leaves_the_socket_untouched(
    serve: Callable[..., Server], client_ctx: ssl.SSLContext, forged: str
) -> None:
    def handler(conn: socket.socket) -> None:
        _preamble(conn)
        _recv_all_or_reset(conn)

    server = serve(handler)
    starttls = connect(server.address, secure_transport="starttls", tls_context=client_ctx)
    with finalizer_problems() as problems, starttls as plain:
        _negotiate(plain)
        raised = _raised_by(plain.start_tls, expected_server_hostname=forged)
        usable = _raised_by(plain.writable.write, b"still ours\r\n")
    assert raised is not None and issubclass(raised, ValueError), raised
    assert usable is None and not plain.upgraded, usable
    assert problems == []


@pytest.mark.parametrize("forged", ["evil\x1b[31m.example", "evil\r\nInjected: line", "a b"])
def test_expected_server_hostname_with_control_characters_is_a_value_error(
    serve: Callable[..., Server], ca: trustme.CA, client_ctx: ssl.SSLContext, forged: str
) -> None:
    server = serve(_quiet_tls_echo(_issued_context(ca, ("localhost",))))
    try:
        sock = connect(
            server.address,
            secure_transport="on",
            tls_context=client_ctx,
            expected_server_hostname=forged,
        )
    except ValueError:
        return
    with sock:
        error = sock.opened.exception(WAIT)
    assert error is not None
    assert_clean_message(error, server.address)
    raise AssertionError(f"{forged!r} was accepted (and sent as SNI)")
