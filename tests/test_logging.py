"""The `pysock` logger: DEBUG lines for connects, TLS sessions and endings; silent otherwise."""

from __future__ import annotations

import logging
import ssl
from typing import Callable

import pytest

from pysock import ConnectError, connect

from .peers.tcp import Server
from .peers.tls import tls_echo

TIMEOUT = 10
SECRET = b"do-not-log-this-payload"


def test_a_tls_session_at_debug(
    serve: Callable[..., Server],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(tls_echo(server_ctx))
    with caplog.at_level(logging.DEBUG, logger="pysock"):
        with connect(server.address, secure_transport="on", tls_context=client_ctx) as sock:
            sock.writable.write(SECRET)
            assert sock.readable.readexactly(len(SECRET)) == SECRET
            version = sock.tls.version if sock.tls else ""
        assert sock.closed.result(TIMEOUT) is None
    messages = [record.getMessage() for record in caplog.records if record.name == "pysock"]
    text = "\n".join(messages)
    assert f"{server.address}: connecting to {server.address}" in text
    assert f"{server.address}: TLS {version}, " in text
    assert f"{server.address}: open, 127.0.0.1:" in text
    assert f"{server.address}: open -> closed (close)" in text
    assert SECRET.decode() not in text and "BEGIN CERTIFICATE" not in text
    assert all(record.levelno == logging.DEBUG for record in caplog.records)


def test_a_refused_connect_at_debug(unused_port: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pysock"):
        sock = connect(f"127.0.0.1:{unused_port}")
        assert isinstance(sock.opened.exception(TIMEOUT), ConnectError)
        sock.close()
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert f"connect attempt to 127.0.0.1:{unused_port} failed: [Errno 111]" in text
    assert "connecting -> broken (open failed): cannot connect to" in text


def test_silent_by_default(echo_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), connect(echo_server.address) as sock:
        sock.writable.write(b"x")
        assert sock.readable.read1(1) == b"x"
    assert [r for r in caplog.records if r.name.startswith("pysock")] == []
