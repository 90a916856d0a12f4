"""A model of the connection engine, checked by a Hypothesis state machine over loopback.

Each run opens one pysock socket to 127.0.0.1 and accepts it on a listening
socket the test holds: the test itself is the peer, in the test's thread, so every
peer action (a send, a half-close, a reset, a TLS handshake) happens at a known
point between two client actions. The rules drive both ends, and a small model
(`Model`) predicts each outcome: the bytes every read returns, the error every
call raises, and the state the connection is in after every step.

What the model cannot predict is when the selector thread notices a peer's FIN
or reset, so no rule sleeps and hopes. After a peer action the rule waits,
bounded, until the peer's kernel holds no unacknowledged byte (``SIOCOUTQ`` is
0, and it counts the FIN too): pysock's kernel then holds all of it. Where the
model says that the peer's action ends the connection, the rule then waits for
``closed``, bounded. Every check after that holds at once.

The state is observed at every write, not sampled between steps: the test puts
a recording descriptor (`RecordingSlot`) in place of ``Connection.state``, so a
transition the selector thread makes and that is followed by another one
before the next step is checked too.

A ``"starttls"`` run may upgrade, at once or at a later step: the peer then
does its side of the handshake (trustme certificates, TLS 1.3), and the same
rules go on over TLS against the new socket, while the old one must stay
UPGRADED with its streams refusing.

Left out: fork() (tests/test_process*.py cover it in child processes; forking
the test runner per example would be neither fast nor quiet); TLS 1.2 (where
writable.close() cannot half-close).
"""

from __future__ import annotations

import dataclasses
import fcntl
import socket
import ssl
import struct
import sys
import termios
import threading
import weakref
from typing import Any, Callable, ClassVar, Final, Optional

import pytest
import trustme
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pysock import (
    BrokenSocketError,
    IncompleteReadError,
    Socket,
    SocketClosedError,
    SocketTimeout,
    StartTlsError,
    connect,
)
from pysock._connection import Connection
from pysock._state import TERMINAL, TRANSITIONS, Descriptor, Event, State, next_state

from .helpers import WAKE, recv_exactly, reset, wait_until
from .peers.tls import client_context, server_context

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the delivery barrier asks the kernel with Linux's SIOCOUTQ and SIOCINQ",
)

# Every (from, to) pair the state table allows, whatever the event.
EDGES: Final = frozenset((old, new) for (old, _), new in TRANSITIONS.items())
# Per-call timeouts the rules set: None (a blocking socket and the C fast path),
# one far below any wait that has to happen (the bytes a read needs are in the
# kernel before it starts, so even 10 ms never expires), and one for a slow machine.
TIMEOUTS: Final = (None, 0.01, WAKE)
# A timeout that has to expire: nothing is on its way.
SHORT: Final = 0.02
# At most this much per peer send, and in all: the client's receive buffer
# (net.ipv4.tcp_rmem's 128 KiB to start with) holds it all, unread, so the
# delivery barrier never waits for a client that does not read.
MAX_CHUNK: Final = 2000
SEND_BUDGET: Final = 32 * 1024
# A write of this much, repeated, fills the loopback buffers: the peer's receive
# buffer is made small (`PEER_RCVBUF`) and the client's send buffer grows to
# net.ipv4.tcp_wmem's 4 MiB at most, so a handful of writes fit, far fewer than 64.
FLOOD_CHUNK: Final = 1024 * 1024
FLOOD_WRITES: Final = 64
PEER_RCVBUF: Final = 64 * 1024
# The word a socket's repr() shows for a state; every other state (an end that
# is not a break) shows "closed". A BROKEN socket here was open first: "broken".
WORDS: Final = {State.CONNECTING: "connecting", State.OPEN: "open", State.BROKEN: "broken"}


# -- the state log --------------------------------------------------------------------


class StateLog:
    """Every state written to each connection, in order (see `RecordingSlot`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: weakref.WeakKeyDictionary[Connection, list[State]] = (
            weakref.WeakKeyDictionary()
        )

    def record(self, connection: Connection, state: State) -> None:
        with self._lock:
            self._writes.setdefault(connection, []).append(state)

    def writes(self, connection: Connection) -> list[State]:
        with self._lock:
            return list(self._writes.get(connection, ()))


class RecordingSlot:
    """A data descriptor in place of the ``state`` slot of `Connection`: logs each write.

    After ``__init__`` (the first write, before any other thread knows the
    connection), both writers of the state (``_transition`` and ``_opened``)
    hold the connection's lock while they write, so the log's order is the
    order of the writes, whichever thread made them.
    """

    def __init__(self, slot: Any, log: StateLog) -> None:
        self._slot = slot
        self._log = log

    def __get__(self, connection: Optional[Connection], owner: Optional[type] = None) -> Any:
        if connection is None:
            return self
        return self._slot.__get__(connection, owner)

    def __set__(self, connection: Connection, state: State) -> None:
        self._slot.__set__(connection, state)
        self._log.record(connection, state)


# -- the peer's kernel ----------------------------------------------------------------


def _ioctl_int(sock: socket.socket, request: int) -> int:
    answer = fcntl.ioctl(sock.fileno(), request, struct.pack("i", 0))
    return int(struct.unpack("i", answer)[0])


def unacknowledged(sock: socket.socket) -> int:
    """SIOCOUTQ: bytes (and a FIN) sent on `sock` that the other end has not acknowledged."""
    return _ioctl_int(sock, termios.TIOCOUTQ)


def receivable(sock: socket.socket) -> int:
    """SIOCINQ: bytes waiting in `sock`'s receive queue (a FIN not counted)."""
    return _ioctl_int(sock, termios.FIONREAD)


def expect_end(peer: socket.socket, may_reset: bool) -> None:
    """The peer reads the client's end: EOF (over TLS, close_notify), or a reset if allowed.

    A client that closes its descriptor with bytes unread resets the connection
    instead of ending it; only then is `may_reset` true.
    """
    try:
        data = peer.recv(1)
    except ssl.SSLZeroReturnError:  # close_notify, when our own went out first.
        return
    except (ConnectionResetError, ssl.SSLError) as exc:
        assert may_reset, f"the peer saw {exc!r}, not the client's EOF"
        return
    assert data == b"", f"the peer read {data!r} where the client's EOF belongs"


def peer_tls_half_close(tls: ssl.SSLSocket) -> None:
    """Send close_notify without waiting for the client's, then FIN; reading goes on."""
    tls.settimeout(0)
    try:
        tls.unwrap()
    except ssl.SSLWantReadError:
        pass  # close_notify is out; the client's is not awaited.
    tls.settimeout(WAKE)
    # SSLSocket.shutdown() would drop the TLS layer that the peer still reads through.
    socket.socket.shutdown(tls, socket.SHUT_WR)


# -- the model ------------------------------------------------------------------------


@dataclasses.dataclass
class Model:
    """What the test knows about the socket it drives."""

    allow_half_open: bool = False
    transport: str = "off"
    state: State = State.CONNECTING
    timeout: Optional[float] = None
    tls: bool = False  # start_tls() upgraded the connection: the peer speaks TLS 1.3.
    # Bytes the peer sent that no read returned yet, in order.
    pending: bytes = b""
    sent: int = 0  # Bytes the peer sent in all (`SEND_BUDGET`).
    peer_fin: bool = False  # The peer half-closed (over TLS: close_notify, then FIN).
    peer_gone: bool = False  # The peer reset the connection (or was never accepted).
    broken: bool = False  # The connection entered BROKEN.
    dirty: bool = False  # The peer holds bytes of a timed-out write, unread.
    reader_closed: bool = False  # readable.close(), close(), or a refused start_tls().
    writer_closed: bool = False  # writable.close(), close(), or a refused start_tls().
    closed_by_us: bool = False  # close(): both streams closed by the client's code.
    released: bool = False  # pysock closed the descriptor.

    @property
    def end(self) -> str:
        """What a read finds once `pending` is used up: "more" may come, "eof" or "broken"."""
        if self.broken:
            return "broken"
        return "eof" if self.peer_fin else "more"

    @property
    def readable(self) -> bool:
        return not self.reader_closed

    @property
    def write_error(self) -> Optional[type]:
        """What a write raises, or None when it goes through."""
        if self.writer_closed:
            return SocketClosedError
        if self.broken or (self.peer_fin and not self.allow_half_open):
            # allow_half_open=False closed the write side when the peer's EOF came.
            return BrokenSocketError
        return None

    def fire(self, event: Event) -> None:
        """The engine's `event` happened: the state moves as the table says, if it applies."""
        self.state = next_state(self.state, event) or self.state

    def consume(self, data: bytes) -> None:
        assert self.pending.startswith(data), (
            f"read {data!r}, but the peer's next bytes are {self.pending[: len(data) + 8]!r}"
        )
        self.pending = self.pending[len(data) :]


def _partial(exc: Optional[BaseException]) -> bytes:
    return bytes(getattr(exc, "partial", b""))


def _call(read: Callable[[], Any]) -> tuple[Any, Optional[BaseException]]:
    try:
        return read(), None
    except Exception as exc:  # An unexpected class fails the check that follows.
        return None, exc


# -- the machine -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TlsPair:
    server: ssl.SSLContext
    client: ssl.SSLContext


class EngineMachine(RuleBasedStateMachine):
    """One pysock socket against the test as its peer; see the module docstring."""

    # Set by the test, for each run: the state log, and the TLS contexts of both ends.
    log: ClassVar[StateLog]
    contexts: ClassVar[TlsPair]

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.listener: Optional[socket.socket] = None
        self.peer: Optional[socket.socket] = None
        self._sock: Optional[Socket] = None
        self.upgraded_from: Optional[Socket] = None  # The socket start_tls() took over.
        self.upgraded: Optional[State] = None  # And the state it must stay in.
        self.refused = False  # start_tls_refused ran.
        self.address = ""

    # -- access ---------------------------------------------------------------------

    @property
    def sock(self) -> Socket:
        assert self._sock is not None
        return self._sock

    @property
    def connection(self) -> Connection:
        return self.sock._connection

    def peer_socket(self) -> socket.socket:
        assert self.peer is not None
        return self.peer

    def sockets(self) -> list[Socket]:
        return [s for s in (self.upgraded_from, self._sock) if s is not None]

    def wait_delivered(self) -> None:
        """Until pysock's kernel has acknowledged all the peer sent, its FIN included."""
        peer = self.peer_socket()
        wait_until(lambda: unacknowledged(peer) == 0, "the peer's bytes to reach the client")

    def wait_closed(self, broken: bool) -> None:
        """The connection ends (FAIL if `broken`, else FINISHED): wait for ``closed``.

        The selector thread may be the one to end it, after the rule's last call.
        """
        error = self.sock.closed.exception(WAKE)
        if broken:
            assert isinstance(error, BrokenSocketError), repr(error)
            self.model.fire(Event.FAIL)
            self.model.broken = True
        else:
            assert error is None, repr(error)
            self.model.fire(Event.FINISHED)
            self.model.released = self.model.released or self.model.reader_closed

    def peer_sees_end(self) -> None:
        if self.peer is not None and not self.model.dirty:
            expect_end(self.peer, may_reset=self.model.released)

    # -- opening --------------------------------------------------------------------

    @initialize(
        allow_half_open=st.booleans(),
        transport=st.sampled_from(("off", "starttls")),
        timeout=st.sampled_from(TIMEOUTS),
        close_at_once=st.integers(0, 7).map(lambda n: n == 3),  # About one run in 8.
        upgrade_at_once=st.booleans(),  # For "starttls": most runs would never get to TLS.
    )
    def open(
        self,
        allow_half_open: bool,
        transport: str,
        timeout: Optional[float],
        close_at_once: bool,
        upgrade_at_once: bool,
    ) -> None:
        listener = self.listener = socket.socket()
        # Small, so that a flood of writes fills the connection (`FLOOD_CHUNK`).
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PEER_RCVBUF)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(WAKE)
        self.address = f"127.0.0.1:{listener.getsockname()[1]}"
        extra: dict[str, Any] = {}
        if transport == "starttls":
            extra["tls_context"] = self.contexts.client
        self._sock = connect(
            self.address,
            allow_half_open=allow_half_open,
            secure_transport=transport,  # type: ignore[arg-type]
            timeout=timeout,
            connect_timeout=WAKE,
            **extra,
        )
        self.model = Model(allow_half_open=allow_half_open, transport=transport, timeout=timeout)
        if transport == "off":
            _, error = _call(self.sock.start_tls)  # Refused, and nothing changes.
            assert isinstance(error, StartTlsError), repr(error)
        if close_at_once:
            # Abandoned while connecting, or just after: either way CLOSED, and no peer.
            self.sock.close()
            self.model.fire(Event.CLOSE)
            self.model.reader_closed = self.model.writer_closed = True
            self.model.closed_by_us = self.model.released = self.model.peer_gone = True
            return
        self.sock.opened.result(WAKE)
        self.peer, _ = listener.accept()
        self.peer.settimeout(WAKE)
        self.model.fire(Event.OPENED)
        if transport == "starttls" and upgrade_at_once:
            self.upgrade()

    def teardown(self) -> None:
        for sock in self.sockets():
            sock.close()
        if self.peer is not None:
            self.peer.close()
        if self.listener is not None:
            self.listener.close()

    # -- the peer -------------------------------------------------------------------

    def may_send(self) -> bool:
        model = self.model
        if model.peer_gone or model.peer_fin or model.broken or model.released:
            return False
        return model.sent + MAX_CHUNK <= SEND_BUDGET

    def send(self, data: bytes) -> None:
        self.peer_socket().sendall(data)
        self.model.sent += len(data)
        self.wait_delivered()
        if self.model.readable:
            self.model.pending += data

    @precondition(may_send)
    @rule(data=st.binary(max_size=MAX_CHUNK))
    def peer_sends(self, data: bytes) -> None:
        self.send(data)

    @precondition(may_send)
    @rule(lines=st.lists(st.one_of(st.binary(max_size=60), st.just(b"\n")), max_size=32))
    def peer_sends_lines(self, lines: list[bytes]) -> None:
        self.send(b"".join(lines))

    def may_half_close(self) -> bool:
        model = self.model
        return not (model.peer_gone or model.peer_fin or model.released or model.dirty)

    # Both ways to end in one rule, so that the peer ends a run no more often than
    # any one kind of read continues it.
    @precondition(may_half_close)
    @rule(how=st.sampled_from(("half-close", "reset")))
    def peer_ends(self, how: str) -> None:
        if how == "reset":
            self.peer_resets()
        else:
            self.peer_half_closes()

    @precondition(lambda self: not (self.model.peer_gone or self.may_half_close()))
    @rule()
    def peer_resets_at_last(self) -> None:
        self.peer_resets()

    def peer_half_closes(self) -> None:
        peer = self.peer_socket()
        if self.model.tls:
            assert isinstance(peer, ssl.SSLSocket)
            peer_tls_half_close(peer)
        else:
            peer.shutdown(socket.SHUT_WR)
        self.wait_delivered()
        model = self.model
        model.peer_fin = True
        if model.state is State.OPEN and (not model.allow_half_open or model.writer_closed):
            # Both directions are done now: the selector thread finishes the connection.
            self.wait_closed(broken=False)
            if not model.allow_half_open:
                self.peer_sees_end()  # pysock closed its write side in answer.

    def peer_resets(self) -> None:
        reset(self.peer_socket())
        self.peer = None
        self.model.peer_gone = True
        if self.model.state is State.OPEN:
            self.wait_closed(broken=True)

    # -- reads ----------------------------------------------------------------------

    def check_failed_read(
        self, error: Optional[BaseException], kind: type, partial: bytes
    ) -> None:
        assert isinstance(error, kind), f"expected {kind.__name__}, got {error!r}"
        assert _partial(error) == partial, (_partial(error), partial)
        self.model.consume(partial)

    @precondition(
        lambda self: self.model.readable and (self.model.pending or self.model.end != "more")
    )
    @rule(size=st.integers(1, 3 * MAX_CHUNK))
    def read1(self, size: int) -> None:
        data, error = _call(lambda: self.sock.readable.read1(size))
        model = self.model
        if model.pending:
            assert error is None, repr(error)
            assert 1 <= len(data) <= size, (len(data), size)
            model.consume(data)
        elif model.end == "eof":
            assert (data, error) == (b"", None), (data, error)
        else:
            self.check_failed_read(error, BrokenSocketError, b"")

    def fit(self, size: int) -> int:
        """`size`, brought within what a read can get without waiting for the peer.

        Rules draw sizes from a fixed range whatever the model holds: a failing
        run is replayed draw for draw while it shrinks, and how much of the
        unread bytes one read1() returns may differ from run to run.
        """
        model = self.model
        return size % (len(model.pending) + (8 if model.end != "more" else 0) + 1)

    @precondition(lambda self: self.model.readable)
    @rule(n=st.integers(0, 2 * MAX_CHUNK))
    def readexactly(self, n: int) -> None:
        model = self.model
        size = self.fit(n)
        result, error = _call(lambda: self.sock.readable.readexactly(size))
        if size <= len(model.pending):
            assert error is None, repr(error)
            assert result == model.pending[:size]
            model.consume(result)
        elif model.end == "eof":
            self.check_failed_read(error, IncompleteReadError, model.pending)
            assert isinstance(error, IncompleteReadError) and error.expected == size
        else:
            self.check_failed_read(error, BrokenSocketError, model.pending)

    @precondition(lambda self: self.model.readable)
    @rule(limit=st.integers(-1, 2 * MAX_CHUNK))
    def readline(self, limit: int) -> None:
        model = self.model
        newline = model.pending.find(b"\n")
        if newline < 0 and model.end == "more":
            # The line's end has not arrived: only a limit within the bytes ends the call.
            limit = max(limit, 0) % (len(model.pending) + 1)
        result, error = _call(lambda: self.sock.readable.readline(limit))
        if newline >= 0:
            want = newline + 1 if limit < 0 else min(newline + 1, limit)
        elif 0 <= limit <= len(model.pending) or model.end == "eof":
            want = len(model.pending) if limit < 0 else min(limit, len(model.pending))
        else:
            self.check_failed_read(error, BrokenSocketError, model.pending)
            return
        assert error is None, repr(error)
        assert result == model.pending[:want], (result, model.pending[:want])
        model.consume(result)

    @precondition(
        lambda self: (
            self.model.readable and (b"\n" in self.model.pending or self.model.end != "more")
        )
    )
    @rule()
    def readuntil(self) -> None:
        model = self.model
        newline = model.pending.find(b"\n")
        result, error = _call(lambda: self.sock.readable.readuntil(b"\n"))
        if newline >= 0:
            assert error is None, repr(error)
            assert result == model.pending[: newline + 1]
            model.consume(result)
        elif model.end == "eof":
            self.check_failed_read(error, IncompleteReadError, model.pending)
        else:
            self.check_failed_read(error, BrokenSocketError, model.pending)

    @precondition(lambda self: self.model.readable and self.model.end != "more")
    @rule()
    def read_to_the_end(self) -> None:
        model = self.model
        result, error = _call(self.sock.readable.read)
        if model.end == "eof":
            assert error is None, repr(error)
            assert result == model.pending
            model.consume(result)
        else:
            self.check_failed_read(error, BrokenSocketError, model.pending)

    @precondition(lambda self: self.model.readable)
    @rule(n=st.integers(0, 2 * MAX_CHUNK))
    def readinto(self, n: int) -> None:
        model = self.model
        size = self.fit(n)
        buffer = bytearray(size)
        count, error = _call(lambda: self.sock.readable.readinto(buffer))
        if size <= len(model.pending) or model.end == "eof":
            assert error is None, repr(error)
            assert bytes(buffer[:count]) == model.pending[:size]
            model.consume(bytes(buffer[:count]))
        else:
            self.check_failed_read(error, BrokenSocketError, model.pending)

    @precondition(lambda self: self.model.readable and self.model.end == "more")
    @rule(call=st.sampled_from(("readexactly", "read1", "readline")))
    def read_times_out(self, call: str) -> None:
        """Read what has come (for read1, all of it; for readline, its lines), then
        one call more: it waits for bytes the peer never sends, and times out."""
        model = self.model
        reader = self.sock.readable
        first = 0 if call == "readexactly" else len(model.pending)
        if call == "readline":
            first = model.pending.rfind(b"\n") + 1
        assert reader.readexactly(first) == model.pending[:first]
        model.consume(model.pending[:first])
        self.sock.timeout = model.timeout = SHORT
        calls: dict[str, Callable[[], Any]] = {
            "readexactly": lambda: reader.readexactly(len(model.pending) + 1),
            "read1": lambda: reader.read1(100),
            "readline": reader.readline,
        }
        _, error = _call(calls[call])
        assert isinstance(error, SocketTimeout), repr(error)
        # Gathered bytes may come back in .partial, or stay for the next read.
        model.consume(_partial(error))

    # -- writes ---------------------------------------------------------------------

    @rule(data=st.binary(max_size=MAX_CHUNK))
    def write(self, data: bytes) -> None:
        expected = self.model.write_error
        result, error = _call(lambda: self.sock.writable.write(data))
        if expected is not None:
            assert isinstance(error, expected), f"expected {expected.__name__}, got {error!r}"
            return
        assert error is None, repr(error)
        assert result == len(data)
        assert recv_exactly(self.peer_socket(), len(data)) == data

    # Bytes still in the kernel when a write breaks the connection stay readable
    # (plain TCP: `_read_after_break`; TLS: `_decrypt_after_break`).
    @precondition(lambda self: self.model.write_error is None and self.model.state is State.OPEN)
    @rule()
    def write_times_out(self) -> None:
        """A write the peer does not read times out, and breaks the socket."""
        chunk = bytes(FLOOD_CHUNK)
        self.sock.timeout = self.model.timeout = SHORT
        for _ in range(FLOOD_WRITES):
            _, error = _call(lambda: self.sock.writable.write(chunk))
            if error is not None:
                break
        assert isinstance(error, SocketTimeout), repr(error)
        # An unknown amount was sent: the connection broke, in this thread.
        assert isinstance(self.sock.closed.exception(0), BrokenSocketError)
        self.model.fire(Event.FAIL)
        self.model.broken = self.model.dirty = True

    # -- closing --------------------------------------------------------------------

    # The three closes in one rule, so that the client ends a run no more often
    # than any one kind of read continues it. A side closed already is closed
    # again: nothing may change then.
    @precondition(lambda self: not self.model.closed_by_us)
    @rule(which=st.sampled_from(("writable", "readable", "socket")))
    def client_closes(self, which: str) -> None:
        if which == "writable":
            self.close_the_writable_side()
        elif which == "readable":
            self.close_the_readable_side()
        else:
            self.close()

    def close_the_writable_side(self) -> None:
        model = self.model
        again = model.writer_closed
        self.sock.writable.close()
        self.sock.writable.close()  # Idempotent.
        model.writer_closed = True
        if again:
            return
        if model.state is State.OPEN:
            if model.reader_closed:
                # Both directions are done, in this thread: the end is at once.
                assert self.sock.closed.done()
                self.wait_closed(broken=False)
            elif model.peer_fin:
                # The selector thread may see the peer's EOF only now.
                self.wait_closed(broken=False)
        if not model.peer_gone:
            self.peer_sees_end()

    def close_the_readable_side(self) -> None:
        model = self.model
        again = model.reader_closed
        self.sock.readable.close()
        self.sock.readable.close()  # Idempotent.
        model.reader_closed, model.pending = True, b""
        if again:
            return
        if model.state is State.OPEN and model.writer_closed:
            assert self.sock.closed.done()
            self.wait_closed(broken=False)

    def close(self) -> None:
        model = self.model
        self.sock.close()
        assert self.sock.closed.done(), "closed is not done when close() returns"
        self.sock.close()  # Idempotent: the invariants check that nothing changed.
        model.fire(Event.CLOSE)
        model.reader_closed = model.writer_closed = model.closed_by_us = True
        model.pending = b""
        if not model.released:
            model.released = True
            self.peer_sees_end()

    @rule(timeout=st.sampled_from(TIMEOUTS))
    def set_timeout(self, timeout: Optional[float]) -> None:
        if self.model.tls and timeout is None:
            timeout = WAKE  # TLS reads are checked with a deadline only (see start_tls).
        self.sock.timeout = self.model.timeout = timeout

    # -- STARTTLS ---------------------------------------------------------------------

    def upgradable(self) -> bool:
        model = self.model
        return (
            model.transport == "starttls"
            and not model.tls
            and model.state is State.OPEN
            and not (model.peer_fin or model.reader_closed or model.writer_closed)
        )

    @precondition(upgradable)
    @rule()
    def start_tls(self) -> None:
        self.upgrade()

    def upgrade(self) -> None:
        """Read the peer's go-ahead (whatever came so far), then upgrade."""
        old = self.sock
        assert old.readable.readexactly(len(self.model.pending)) == self.model.pending
        self.model.pending = b""
        new = old.start_tls()
        self.upgraded_from, self._sock = old, new
        self.peer = self.contexts.server.wrap_socket(self.peer_socket(), server_side=True)
        assert new.opened.exception(WAKE) is None
        assert old.upgraded and old.closed.exception(0) is None
        assert new.secure_transport == "on" and not new.upgraded
        _, error = _call(old.start_tls)  # Twice.
        assert isinstance(error, StartTlsError), repr(error)
        _, error = _call(new.start_tls)  # Already TLS.
        assert isinstance(error, StartTlsError), repr(error)
        # The plaintext phase's model carries over; only the timeout may change:
        # a TLS read with none would block on a lost record instead of failing.
        if self.model.timeout is None:
            new.timeout = WAKE
        self.upgraded = next_state(State.OPEN, Event.UPGRADE)
        self.model = dataclasses.replace(
            self.model,
            tls=True,
            transport="on",
            timeout=new.timeout,
            state=State.CONNECTING,
        )
        self.model.fire(Event.OPENED)  # A new connection, open once its handshake is done.

    def refusal_is_known(self) -> bool:
        """start_tls() must refuse, and the model knows why (see `start_tls_refused`).

        Each run tries a refusal that leaves the socket as it was once only: more
        would crowd out the rules that move it on.
        """
        model = self.model
        if model.transport != "starttls" or model.tls or model.closed_by_us or self.refused:
            return False
        if model.state is not State.OPEN:
            return True
        if model.peer_fin and not model.writer_closed and not model.reader_closed:
            # Refused as half-closed if the selector thread has seen the FIN, else
            # not: the take-over would go ahead and the handshake meet the EOF.
            return False
        return not self.upgradable() or bool(model.pending)

    @precondition(refusal_is_known)
    @rule()
    def start_tls_refused(self) -> None:
        """Refused: not open, half-closed, or plaintext waiting unread."""
        model = self.model
        unread = self.upgradable() and bool(model.pending)
        _, error = _call(self.sock.start_tls)
        assert isinstance(error, StartTlsError), repr(error)
        assert not self.sock.upgraded
        self.refused = True
        if unread:
            # Bytes the peer sent after its go-ahead could be injected (CVE-2011-0411):
            # refused, and the connection closed.
            assert "waiting unread" in str(error), str(error)
            model.fire(Event.CLOSE)
            model.reader_closed = model.writer_closed = model.closed_by_us = True
            model.released, model.pending = True, b""
            self.peer_sees_end()

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def states_follow_the_table(self) -> None:
        for sock in self.sockets():
            connection = sock._connection
            writes = self.log.writes(connection)
            assert writes and writes[0] is State.CONNECTING, writes
            for old, new in zip(writes, writes[1:]):
                # A write of the same state again is no move.
                assert old is new or (old, new) in EDGES, f"{old} -> {new}: {writes}"
                # An end is never undone (the table may let one end become another:
                # close() after a clean end).
                assert old not in TERMINAL or new in TERMINAL, f"{old} left: {writes}"
            assert connection.state is writes[-1]
        assert self.connection.state is self.model.state, (
            self.connection.state,
            self.model.state,
        )
        if self.upgraded_from is not None:
            assert self.upgraded_from._connection.state is self.upgraded

    @invariant()
    def the_descriptor_is_given_back_once(self) -> None:
        """`Descriptor`: held until the model releases it; given back by close() at once."""
        connection = self.connection
        with connection._lock:  # Stepped under it, maybe by the selector thread.
            held = connection._descriptor
        if not self.model.released:
            assert held is Descriptor.HELD, held
        if self.model.closed_by_us:
            assert held in (Descriptor.RELEASING, Descriptor.LAST_OUT), held
        if self.upgraded_from is not None:
            assert self.upgraded_from._connection._descriptor is Descriptor.HANDED_OFF

    @invariant()
    def futures_agree_with_the_state(self) -> None:
        for sock in self.sockets():
            state = sock._connection.state
            assert sock.closed.done() == (state in TERMINAL), (state, sock.closed)
            assert sock.opened.done() == (state is not State.CONNECTING), state
            if state is State.BROKEN:
                assert isinstance(sock.closed.exception(0), BrokenSocketError)
            elif state in TERMINAL:
                assert sock.closed.exception(0) is None

    @invariant()
    def reprs_show_the_state(self) -> None:
        model = self.model
        word = WORDS.get(model.state, "closed")
        assert repr(self.sock) == f"<pysock.Socket {self.address} {model.transport} {word}>"
        reader = "closed" if model.reader_closed else word
        writer = "closed" if model.writer_closed else word
        assert repr(self.sock.readable) == f"<pysock.SocketReader {self.address} {reader}>"
        assert repr(self.sock.writable) == f"<pysock.SocketWriter {self.address} {writer}>"
        if self.upgraded_from is not None:
            assert repr(self.upgraded_from) == f"<pysock.Socket {self.address} starttls closed>"
        assert self.sock.timeout == model.timeout

    @invariant()
    def closed_sides_refuse(self) -> None:
        """Reads after readable.close() or close(), writes after writable.close() or close()."""
        socks = [self.sock] if self.upgraded_from is None else [self.sock, self.upgraded_from]
        for sock in socks:
            closed = sock is self.upgraded_from
            if closed or self.model.reader_closed:
                reader = sock.readable
                for read in (reader.read1, reader.readexactly, reader.readline, reader.read):
                    _, error = _call(lambda: read(1))  # noqa: B023
                    assert isinstance(error, SocketClosedError), repr(error)
            expected = SocketClosedError if closed else self.model.write_error
            result, error = _call(lambda: sock.writable.write(b""))  # noqa: B023
            if expected is None:
                assert (result, error) == (0, None), (result, error)
            else:
                assert isinstance(error, expected), f"expected {expected.__name__}: {error!r}"

    @invariant()
    def no_byte_lost_or_invented(self) -> None:
        """Every byte the peer sent and no read returned is in pysock's buffer or its kernel."""
        model = self.model
        sock = self.connection.sock
        if model.tls or model.reader_closed or sock is None:
            return  # Over TLS the kernel holds records, not bytes.
        buffered = self.sock.readable._unread()
        assert buffered is not None
        assert model.pending.startswith(buffered), (buffered, model.pending)
        assert len(buffered) + receivable(sock) == len(model.pending)


# -- the test ---------------------------------------------------------------------------

# derandomize, database and print_blob come from the profile (tests/conftest.py).
SETTINGS: Final = settings(
    max_examples=100,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_engine_follows_its_model(
    monkeypatch: pytest.MonkeyPatch, ca: trustme.CA, leaf: trustme.LeafCert
) -> None:
    state_log = StateLog()
    monkeypatch.setattr(
        Connection, "state", RecordingSlot(Connection.__dict__["state"], state_log)
    )

    class Machine(EngineMachine):
        log = state_log
        contexts = TlsPair(server_context(leaf, ssl.TLSVersion.TLSv1_3), client_context(ca))

    run_state_machine_as_test(Machine, settings=SETTINGS)
