"""TLS material for the TLS cases: a trustme CA and a leaf for 127.0.0.1, TLS 1.3 pinned."""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

TLS_HOST = "127.0.0.1"


@dataclass(frozen=True)
class TLSMaterial:
    """PEM bytes, picklable so that a spawned peer process can load them."""

    ca_pem: bytes
    key_and_chain_pem: bytes


def make_material() -> TLSMaterial:
    """A fresh CA (trustme) and a certificate for 127.0.0.1 signed by it."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert(TLS_HOST)
    return TLSMaterial(ca.cert_pem.bytes(), leaf.private_key_and_cert_chain_pem.bytes())


def _pin_tls13(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    return context


def server_context(material: TLSMaterial) -> ssl.SSLContext:
    """The peer's context: the leaf certificate, TLS 1.3 only."""
    context = _pin_tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(material.key_and_chain_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


def client_context(material: TLSMaterial) -> ssl.SSLContext:
    """A verifying client context that trusts only the benchmark's CA, TLS 1.3 only."""
    context = _pin_tls13(ssl.create_default_context(cadata=material.ca_pem.decode("ascii")))
    return context
