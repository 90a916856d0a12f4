"""Real proxy servers on loopback: microsocks, Dante (danted) and tinyproxy, as child processes.

The same pattern as tests/peers/real_servers.py, whose helpers this module uses: each
session-scoped fixture starts one server, a direct child of the test process, on a
free 127.0.0.1 port (retrying on a port race), waits (bounded) until it answers,
and stops it at the end of the session. The server writes to a log file that only
the child holds open (`start_child` closes the parent's copy right after Popen), so
the per-test leak check sees no new descriptor; the log is quoted when a server
fails to start. A missing binary skips the test (`missing`), and fails it under CI.

Each server runs in a new session (start_new_session=True), so it and everything it
forks form one process group. danted forks about twenty helper processes (monitor,
negotiate, request and io children); `stop_group` signals the whole group, reaps the
leader, and fails the session if any member is still alive after a bounded wait.

Facts checked with the Debian 12 packages (dante-server 1.4.2, microsocks 1.0.3,
tinyproxy 1.11.1) are recorded in tests/test_proxy_servers.py, which talks to every
proxy with plain stdlib sockets.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Final, Iterator, Optional
from urllib.parse import quote

import pytest

from .real_servers import (
    PROBE_INTERVAL,
    PROBE_TIMEOUT,
    STOP_WAIT,
    ChildServer,
    accepts_connections,
    missing,
    start_child,
)

HOST: Final = "127.0.0.1"
USERNAME: Final = "user"
PASSWORD: Final = "pass"
# danted lives in /usr/sbin, which is not on every user's PATH.
SEARCH_PATH: Final = os.pathsep.join(
    [os.environ.get("PATH", os.defpath), "/usr/local/sbin", "/usr/sbin", "/sbin"]
)
# Room for the tests' concurrent tunnels; tinyproxy refuses clients beyond it.
TINYPROXY_MAX_CLIENTS: Final = 64


@dataclass(frozen=True)
class Proxy:
    """A running proxy, as the tests see it.

    `kind` is the protocol, the URL's scheme: "socks5" or "http". `program` names the
    server ("microsocks", "dante" or "tinyproxy"), whose error answers differ (see
    tests/test_proxy_servers.py).
    """

    url: str
    host: str
    port: int
    username: Optional[str]
    password: Optional[str]
    kind: str
    program: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def proxy_url(scheme: str, host: str, port: int, credentials: Optional[tuple[str, str]]) -> str:
    userinfo = ""
    if credentials is not None:
        userinfo = f"{quote(credentials[0], safe='')}:{quote(credentials[1], safe='')}@"
    return f"{scheme}://{userinfo}{host}:{port}"


def find_binary(name: str, package: str) -> str:
    """The program's path; a missing program skips the test (fails it under CI)."""
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        missing(f"{name} is not installed (apt-get install {package})")
    return path


# Readiness and stopping --------------------------------------------------------------


def socks5_answers(host: str, port: int) -> bool:
    """A SOCKS5 greeting gets a method selection (RFC 1928 §3); `05 FF` counts too."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"\x05\x01\x00")
            return sock.recv(2)[:1] == b"\x05"
    except OSError:
        return False


def group_members(pgid: int) -> dict[int, str]:
    """PID -> state letter (`Z` for a zombie) of every process in a process group."""
    members: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # The command name in parentheses may contain spaces: split after it.
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:
            members[int(entry)] = fields[0].decode()
    return members


def live_members(pgid: int) -> dict[int, str]:
    return {pid: state for pid, state in group_members(pgid).items() if state != "Z"}


def stop_group(server: ChildServer) -> None:
    """SIGTERM the server's process group, reap the leader, and wait (bounded) until
    no member is alive; fail if one still is then (after SIGKILLing the group).

    The leader is our child and reaped here. What it forked is reparented to PID 1
    when the leader exits and is left as a zombie until PID 1 reaps it (1-2 s on this
    machine; CI's init may be slower): dead, holding nothing, not ours to wait for.
    """
    pgid = server.process.pid  # start_new_session=True: the leader's PID names the group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    server.stop()  # reaps the leader; SIGKILLs it if it lingers
    deadline = time.monotonic() + STOP_WAIT
    alive = live_members(pgid)
    while alive and time.monotonic() < deadline:
        time.sleep(PROBE_INTERVAL)  # no event announces another process's exit
        alive = live_members(pgid)
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        pytest.fail(
            f"{server.name}: processes {alive} of group {pgid} outlived SIGTERM by "
            f"{STOP_WAIT} s (now SIGKILLed); log:\n{server.log_tail()}",
            pytrace=False,
        )


def start_proxy(
    program: str,
    argv_for: Callable[[Path, int], list[str]],
    ready: Callable[[str, int], bool],
    directory: Path,
) -> ChildServer:
    """Start a proxy on a free port, in its own process group, and wait until it answers.

    `argv_for(directory, port)` returns the command line and may write a config file
    for that port into the directory (it runs again for each start-up attempt). The
    directory is also the server's working directory and TMPDIR (danted creates its
    lock and shared-memory files there, and unlinks them at once), and holds the log.
    """
    return start_child(
        program,
        lambda port: argv_for(directory, port),
        HOST,
        directory / f"{program}.log",
        ready,
        popen_kwargs={
            "cwd": str(directory),
            "env": {**os.environ, "TMPDIR": str(directory)},
            "start_new_session": True,  # one process group with all it forks
        },
    )


@contextlib.contextmanager
def running_proxy(
    program: str,
    argv_for: Callable[[Path, int], list[str]],
    ready: Callable[[str, int], bool],
    kind: str,
    credentials: Optional[tuple[str, str]] = None,
) -> Iterator[Proxy]:
    """A proxy in a fresh temporary directory; its process group is stopped on exit."""
    tmp = Path(tempfile.mkdtemp(prefix=f"pysock-{program}-"))
    try:
        tmp.chmod(0o755)  # a server that drops privileges must still traverse it
        server = start_proxy(program, argv_for, ready, tmp)
        try:
            yield Proxy(
                url=proxy_url(kind, HOST, server.port, credentials),
                host=HOST,
                port=server.port,
                username=credentials[0] if credentials else None,
                password=credentials[1] if credentials else None,
                kind=kind,
                program=program,
            )
        finally:
            stop_group(server)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unprivileged_account() -> Optional[tuple[str, str]]:
    """(user, group) that a server started as root switches to; None when not root."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_name, grp.getgrgid(nobody.pw_gid).gr_name  # Debian: nobody/nogroup


# microsocks ----------------------------------------------------------------------------


def microsocks_argv(credentials: Optional[tuple[str, str]]) -> Callable[[Path, int], list[str]]:
    binary = find_binary("microsocks", "microsocks")
    # Never -1: it lets a client address that once logged in connect without a password.
    login = ["-u", credentials[0], "-P", credentials[1]] if credentials else []
    return lambda _tmp, port: [binary, "-i", HOST, "-p", str(port), *login]


@pytest.fixture(scope="session")
def socks5_proxy() -> Iterator[Proxy]:
    """microsocks, SOCKS5 without authentication: socks5://127.0.0.1:PORT."""
    with running_proxy("microsocks", microsocks_argv(None), socks5_answers, "socks5") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def socks5_auth_proxy() -> Iterator[Proxy]:
    """microsocks requiring RFC 1929 username/password: socks5://user:pass@127.0.0.1:PORT."""
    credentials = (USERNAME, PASSWORD)
    with running_proxy(
        "microsocks", microsocks_argv(credentials), socks5_answers, "socks5", credentials
    ) as proxy:
        yield proxy


# Dante ---------------------------------------------------------------------------------


def dante_config(port: int) -> str:
    """Dante 1.4: SOCKS5 without authentication from loopback to anywhere.

    Both external lines are needed: with only 127.0.0.1, a CONNECT to ::1 fails with
    REP 8 (address type not supported), or REP 4 when given as the name "::1".
    `0/0` matches IPv4 and IPv6 addresses alike (danted.conf(5), ADDRESSES).
    `log: connect` only: with `log: error` or `log: disconnect`, danted resets the
    client connection (RST) right after a "connection refused" reply instead of
    closing it.
    """
    account = unprivileged_account()
    if account is None:  # not root: danted can only stay the user it is
        privileged = unprivileged = pwd.getpwuid(os.geteuid()).pw_name
    else:
        privileged, unprivileged = "root", account[0]
    return (
        "logoutput: stderr\n"  # the log file start_child opened for the child
        f"internal: {HOST} port = {port}\n"
        "external: 127.0.0.1\n"
        "external: ::1\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        f"user.privileged: {privileged}\n"
        f"user.unprivileged: {unprivileged}\n"
        "client pass {\n  from: 127.0.0.0/8 to: 0/0\n  log: connect\n}\n"
        "client pass {\n  from: ::1/128 to: 0/0\n  log: connect\n}\n"
        "socks pass {\n  from: 127.0.0.0/8 to: 0/0\n  log: connect\n}\n"
        "socks pass {\n  from: ::1/128 to: 0/0\n  log: connect\n}\n"
    )


def dante_argv() -> Callable[[Path, int], list[str]]:
    binary = find_binary("danted", "dante-server")

    def argv(tmp: Path, port: int) -> list[str]:
        config = tmp / "danted.conf"
        config.write_text(dante_config(port))
        # No -D: danted stays in the foreground, our child. -p: not /var/run/danted.pid.
        return [binary, "-f", str(config), "-p", str(tmp / "danted.pid")]

    return argv


@pytest.fixture(scope="session")
def dante_proxy() -> Iterator[Proxy]:
    """danted, SOCKS5 without authentication, reaching 127.0.0.1 and ::1."""
    with running_proxy("dante", dante_argv(), socks5_answers, "socks5") as proxy:
        yield proxy


# tinyproxy -----------------------------------------------------------------------------


def tinyproxy_config(port: int, credentials: Optional[tuple[str, str]]) -> str:
    """tinyproxy 1.11 in the foreground, logging to stdout (the log file).

    No LogFile: tinyproxy opens it after switching to nobody, which cannot create a
    file in a directory that root owns. No ConnectPort line: CONNECT then reaches
    every port (tinyproxy.conf(5)); one line would restrict it to the listed ports.
    """
    account = unprivileged_account()
    lines = [
        f"Port {port}",
        f"Listen {HOST}",
        "Timeout 60",
        "LogLevel Connect",  # connections and errors, without Info's noise
        f"MaxClients {TINYPROXY_MAX_CLIENTS}",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
    ]
    if account is not None:
        lines += [f"User {account[0]}", f"Group {account[1]}"]
    if credentials is not None:
        lines.append(f"BasicAuth {credentials[0]} {credentials[1]}")
    return "".join(line + "\n" for line in lines)


def tinyproxy_argv(credentials: Optional[tuple[str, str]]) -> Callable[[Path, int], list[str]]:
    binary = find_binary("tinyproxy", "tinyproxy")

    def argv(tmp: Path, port: int) -> list[str]:
        config = tmp / "tinyproxy.conf"
        config.write_text(tinyproxy_config(port, credentials))
        return [binary, "-d", "-c", str(config)]  # -d: do not daemonize

    return argv


@pytest.fixture(scope="session")
def http_proxy() -> Iterator[Proxy]:
    """tinyproxy without authentication: http://127.0.0.1:PORT."""
    with running_proxy("tinyproxy", tinyproxy_argv(None), accepts_connections, "http") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def http_auth_proxy() -> Iterator[Proxy]:
    """tinyproxy with `BasicAuth user pass`: http://user:pass@127.0.0.1:PORT."""
    credentials = (USERNAME, PASSWORD)
    with running_proxy(
        "tinyproxy", tinyproxy_argv(credentials), accepts_connections, "http", credentials
    ) as proxy:
        yield proxy
