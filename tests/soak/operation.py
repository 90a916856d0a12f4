"""One soak operation: a connection through one operation, every byte checked."""

from __future__ import annotations

import collections
import hashlib
import random
import ssl
import threading
from typing import TYPE_CHECKING, Any, Callable, Final, Optional

from pysock import (
    BrokenSocketError,
    IncompleteReadError,
    Socket,
    SocketClosedError,
    SocketReader,
    connect,
)

from ..peers.load import Header, pattern_chunks
from .plan import CHUNKS, HUGE, LAGS, MAX_SIZE_LOG2, MAX_WRITES, PEER_OP, TIMEOUT, Failure

if TYPE_CHECKING:
    from .run import Soak

# -- reading and data helpers ----------------------------------------------------------------

_READERS: Final = ("read1", "read", "readexactly", "readinto", "readline")


def read_some(reader: SocketReader, n: int, rng: random.Random) -> bytes:
    """One call of a random read method, for at most `n` bytes (b"" only at EOF)."""
    how = rng.choice(_READERS)
    if how == "read1":
        return reader.read1(n)
    if how == "read":
        return reader.read(n)
    if how == "readexactly":
        try:
            return reader.readexactly(n)
        except IncompleteReadError as exc:
            return exc.partial  # The caller's next read meets the EOF itself.
    if how == "readinto":
        buffer = bytearray(n)
        return bytes(buffer[: reader.readinto(buffer)])
    return reader.readline(n)


def read_to_eof(
    reader: SocketReader, rng: random.Random, digest: Any, progress: list[int]
) -> None:
    """Read until EOF, hashing and counting into ``progress[0]``."""
    while True:
        data = read_some(reader, rng.choice((4096, 65536)), rng)
        if not data:
            return
        digest.update(data)
        progress[0] += len(data)


def read_exactly(reader: SocketReader, n: int, rng: random.Random, digest: Any) -> None:
    """Read `n` bytes with random methods, hashing; EOF first is a `Failure`."""
    got = 0
    while got < n:
        data = read_some(reader, n - got, rng)
        if not data:
            raise Failure(f"EOF after {got} of {n} bytes")
        digest.update(data)
        got += len(data)


def pattern_digest(offset: int, size: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern_chunks(offset, size):
        digest.update(chunk)
    return digest.hexdigest()


def random_size(rng: random.Random) -> int:
    if rng.random() < 0.05:
        return 0
    return int(2 ** rng.uniform(0, MAX_SIZE_LOG2))


class Helper(threading.Thread):
    """A second thread on one socket (a writer, or a reader to be cut off); keeps its error."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.work = target
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:
            self.error = exc

    def finish(self, sock: Socket) -> None:
        """Join (bounded); a helper still blocked after 2 * TIMEOUT is a failure."""
        self.join(TIMEOUT * 2)
        if self.is_alive():
            sock.close()
            self.join(TIMEOUT)
            raise Failure(f"{self.name} still blocked after {TIMEOUT * 2} s")


# -- one operation -------------------------------------------------------------------------


class Operation:
    """One connection through one operation; raises `Failure` on a broken promise.

    On success `outcome` names how it ended: ``ok``, or the expected error
    class of a fault operation.
    """

    def __init__(self, soak: Soak, op: str, transport: str, rng: random.Random) -> None:
        self.soak = soak
        self.op = op
        self.transport = transport
        self.rng = rng
        self.sockets: list[Socket] = []
        self.outcome = "ok"
        self.counts = collections.Counter[str]()  # Added to the ledger on success.

    def run(self, size: Optional[int] = None) -> None:
        try:
            sock = self.open()
            getattr(self, self.op)(sock, random_size(self.rng) if size is None else size)
        finally:
            for sock in self.sockets:
                sock.close()

    # -- opening and checking ------------------------------------------------------------

    def open(self) -> Socket:
        kind, _, version = self.transport.partition("-")
        address = self.soak.peer.address(kind)
        self.soak.ledger.add(f"connect {kind}")
        context = self.soak.contexts.get(version)
        if kind == "off":
            sock = connect(address, timeout=TIMEOUT)
        elif kind == "on":
            sock = connect(address, secure_transport="on", tls_context=context, timeout=TIMEOUT)
        else:
            sock = self.open_starttls(address, self.soak.contexts[version])
        self.sockets.append(sock)
        sock.opened.result(TIMEOUT)
        if kind != "off":
            tls = sock.tls
            if tls is None or tls.version != f"TLSv{version}":
                raise Failure(f"{self.transport}: negotiated {tls}")
        return sock

    def open_starttls(self, address: str, context: ssl.SSLContext) -> Socket:
        early = self.rng.random() < 0.5  # The context given to connect() or to start_tls().
        if early:
            old = connect(
                address, secure_transport="starttls", tls_context=context, timeout=TIMEOUT
            )
        else:
            old = connect(address, secure_transport="starttls", timeout=TIMEOUT)
        self.sockets.append(old)
        old.writable.write(b"STARTTLS\n")
        go = old.readable.readline()
        if go != b"GO\n":
            raise Failure(f"starttls: go-ahead {go!r}")
        new = old.start_tls() if early else old.start_tls(tls_context=context)
        if not old.upgraded or new.secure_transport != "on":
            raise Failure(f"starttls: upgraded={old.upgraded} new={new.secure_transport}")
        if old.closed.result(TIMEOUT) is not None:
            raise Failure("starttls: the old socket's closed is not None")
        return new

    def header(self, sock: Socket, size: int = 0, offset: int = 0) -> None:
        sock.writable.write(Header.encode(PEER_OP[self.op], size, offset))

    def chunk(self, size: int) -> int:
        return max(self.rng.choice(CHUNKS), min(CHUNKS[-1], size // MAX_WRITES))

    def expect_error(self, error: BaseException, allowed: type[BaseException]) -> None:
        if not isinstance(error, allowed):
            raise Failure(f"{self.op}: expected {allowed.__name__}, got {error!r}") from error
        self.outcome = type(error).__name__

    def expect_closed(self, sock: Socket, error: Optional[type[BaseException]]) -> None:
        outcome = sock.closed.exception(TIMEOUT)
        if error is None and outcome is not None:
            raise Failure(f"{self.op}: closed failed with {outcome!r}") from outcome
        if error is not None and not isinstance(outcome, error):
            raise Failure(f"{self.op}: closed is {outcome!r}, not {error.__name__}")

    def check(self, what: str, expected: str, received: str, n: int, got: int) -> None:
        if (expected, n) != (received, got):
            match = expected == received
            raise Failure(f"{self.op} {what}: {got} of {n} bytes, checksum match {match}")

    # -- the operations ------------------------------------------------------------------

    def echo(self, sock: Socket, size: int) -> None:
        """Write a chunk, read it back, and so on; then close()."""
        sent, received = hashlib.sha256(), hashlib.sha256()
        self.header(sock)
        for piece in pattern_chunks(self.rng.randrange(1 << 30), size, self.chunk(size)):
            sock.writable.write(piece)
            sent.update(piece)
            read_exactly(sock.readable, len(piece), self.rng, received)
        sock.close()
        self.expect_closed(sock, None)
        self.check("echo", sent.hexdigest(), received.hexdigest(), size, size)
        self.counts.update({"bytes echo written": size, "bytes echo checked": size})

    def half_close(self, sock: Socket, size: int) -> None:
        """Writes run up to `lag` bytes ahead of reads; writable.close(); read the rest."""
        lag = self.rng.choice(LAGS)
        sent, received, got = hashlib.sha256(), hashlib.sha256(), [0]
        written = 0
        self.header(sock)
        for piece in pattern_chunks(self.rng.randrange(1 << 30), size, self.chunk(size)):
            sock.writable.write(piece)
            sent.update(piece)
            written += len(piece)
            if written - got[0] > lag:
                behind = written - got[0] - lag
                read_exactly(sock.readable, behind, self.rng, received)
                got[0] += behind
        sock.writable.close()
        read_to_eof(sock.readable, self.rng, received, got)
        self.expect_closed(sock, None)
        self.check("echo", sent.hexdigest(), received.hexdigest(), size, got[0])
        self.counts.update({"bytes echo written": size, "bytes echo checked": got[0]})

    def duplex(self, sock: Socket, size: int) -> None:
        """A writer thread writes everything while this thread reads it back."""
        offset, chunk = self.rng.randrange(1 << 30), self.chunk(size)
        half = not self.transport.endswith("1.2") and self.rng.random() < 0.5
        sent, received, got = hashlib.sha256(), hashlib.sha256(), [0]
        self.header(sock)

        def write_all() -> None:
            for piece in pattern_chunks(offset, size, chunk):
                sock.writable.write(piece)
                sent.update(piece)
            if half:
                sock.writable.close()

        writer = Helper(write_all, "soak-writer")
        writer.start()
        try:
            if half:
                read_to_eof(sock.readable, self.rng, received, got)
            else:
                read_exactly(sock.readable, size, self.rng, received)
                got[0] = size
        finally:
            writer.finish(sock)
        if writer.error is not None:
            raise Failure(f"duplex: the writer failed: {writer.error!r}") from writer.error
        sock.close()
        self.expect_closed(sock, None)
        self.check("echo", sent.hexdigest(), received.hexdigest(), size, got[0])
        self.counts.update({"bytes echo written": size, "bytes echo checked": got[0]})

    def download(self, sock: Socket, size: int) -> None:
        """The peer sends `size` bytes and closes; read to EOF."""
        offset = self.rng.randrange(1 << 30)
        self.header(sock, size, offset)
        received, got = hashlib.sha256(), [0]
        read_to_eof(sock.readable, self.rng, received, got)
        self.expect_closed(sock, None)
        self.check("download", pattern_digest(offset, size), received.hexdigest(), size, got[0])
        self.counts["bytes download checked"] += got[0]

    def close_read(self, sock: Socket, _size: int) -> None:
        """close() while a reader thread reads a download that never ends."""
        offset, threshold = self.rng.randrange(1 << 30), self.rng.randrange(1, 1 << 20)
        self.header(sock, HUGE, offset)
        received, got = hashlib.sha256(), [0]
        enough = threading.Event()

        def read_until_closed() -> None:
            while True:
                data = read_some(sock.readable, 65536, self.rng)
                if not data:
                    raise Failure(f"close_read: EOF after {got[0]} bytes")
                received.update(data)
                got[0] += len(data)
                if got[0] >= threshold:
                    enough.set()

        self.cut_off(sock, Helper(read_until_closed, "soak-reader"), enough)
        self.check("prefix", pattern_digest(offset, got[0]), received.hexdigest(), 0, 0)
        self.counts["bytes prefix checked"] += got[0]

    def close_write(self, sock: Socket, _size: int) -> None:
        """close() while a writer thread writes to a peer that reads everything."""
        threshold, written = self.rng.randrange(1, 4 << 20), [0]
        self.header(sock)
        enough = threading.Event()

        def write_until_closed() -> None:
            for piece in pattern_chunks(0, HUGE, self.rng.choice(CHUNKS)):
                sock.writable.write(piece)
                written[0] += len(piece)
                if written[0] >= threshold:
                    enough.set()
            raise Failure("close_write: all of HUGE written before the close")

        self.cut_off(sock, Helper(write_until_closed, "soak-writer"), enough)

    def cut_off(self, sock: Socket, helper: Helper, enough: threading.Event) -> None:
        """Run `helper`; close once it made progress; it must get SocketClosedError."""
        helper.start()
        progressed = enough.wait(TIMEOUT)
        sock.close()
        helper.finish(sock)
        if not progressed:
            raise Failure(f"{self.op}: no progress in {TIMEOUT} s: {helper.error!r}")
        if helper.error is None:
            raise Failure(f"{self.op}: the helper ended without an error")
        self.expect_error(helper.error, SocketClosedError)
        self.expect_closed(sock, None)

    def reset_read(self, sock: Socket, size: int) -> None:
        """The peer sends `size` bytes, then resets: reading must end in BrokenSocketError."""
        offset = self.rng.randrange(1 << 30)
        self.header(sock, size, offset)
        received, got = hashlib.sha256(), [0]
        try:
            read_to_eof(sock.readable, self.rng, received, got)
        except Exception as exc:
            self.expect_error(exc, BrokenSocketError)
        else:
            raise Failure(f"reset_read: a clean EOF after {got[0]} of {size} bytes, not a reset")
        self.expect_closed(sock, BrokenSocketError)
        if got[0] > size:
            raise Failure(f"reset_read: {got[0]} bytes of {size}")
        self.check("prefix", pattern_digest(offset, got[0]), received.hexdigest(), 0, 0)
        self.counts["bytes prefix checked"] += got[0]

    def reset_write(self, sock: Socket, size: int) -> None:
        """The peer reads `size` bytes, then resets: writing must end in BrokenSocketError."""
        size = min(size, 1 << 20)
        self.header(sock, size)
        written = 0
        try:
            for piece in pattern_chunks(0, size + HUGE, self.rng.choice(CHUNKS)):
                sock.writable.write(piece)
                written += len(piece)
        except Exception as exc:
            self.expect_error(exc, BrokenSocketError)
        else:
            raise Failure("reset_write: every write succeeded")
        if written < size:
            raise Failure(f"reset_write: failed after {written} bytes, before the peer's {size}")
        self.expect_closed(sock, BrokenSocketError)
        self.counts["bytes reset_write announced"] += size
