"""TLS peers: trustme certificates and stdlib TLS handlers for `Server`."""

from __future__ import annotations

import datetime
import socket
import ssl
from pathlib import Path
from typing import Callable, Optional

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..helpers import recv_all


def server_context(leaf: trustme.LeafCert, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    context.minimum_version = context.maximum_version = version
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()  # On Python 3.9, OP_IGNORE_UNEXPECTED_EOF set.
    ca.configure_trust(context)
    return context


def wrap(conn: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
    """Server side of a handshake on an accepted socket (blocking, with its timeout)."""
    return context.wrap_socket(conn, server_side=True)


def close_cleanly(tls: ssl.SSLSocket) -> None:
    """Send close_notify without waiting for the peer's, then close TCP (as nginx does)."""
    tls.settimeout(0)
    try:
        tls.unwrap()
    except (ssl.SSLWantReadError, ssl.SSLError, OSError):
        pass  # SSLWantReadError: close_notify sent, the peer's is not awaited.
    tls.close()


def tls_echo(context: ssl.SSLContext) -> object:
    def handler(conn: socket.socket) -> None:
        tls = wrap(conn, context)
        while data := tls.recv(65536):
            tls.sendall(data)
        close_cleanly(tls)

    return handler


class RecordingTlsServerSide:
    """A TLS server over memory BIOs that records every raw byte the client sends.

    Used to prove that nothing but TLS records reach the wire when the client's
    handshake fails.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.raw = bytearray()
        self.handshake_error: BaseException | None = None

    def __call__(self, conn: socket.socket) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = self.context.wrap_bio(incoming, outgoing, server_side=True)
        while self.handshake_error is None:
            try:
                sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                self.handshake_error = exc
            conn.sendall(outgoing.read())
            data = conn.recv(65536)
            if not data:
                return
            self.raw += data
            incoming.write(data)
        conn.sendall(outgoing.read())
        self.raw += recv_all(conn)


def tls_record_types(raw: bytes | bytearray) -> list[int]:
    """The content type of each TLS record in `raw`; fails unless `raw` is whole records."""
    types = []
    offset = 0
    while offset < len(raw):
        header = raw[offset : offset + 5]
        assert len(header) == 5, f"a truncated record header at byte {offset}"
        content_type, major, length = header[0], header[1], int.from_bytes(header[3:5], "big")
        assert content_type in (20, 21, 22, 23) and major == 3, f"not TLS at byte {offset}"
        assert offset + 5 + length <= len(raw), f"a truncated record at byte {offset}"
        types.append(content_type)
        offset += 5 + length
    return types


def quiet_tls_echo(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    """A TLS echo that ends without an error when the client refuses the handshake."""

    def handler(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                while data := tls.recv(65536):
                    tls.sendall(data)
                tls.unwrap().close()
        except (OSError, ssl.SSLError):
            pass  # the client refused us, as it should

    return handler


_issued: dict[tuple[int, tuple[str, ...]], trustme.LeafCert] = {}


def issued_context(ca: trustme.CA, identities: tuple[str, ...]) -> ssl.SSLContext:
    """A TLS 1.3 server context for a certificate naming `identities` (issued once)."""
    leaf = _issued.get((id(ca), identities))
    if leaf is None:
        leaf = _issued[id(ca), identities] = ca.issue_cert(*identities)
    return server_context(leaf, ssl.TLSVersion.TLSv1_3)


def custom_leaf(
    ca: trustme.CA, directory: Path, *, dns: Optional[str] = None, common_name: str = "x"
) -> ssl.SSLContext:
    """A server context whose certificate trustme cannot make: a DNS SAN that holds an
    IP address string, or no SAN at all. Built with cryptography (trustme's own
    backend) and signed by the trustme CA."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if dns is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    cert_path, key_path = directory / "leaf.pem", directory / "leaf.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
