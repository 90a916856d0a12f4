"""The soak: random mixed traffic from many threads, reconciled at the end.

Run ``python -m tests.reliability.soak [--seconds 600] [--threads 16] [--seed N]``
(``make soak``). Each worker thread loops until the time is up, picking an
operation and a transport at random:

transports
    ``off`` (plain TCP), ``on-1.2`` / ``on-1.3`` (TLS from the first byte,
    trustme CA), ``starttls-1.2`` / ``starttls-1.3`` (plaintext, the line
    ``STARTTLS``, the peer's go-ahead ``GO``, then `Socket.start_tls`, with
    the context given to ``connect()`` or to ``start_tls()``).
operations (the peer's side: `tests.reliability._load_peers.Header`)
    ``echo``: chunks written and read back in turn, then ``close()``;
    ``half_close``: writes running ahead of reads, ``writable.close()``, then
    the rest read to EOF (plain and TLS 1.3 only: TLS 1.2 cannot half-close);
    ``duplex``: a writer thread and a reader on one socket;
    ``download``: the peer sends and closes; read to EOF;
    ``close_read`` / ``close_write``: ``close()`` while another thread reads
    (writes): that thread must get `SocketClosedError`, ``closed`` None;
    ``reset_read`` / ``reset_write``: the peer resets mid-transfer: the read
    (write) must raise `BrokenSocketError`, and ``closed`` must fail with it.

Reads use a random method each time (read1, read, readexactly, readinto,
readline). Every byte that comes back is checked with sha256: echoes against
what was sent, downloads (and what arrived before a close or reset) against
the pattern both processes generate (`pattern_chunks`). At the end the
counts are reconciled with the peer's own (operations per kind, bytes echoed
and sent, connections per listener), and the descriptor and thread counts
must be back to the baseline (taken once the peer and the pysock-selector
thread are up). Any unexpected exception, checksum mismatch or count that
does not add up makes the exit status 1. The descriptor count, thread count
and peak RSS (VmHWM) are printed at the start, every 60 s and at the end.

The peer also watches the other side of a close: a download the client closed
mid-way must end the peer's send promptly (a reset, or a FIN it can see). A
send still blocked `STALL_TIMEOUT` seconds later (the client's last window
was zero and no RST came) is a failure too.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import gc
import hashlib
import os
import random
import ssl
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Final, Optional

import trustme

from pysock import (
    BrokenSocketError,
    IncompleteReadError,
    Socket,
    SocketClosedError,
    SocketReader,
    connect,
)

from ..peers.load import STALL_TIMEOUT, Header, PeerProcess, pattern_chunks
from ..peers.tls import client_context

# Each blocking call (connect, read, write, futures): generous for a loaded machine.
TIMEOUT: Final = 30.0
REPORT_EVERY: Final = 60.0
# After the time is up, operations in progress get this long to finish.
DRAIN: Final = 180.0
SLOW: Final = 20.0  # An operation slower than this is reported (not failed).
MAX_FAILURES: Final = 20  # Stop early after this many: the first ones tell the story.
MAX_SIZE_LOG2: Final = 22  # Transfers of 0 B .. 4 MiB, log-uniform.
HUGE: Final = 256 * 1024 * 1024  # A transfer that a close or a reset always cuts short.
CHUNKS: Final = (512, 4096, 16384, 32768)  # Write sizes; with LAGS, <= 64 KiB in flight.
MAX_WRITES: Final = 128  # Chunks grow for large transfers: bounded round trips per operation.
LAGS: Final = (1, 1024, 32768)  # How far a half-close echo's writes run ahead of its reads.

TRANSPORTS: Final = ("off", "on-1.2", "on-1.3", "starttls-1.2", "starttls-1.3")
# (operation, weight, transports it runs over)
OPERATIONS: Final = (
    ("echo", 3, TRANSPORTS),
    ("half_close", 2, ("off", "on-1.3", "starttls-1.3")),
    ("duplex", 2, TRANSPORTS),
    ("download", 3, TRANSPORTS),
    ("close_read", 1, TRANSPORTS),
    ("close_write", 1, TRANSPORTS),
    ("reset_read", 1, TRANSPORTS),
    ("reset_write", 1, TRANSPORTS),
)
# The peer's header operation behind each client operation.
PEER_OP: Final = {
    "echo": "ECHO",
    "half_close": "ECHO",
    "duplex": "ECHO",
    "download": "SEND",
    "close_read": "SENDX",
    "close_write": "SINK",
    "reset_read": "RSTS",
    "reset_write": "RSTR",
}


class Failure(AssertionError):
    """An outcome pysock's docs do not allow (wrong bytes, wrong error, wrong result)."""


# -- bookkeeping ---------------------------------------------------------------------------


class Ledger:
    """Counts kept by every worker, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = collections.Counter[str]()
        self.failures: list[str] = []
        self.slow: list[str] = []

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def note(self, into: list[str], what: str) -> None:
        with self.lock:
            into.append(what)


def snapshot(label: str, ledger: Optional[Ledger] = None) -> dict[str, int]:
    """Print and return the process's descriptor and thread counts and memory."""
    gc.collect()
    info = {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tasks": len(os.listdir("/proc/self/task")),
    }
    with open("/proc/self/status") as file:
        for line in file:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                info[key] = int(value.split()[0])
    ops = f" ops {ledger.counts['ops']}" if ledger is not None else ""
    print(
        f"[{label:>9}] fds {info['fds']} threads {info['threads']} (tasks {info['tasks']}) "
        f"VmRSS {info['VmRSS'] / 1024:.0f} MiB VmHWM {info['VmHWM'] / 1024:.0f} MiB{ops}",
        flush=True,
    )
    return info


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


# -- the run -----------------------------------------------------------------------------


class Soak:
    """The shared state of a run: the peer, the TLS contexts, the ledger."""

    def __init__(
        self,
        peer: PeerProcess,
        contexts: dict[str, ssl.SSLContext],
        only: Optional[list[str]] = None,
    ) -> None:
        self.operations = [entry for entry in OPERATIONS if only is None or entry[0] in only]
        self.peer = peer
        self.contexts = contexts
        self.ledger = Ledger()
        self.stop = threading.Event()

    def run_op(
        self, op: str, transport: str, rng: random.Random, size: Optional[int] = None
    ) -> None:
        ledger = self.ledger
        ledger.add("ops")
        ledger.add(f"op {op} started")
        ledger.add(f"transport {transport}")
        operation = Operation(self, op, transport, rng)
        began = time.monotonic()
        try:
            operation.run(size)
        except Exception:
            ledger.note(ledger.failures, f"{op} over {transport}:\n{traceback.format_exc()}")
            if len(ledger.failures) >= MAX_FAILURES:
                self.stop.set()
        else:
            ledger.add(f"outcome {op} {operation.outcome}")
            for key, n in operation.counts.items():
                ledger.add(key, n)
        took = time.monotonic() - began
        if took > SLOW:
            ledger.note(ledger.slow, f"{op} over {transport} took {took:.1f} s")

    def worker(self, seed: int, deadline: float) -> None:
        rng = random.Random(seed)
        names = [name for name, _, _ in self.operations]
        weights = [weight for _, weight, _ in self.operations]
        transports = {name: allowed for name, _, allowed in self.operations}
        while time.monotonic() < deadline and not self.stop.is_set():
            op = rng.choices(names, weights)[0]
            self.run_op(op, rng.choice(transports[op]), rng)


def start_peer(lifetime: float) -> tuple[PeerProcess, dict[str, ssl.SSLContext]]:
    """The soak peer in its own process, with a fresh trustme CA and a leaf for 127.0.0.1."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "leaf.pem")
        leaf.private_key_and_cert_chain_pem.write_to_path(path)
        peer = PeerProcess("soak", lifetime, path)  # Loaded before it answers.
    contexts = {}
    for name, version in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
        context = client_context(ca)
        context.minimum_version = context.maximum_version = version
        contexts[name] = context
    return peer, contexts


def drive(soak: Soak, seconds: float, threads: int, seed: int) -> list[str]:
    """Run the workers, printing a snapshot every REPORT_EVERY; return the stuck ones."""
    start = time.monotonic()
    deadline, give_up = start + seconds, start + seconds + DRAIN
    workers = [
        threading.Thread(
            target=soak.worker, args=(seed * 1000 + i, deadline), name=f"soak-{i}", daemon=True
        )
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    next_report = start + REPORT_EVERY
    for worker in workers:
        while worker.is_alive() and time.monotonic() < give_up:
            worker.join(max(0.0, min(next_report, give_up) - time.monotonic()))
            if time.monotonic() >= next_report:
                snapshot(f"{next_report - start:.0f} s", soak.ledger)
                next_report += REPORT_EVERY
    stuck = [worker.name for worker in workers if worker.is_alive()]
    if stuck:
        soak.stop.set()
        faulthandler.dump_traceback(all_threads=True)
    return stuck


def settle(baseline: dict[str, int]) -> dict[str, int]:
    """The end snapshot, once descriptors handed to the loop are closed (bounded wait)."""
    for _ in range(50):
        gc.collect()
        fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
        if (fds, threads) == (baseline["fds"], baseline["threads"]):
            break
        time.sleep(0.1)
    return snapshot("end")


def reconcile(
    soak: Soak, peer: dict[str, Any], stuck: list[str], snapshots: list[dict[str, int]]
) -> list[str]:
    """Every way the counts fail to add up, as messages (empty: all reconciled)."""
    c, failures = soak.ledger.counts, soak.ledger.failures
    problems = [f"{len(failures)} operations failed"] if failures else []
    if stuck:
        problems.append(f"threads still running: {stuck}")
    for op, _, _ in OPERATIONS:
        ended = sum(n for key, n in c.items() if key.startswith(f"outcome {op} "))
        failed = sum(1 for failure in failures if failure.startswith(f"{op} "))
        if c[f"op {op} started"] != ended + failed:
            problems.append(f"{op}: {c[f'op {op} started']} started, {ended + failed} ended")
    for peer_op in Header.OPS:
        ours = sum(c[f"op {op} started"] for op, theirs in PEER_OP.items() if theirs == peer_op)
        if peer.get(f"op {peer_op}", 0) != ours:
            problems.append(f"the peer saw {peer.get(f'op {peer_op}', 0)} {peer_op}, not {ours}")
    for kind in ("off", "on", "starttls"):
        if peer.get(f"accepted {kind}", 0) != c[f"connect {kind}"]:
            problems.append(f"the peer accepted {peer.get(f'accepted {kind}', 0)} {kind}")
    pairs = (
        ("echo written/checked", c["bytes echo written"], c["bytes echo checked"]),
        ("echo checked/peer echoed", c["bytes echo checked"], peer.get("bytes ECHO", 0)),
        ("download checked/peer sent", c["bytes download checked"], peer.get("bytes SEND", 0)),
        ("reset_write/peer", c["bytes reset_write announced"], peer.get("bytes RSTR", 0)),
    )
    problems += [f"bytes {what}: {a} != {b}" for what, a, b in pairs if a != b and not failures]
    clean = ("error ECHO", "error SEND ", "error handshake", "error RSTS", "error RSTR")
    problems += [f"peer: {key} x{peer[key]}" for key in peer if key.startswith(clean)]
    stalls = sum(n for key, n in peer.items() if key.startswith("error SENDX Timeout"))
    if stalls:
        problems.append(f"{stalls} peer sends still blocked {STALL_TIMEOUT} s after close()")
    if peer.get("unexpected") or peer.get("stuck"):
        problems.append(f"peer: unexpected {peer.get('unexpected')}, stuck {peer.get('stuck')}")
    start, baseline, end = snapshots
    if (end["fds"], end["threads"]) != (baseline["fds"], baseline["threads"]):
        problems.append(
            f"fds/threads at the end {end['fds']}/{end['threads']}, "
            f"at the baseline {baseline['fds']}/{baseline['threads']}"
        )
    if baseline["threads"] != start["threads"] + 1:
        problems.append("threads other than pysock-selector started before the baseline")
    return problems


def report(soak: Soak, peer: dict[str, Any], seconds: float) -> None:
    c, ledger = soak.ledger.counts, soak.ledger
    print(f"\n{c['ops']} operations in {seconds:.0f} s")
    for op, _, _ in OPERATIONS:
        outcomes = {k.split(" ", 2)[2]: n for k, n in c.items() if k.startswith(f"outcome {op} ")}
        print(f"  {op:<12} started {c[f'op {op} started']:>7}  {outcomes}")
    print("  transports: " + ", ".join(f"{t} {c[f'transport {t}']}" for t in TRANSPORTS))
    for key in sorted(k for k in c if k.startswith("bytes ")):
        print(f"  {key:<32} {c[key]:>15,}")
    shown = {k: v for k, v in peer.items() if k not in ("unexpected", "samples")}
    print(f"  peer: {shown}")
    for key, sample in sorted(peer.get("samples", {}).items()):
        print(f"  peer {key}: {sample}")
    for slow in ledger.slow[:MAX_FAILURES]:
        print(f"SLOW {slow}")
    for failure in ledger.failures[:MAX_FAILURES]:
        print(f"FAILURE {failure}")
    for text in peer.get("unexpected") or []:
        print(f"PEER FAILURE {text}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ops", default="", help="comma-separated operations (default: all)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"soak: {args.seconds:.0f} s, {args.threads} threads, seed {seed}", flush=True)
    start = snapshot("start")
    peer, contexts = start_peer(args.seconds + DRAIN + 600)
    with peer:
        soak = Soak(peer, contexts, args.ops.split(",") if args.ops else None)
        for transport in TRANSPORTS:  # Warm-up: starts the pysock-selector thread.
            soak.run_op("echo", transport, random.Random(seed), size=0)
        baseline = snapshot("baseline", soak.ledger)
        began = time.monotonic()
        stuck = drive(soak, args.seconds, args.threads, seed)
        elapsed = time.monotonic() - began
        end = settle(baseline)
        peer_stats = peer.stop(DRAIN)
    report(soak, peer_stats, elapsed)
    problems = reconcile(soak, peer_stats, stuck, [start, baseline, end])
    for problem in problems:
        print(f"NOT RECONCILED: {problem}")
    print("reconciled: " + ("NO" if problems else "yes"), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
