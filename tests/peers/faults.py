"""Peers that misbehave on cue, and the harness of the fault tests (tests/test_faults_*.py).

The faults: peer reset, peer FIN (with allow_half_open False and True), a peer
that stops reading, one that stops writing, a server that never speaks, a full
accept backlog, garbage instead of a ServerHello, truncated TLS records,
close_notify in the middle of a record stream, and a fast sender with a slow
reader. The points: before open, mid-handshake, mid-read (a thread blocked in a
read), mid-write (a thread blocked in a write on full buffers) and idle (no
thread in the socket, `closed` fed by the selector thread).

Each test asserts the error class (docs/errors.md: named by who caused the
failure), that its message names host:port, that ``closed`` completes with
that error (or None for a clean end) within a bounded wait, and that every
blocked thread wakes. The autouse ``no_leaks`` fixture checks descriptors and
threads. Where the docs do not say which error a fault gives, a comment says
what was chosen and why.

A test's server handler turns the accepted stdlib socket into a `Channel`:
plain TCP, or TLS through an `ssl.SSLObject` over memory BIOs (`TlsChannel`),
so that the test decides exactly which ciphertext bytes reach the wire and
when: a record cut in half, close_notify followed by more bytes, a TCP FIN
without close_notify, a reset. `Transport` pairs a channel kind with the
matching client options, so one test body runs over TCP, TLS 1.2 and TLS 1.3.

`Call` runs one blocking pysock call in a thread, to check that it blocks and
that the fault wakes it. Every wait here is bounded. The `transport` and `tls`
fixtures give each test its transports; a test module imports them.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
from typing import Callable, Final, Generic, Optional, TypeVar

import pytest
import trustme
from typing_extensions import Unpack

from pysock import Socket, SocketOptions, connect

from ..helpers import WAKE, drain, reset, same_error
from .tcp import PEER_TIMEOUT, Server
from .tls import client_context, server_context

_T = TypeVar("_T")

# How long a call must stay blocked to count as blocked: it has nothing to do,
# so it would end within milliseconds if it were not.
BLOCKED: Final = 0.1
MiB: Final = 1024 * 1024
# Far more than the kernel buffers of a peer that does not read can hold (its
# receive buffer does not grow while it does not read; our send buffer is at most
# tcp_wmem's 4 MiB), so a write of this size blocks.
BIG_WRITE: Final = 16 * MiB
# Short timeouts for the faults that are timeouts: long enough to see the thread
# block first, short enough to keep the suite fast. Tests that use one on a socket
# that opens give `connect_timeout=WAKE` and wait for the open first, so that a
# slow handshake on a loaded machine is never mistaken for the fault.
SHORT: Final = 0.2
# A connect deadline that is the fault: far enough to see the calls waiting for
# the open block first, even on a loaded machine.
CONNECT_DEADLINE: Final = 0.5
VERSIONS: Final = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


def join_peers(server: Server) -> None:
    """Wait for every peer to end by itself (`Server.stop()` would cut them off)."""
    for thread in list(server._threads):
        thread.join(WAKE)
        assert not thread.is_alive(), "a peer did not finish"


def wait(event: threading.Event) -> None:
    """A peer waits for its cue from the test; a test that failed first never gives it."""
    if not event.wait(PEER_TIMEOUT):
        raise AssertionError("the test never gave the peer its cue")


class Channel:
    """The server's end of one plain TCP connection."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def recv(self, size: int = 65536) -> bytes:
        return self.conn.recv(size)

    def recv_all(self) -> bytes:
        """Application bytes until the client's (clean) end."""
        chunks: list[bytes] = []
        while True:
            data = self.recv()
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def end(self) -> None:
        """End our direction cleanly: FIN (TLS sends close_notify first)."""
        self.conn.shutdown(socket.SHUT_WR)

    def fin(self) -> None:
        """A bare TCP FIN (over TLS: without close_notify, a truncation)."""
        self.conn.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        reset(self.conn)

    def drain(self) -> int:
        return drain(self.conn)


class TlsChannel(Channel):
    """The server's end of a TLS connection, over memory BIOs.

    `records()` encrypts without sending, so a test can cut, reorder or
    follow the ciphertext with anything it likes.
    """

    def __init__(self, conn: socket.socket, context: ssl.SSLContext) -> None:
        super().__init__(conn)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self._plain = b""  # Decrypted before our close_notify, not yet returned by recv().
        self._client_closed = False  # The client's close_notify came with those records.

    def _receive(self) -> None:
        data = self.conn.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def _flush(self) -> None:
        if self.outgoing.pending:
            self.conn.sendall(self.outgoing.read())

    def first_flight(self) -> bytes:
        """Read the ClientHello and return our answer to it, unsent."""
        while True:
            try:
                self.sslobj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            if self.outgoing.pending:
                return self.outgoing.read()
            self._receive()

    def handshake(self) -> None:
        while True:
            try:
                self.sslobj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                self._receive()
                continue
            self._flush()  # Our Finished (TLS 1.2) or session tickets (TLS 1.3).
            return

    def records(self, data: bytes) -> bytes:
        """Encrypt `data` into records and return them, unsent."""
        self.sslobj.write(data)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """Our close_notify alert, unsent.

        ``unwrap()`` calls SSL_shutdown twice, and the second call reads the
        records already received (an error for application data): decrypt them
        first, as pysock does; over TLS 1.3 they stay readable after our
        close_notify.
        """
        while not self._client_closed:
            try:
                data = self.sslobj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                data = b""
            if not data:
                self._client_closed = True
            self._plain += data
        try:
            self.sslobj.unwrap()
        except ssl.SSLError:
            pass  # SSLWantReadError: ours is sent; the client's is not awaited.
        return self.outgoing.read()

    def send(self, data: bytes) -> None:
        self.conn.sendall(self.records(data))

    def recv(self, size: int = 65536) -> bytes:
        if self._plain or self._client_closed:
            data, self._plain = self._plain[:size], self._plain[size:]
            return data
        while True:
            try:
                return self.sslobj.read(size)
            except ssl.SSLWantReadError:
                self._flush()
                self._receive()
            except ssl.SSLZeroReturnError:
                return b""

    def end(self) -> None:
        self.conn.sendall(self.close_notify())
        self.conn.shutdown(socket.SHUT_WR)


@dataclasses.dataclass(frozen=True)
class Transport:
    """Plain TCP, or TLS of one version: the client's options and the server's channel."""

    name: str
    server_context: Optional[ssl.SSLContext] = None
    client_context: Optional[ssl.SSLContext] = None

    @property
    def tls(self) -> bool:
        return self.server_context is not None

    def channel(self, conn: socket.socket) -> Channel:
        """The server's end of an accepted connection (TLS: after the handshake)."""
        if self.server_context is None:
            return Channel(conn)
        return self.tls_channel(conn)

    def tls_channel(self, conn: socket.socket, handshake: bool = True) -> TlsChannel:
        """A TLS channel, after its handshake or (to break the handshake) before it."""
        assert self.server_context is not None, "a TLS transport only"
        channel = TlsChannel(conn, self.server_context)
        if handshake:
            channel.handshake()
        return channel

    def connect(self, address: str, **options: Unpack[SocketOptions]) -> Socket:
        """`pysock.connect()` with this transport's options added."""
        if self.client_context is not None:
            options["secure_transport"] = "on"
            options["tls_context"] = self.client_context
        return connect(address, options)

    def __str__(self) -> str:
        return self.name


class Call(Generic[_T]):
    """One blocking call in its own thread: check that it blocks, then how it ended."""

    def __init__(self, function: Callable[[], _T], name: str = "call") -> None:
        self._function = function
        self.result: Optional[_T] = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=f"fault-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._function()
        except BaseException as exc:  # Examined by the test, in its own thread.
            self.error = exc

    def assert_blocked(self, seconds: float = BLOCKED) -> None:
        self.thread.join(seconds)
        assert self.thread.is_alive(), f"should block, ended with {self.error!r}"

    def finish(self) -> Optional[BaseException]:
        """Wait (bounded) for the call to end; return what it raised, if anything."""
        self.thread.join(WAKE)
        assert not self.thread.is_alive(), "the blocked call was never woken"
        return self.error

    def raised(self, kind: type[BaseException]) -> BaseException:
        error = self.finish()
        assert isinstance(error, kind), f"expected {kind.__name__}, got {error!r}"
        return error

    def returned(self) -> _T:
        error = self.finish()
        assert error is None, f"expected a result, got {error!r}"
        return self.result  # type: ignore[return-value]


# -- the transports of a test ---------------------------------------------------------

# One Transport per name for the session: the contexts are never modified, and the
# client's (system CAs, then ours) takes tens of milliseconds to build.
_transports: dict[str, Transport] = {}


def _transport(name: str, ca: trustme.CA, leaf: trustme.LeafCert) -> Transport:
    if name not in _transports:
        if name == "tcp":
            _transports[name] = Transport(name)
        else:
            server = server_context(leaf, VERSIONS[name])
            _transports[name] = Transport(name, server, client_context(ca))
    return _transports[name]


@pytest.fixture(params=["tcp", "tls1.2", "tls1.3"])
def transport(request: pytest.FixtureRequest, ca: trustme.CA, leaf: trustme.LeafCert) -> Transport:
    return _transport(request.param, ca, leaf)


@pytest.fixture(params=["tls1.2", "tls1.3"])
def tls(request: pytest.FixtureRequest, ca: trustme.CA, leaf: trustme.LeafCert) -> Transport:
    return _transport(request.param, ca, leaf)


def raises_same(call: Callable[[], object], error: BaseException) -> None:
    """`call` raises exactly `error` (every read and write raises the error that failed it)."""
    with pytest.raises(type(error)) as info:
        call()
    assert same_error(info.value, error)
