"""nginx with TLS and HTTP/2 on loopback, for the HTTP/2 tests of pysock.httpx.

The pattern of tests/peers/real_servers.py: a session-scoped fixture starts one
nginx, a direct child of the test process (``daemon off`` and ``master_process
off``: one process, stopped by PID), on a free 127.0.0.1 port, in a temporary
directory that holds its configuration, certificate, logs and temp paths (the
default paths need root-owned folders). A missing nginx skips the tests, and
fails them under CI (.ci/run installs it).

nginx 1.22 (Debian 12) has no ``http2 on;`` directive: ``listen ... ssl
http2`` offers h2 by ALPN. The second port has no ``http2``, so it negotiates
``http/1.1`` only.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Iterator

import pytest
import trustme

from .real_servers import (
    ChildServer,
    accepts_connections,
    free_port,
    missing,
    start_child,
    write_certificates,
)

HOST: Final = "127.0.0.1"
# Debian installs nginx here; /usr/sbin is not on every user's PATH.
SEARCH_PATH: Final = "/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin"


@dataclass(frozen=True)
class Nginx:
    """A running nginx: `h2_port` offers h2 and http/1.1 by ALPN, `h1_port` http/1.1 only."""

    server: ChildServer
    h2_port: int
    h1_port: int

    def url(self, path: str = "/", *, http2: bool = True) -> str:
        return f"https://localhost:{self.h2_port if http2 else self.h1_port}{path}"


def nginx_config(directory: Path, h2_port: int, h1_port: int) -> str:
    """One process, everything inside `directory`; `/` answers with the protocol seen."""
    temp_paths = "".join(
        f"    {name}_temp_path {directory / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "daemon off;\n"
        "master_process off;\n"
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} warn;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"    access_log {directory / 'access.log'};\n"
        f"{temp_paths}"
        "    keepalive_requests 1000;\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        "    server {\n"
        f"        listen {HOST}:{h2_port} ssl http2;\n"
        f"        listen {HOST}:{h1_port} ssl;\n"
        f"        ssl_certificate {directory / 'server.pem'};\n"
        f"        ssl_certificate_key {directory / 'server.key'};\n"
        "        default_type text/plain;\n"
        '        location / { return 200 "$server_protocol $ssl_protocol $request_uri\\n"; }\n'
        "    }\n"
        "}\n"
    )


@pytest.fixture(scope="session")
def nginx(leaf: trustme.LeafCert) -> Iterator[Nginx]:
    """nginx on 127.0.0.1 with the session's trustme certificate (for localhost)."""
    binary = shutil.which("nginx", path=SEARCH_PATH)
    if binary is None:
        missing("nginx is not installed (apt-get install nginx)")
    tmp = Path(tempfile.mkdtemp(prefix="pysock-nginx-"))
    try:
        write_certificates(leaf, tmp)
        h1_ports: list[int] = []  # a fresh one for each start attempt, as for the h2 port

        def argv(port: int) -> list[str]:
            h1_ports.append(free_port(HOST))
            (tmp / "nginx.conf").write_text(nginx_config(tmp, port, h1_ports[-1]))
            return [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", "nginx.conf"]

        server = start_child("nginx", argv, HOST, tmp / "nginx.log", accepts_connections)
        try:
            yield Nginx(server, server.port, h1_ports[-1])
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
