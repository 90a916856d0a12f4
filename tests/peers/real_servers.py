"""Real servers for the STARTTLS tests: PostgreSQL 15 and aiosmtpd, as child processes.

Session-scoped fixtures start each server once, as a direct child of the test
process, on a free loopback port; they wait (bounded) until it answers and
stop it by PID at the end of the session. Output goes to a log file in the
server's temporary directory (never a pipe: the test process keeps no
descriptor for a server), and the log is quoted when a server fails to start.

A missing server binary skips the tests that need it with a clear reason,
except when the environment variable CI is set: there it fails them, since CI
installs every server (.ci/run) and must never skip silently.

The tests request these fixtures as parameters, so pytest sets them up (session
scope first) before the per-test `no_leaks` check takes its snapshot.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Optional

import pytest
import trustme

PG_BIN = Path(os.environ.get("PYSOCK_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_DEADLINE = 20.0  # seconds for a server to start answering
PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0  # each probe connection's blocking calls
STOP_WAIT = 10.0
STARTUP_ATTEMPTS = 3  # a free port can be taken between the probe and the server's bind


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Skip the test for a missing server; fail it under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_certificates(leaf: trustme.LeafCert, directory: Path) -> tuple[Path, Path]:
    """Write the server's certificate chain and key (0600) to `directory`."""
    cert, key = directory / "server.pem", directory / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.touch(mode=0o600)
    key.write_bytes(leaf.private_key_pem.bytes())
    key.chmod(0o600)
    return cert, key


class ChildServer:
    """A server process started by the test process, stopped by PID."""

    def __init__(
        self, name: str, process: subprocess.Popen[bytes], host: str, port: int, log: Path
    ) -> None:
        self.name = name
        self.process = process
        self.host = host
        self.port = port
        self.log = log

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, stop_signal: signal.Signals = signal.SIGTERM) -> None:
        """Signal the process, wait for it (bounded), kill it if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(stop_signal)
            try:
                self.process.wait(STOP_WAIT)
                return
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(STOP_WAIT)


def start_child(
    name: str,
    argv_for_port: Callable[[int], list[str]],
    host: str,
    log: Path,
    ready: Callable[[str, int], bool],
    stop_signal: signal.Signals = signal.SIGTERM,
    popen_kwargs: Optional[dict[str, Any]] = None,
) -> ChildServer:
    """Start a server on a free port and wait until `ready(host, port)` is true."""
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        port = free_port(host)
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv_for_port(port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **(popen_kwargs or {}),
            )
        server = ChildServer(name, process, host, port, log)
        try:
            if _wait_until_ready(server, ready):
                return server
        except BaseException:
            server.stop(stop_signal)
            raise
        server.stop(stop_signal)  # it exited before answering: maybe the port was taken
        if attempt == STARTUP_ATTEMPTS:
            pytest.fail(
                f"{name} exited before answering on {server.address} "
                f"(exit status {process.returncode}); log:\n{server.log_tail()}",
                pytrace=False,
            )
    raise AssertionError("unreachable")


def _wait_until_ready(server: ChildServer, ready: Callable[[str, int], bool]) -> bool:
    """True once the server answers; False if it exited; fails at the deadline."""
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if ready(server.host, server.port):
            return True
        time.sleep(PROBE_INTERVAL)
    pytest.fail(
        f"{server.name} did not answer on {server.address} within {START_DEADLINE} s; "
        f"log:\n{server.log_tail()}",
        pytrace=False,
    )


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


# PostgreSQL ---------------------------------------------------------------------------

PG_STARTUP = b"user\0postgres\0database\0postgres\0\0"


def pg_startup_message() -> bytes:
    return struct.pack("!II", 8 + len(PG_STARTUP), 196608) + PG_STARTUP


def pg_accepts_sessions(host: str, port: int) -> bool:
    """A plaintext StartupMessage gets `R` (authentication), not `E` (still starting up)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(pg_startup_message())
            return sock.recv(1) == b"R"
    except OSError:
        return False


def _postgres_user() -> dict[str, Any]:
    """Popen arguments that run a command as `postgres` (which refuses to run as root).

    Popen(user=...) rather than `runuser`: runuser forks, and on SIGTERM it sleeps
    2 s, then SIGKILLs, and leaves the server a zombie of PID 1; with Popen the server
    itself is our child and stops by PID at once.
    """
    if os.geteuid() != 0:
        return {}  # a developer's own account: run as that user
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        missing("PostgreSQL 15 is installed but there is no 'postgres' user to run it")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _give_to(path: Path, as_user: dict[str, Any]) -> None:
    if as_user:
        os.chown(path, as_user["user"], as_user["group"])


@pytest.fixture(scope="session")
def postgres(leaf: trustme.LeafCert) -> Iterator[ChildServer]:
    """PostgreSQL 15 on 127.0.0.1 with `ssl = on` (in postgresql.conf, so that
    ALTER SYSTEM can turn it off), trust authentication, user and database `postgres`."""
    for tool in ("initdb", "postgres"):
        if not (PG_BIN / tool).is_file():
            missing(
                f"PostgreSQL 15 is not installed: {PG_BIN / tool} is missing "
                "(apt-get install postgresql-15)"
            )
    as_user = _postgres_user()
    tmp = Path(tempfile.mkdtemp(prefix="pysock-pg-"))
    try:
        tmp.chmod(0o755)  # the server's user must traverse it
        home = tmp / "pg"
        home.mkdir(mode=0o700)
        _give_to(home, as_user)
        data, log = home / "data", tmp / "postgres.log"
        with log.open("ab") as out:
            initdb = subprocess.run(
                [
                    str(PG_BIN / "initdb"),
                    *("-D", str(data), "-A", "trust", "-U", "postgres"),
                    *("--no-sync", "-E", "UTF8", "--no-locale"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
                **as_user,
            )
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed ({initdb.returncode}):\n{log.read_text()}", pytrace=False)
        cert, key = write_certificates(leaf, home)
        for path in (cert, key):
            _give_to(path, as_user)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "ssl = on\n"
                f"ssl_cert_file = '{cert}'\n"
                f"ssl_key_file = '{key}'\n"
                "fsync = off\n"
            )
        server = start_child(
            "PostgreSQL",
            lambda port: [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port)],
            "127.0.0.1",
            log,
            pg_accepts_sessions,
            stop_signal=signal.SIGINT,  # fast shutdown: does not wait for sessions
            popen_kwargs={"cwd": str(home), **as_user},
        )
        try:
            yield server
        finally:
            server.stop(signal.SIGINT)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# SMTP (aiosmtpd) ----------------------------------------------------------------------


@pytest.fixture(scope="session", params=["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def smtp_server(request: pytest.FixtureRequest, leaf: trustme.LeafCert) -> Iterator[ChildServer]:
    """aiosmtpd with STARTTLS required before MAIL, discarding every message."""
    host: str = request.param
    if importlib.util.find_spec("aiosmtpd") is None:
        missing("aiosmtpd is not installed (pip install -e '.[test]')")
    if ":" in host and not ipv6_loopback_works():
        pytest.skip("IPv6 loopback ::1 is not available on this machine")
    tmp = Path(tempfile.mkdtemp(prefix="pysock-smtp-"))
    try:
        cert, key = write_certificates(leaf, tmp)
        server = start_child(
            f"aiosmtpd on {host}",
            lambda port: [
                *(sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{host}:{port}"),
                *("--tlscert", str(cert), "--tlskey", str(key), "-c", "aiosmtpd.handlers.Sink"),
            ],
            host,
            tmp / "aiosmtpd.log",
            accepts_connections,
            popen_kwargs={"cwd": str(tmp)},
        )
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
